"""The project stands alone: a clone with nothing beside it collects every test, runs the Kite
emulator on its own data, skips the Kite conformance tests with the reason (failing them under
CI=true), and its wheel carries the emulator's data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conformance.conftest import ENV
from tests.conftest import REPO
from tests.helpers import unavailable


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's HEAD cloned into an empty directory: nothing beside it, no untracked files."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        unavailable("standalone tests", f"{REPO} is not a git checkout (or git is missing): nothing to clone")
    dest = tmp_path_factory.mktemp("alone") / "algo-fleet"
    subprocess.run(["git", "-c", "safe.directory=*", "clone", "-q", str(REPO), str(dest)], check=True, timeout=120)
    return dest


def run(clone: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m ARGS`` inside the clone, without the recordings' variable or CI's."""
    base = {k: v for k, v in os.environ.items() if k not in (ENV, "CI", "PYTEST_ADDOPTS")}
    return subprocess.run([sys.executable, "-m", *args], cwd=clone, env=base | env | {"PYTHONDONTWRITEBYTECODE": "1"},
                          capture_output=True, text=True, timeout=300, check=False)


def test_a_clone_with_nothing_beside_it_collects_every_test(clone: Path) -> None:
    where = run(clone, "daemons.kite_emulator", "--help")
    assert where.returncode == 0, where.stderr
    done = run(clone, "pytest", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "error" not in done.stdout.splitlines()[-1]


def test_a_clone_runs_the_emulator_and_skips_the_conformance_tests_with_the_reason(clone: Path) -> None:
    done = run(clone, "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/kite_emulator/test_rest.py",
               "tests/conformance")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Kite's recorded responses are not in" in done.stdout and ENV in done.stdout
    under_ci = run(clone, "pytest", "-q", "-p", "no:cacheprovider", "tests/conformance/test_rest.py", CI="true")
    assert under_ci.returncode == 1 and "CI=true requires the Kite conformance tests to run" in under_ci.stdout


def test_the_wheel_carries_the_emulators_data(clone: Path, tmp_path: Path) -> None:
    built = run(clone, "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(clone))
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("algo_fleet-*.whl")
    data = sorted(p.relative_to(clone).as_posix() for p in (clone / "daemons" / "kite_emulator" / "data").iterdir())
    assert data and set(data) <= set(zipfile.ZipFile(wheel).namelist())
