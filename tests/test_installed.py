"""`algoctl units` from a wheel installed without the checkout (the Ansible role's venv, and
bootstrap.sh's for a checkout under /root or /home): every unit, for that venv, linking docs it has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from daemons.algoctl.units import KITE_UNITS, LIVE_DROPIN, UNIT_SUFFIXES, source_dir
from tests.conftest import REPO
from tests.installed import build_wheel, install_wheel


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scratch = tmp_path_factory.mktemp("wheel")
    return install_wheel(build_wheel(scratch), scratch / "venv")


def algoctl(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "algoctl"), *args], capture_output=True, text=True, timeout=60,
                          check=False, cwd=venv)


def test_the_installed_package_is_the_wheel_s(venv: Path) -> None:
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import daemons; print(daemons.__file__)"],
                           capture_output=True, text=True, check=True, cwd=venv).stdout  # not the checkout
    assert where.startswith(str(venv)), where


def test_algoctl_units_renders_every_unit_for_the_installed_venv(venv: Path, tmp_path: Path) -> None:
    done = algoctl(venv, "units", str(tmp_path / "units"))
    assert done.returncode == 0, done.stderr
    expected = sorted(p.name for p in source_dir().iterdir() if p.suffix in UNIT_SUFFIXES)
    assert sorted(Path(line).name for line in done.stdout.split()) == expected
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == expected  # no live drop-ins in paper mode
    for name in expected:
        text = (tmp_path / "units" / name).read_text()
        assert "/opt/algo/" not in text, name
        for program in re.findall(r"^ExecStart=(\S+)", text, re.M):
            assert program.startswith(f"{venv}/bin/") and Path(program).exists(), (name, program)
        for doc in re.findall(r"^Documentation=file:(\S+)", text, re.M):
            assert doc.startswith(str(venv)) and Path(doc).is_file(), (name, doc)


def test_algoctl_units_live_adds_the_kite_network_drop_in(venv: Path, tmp_path: Path) -> None:
    done = algoctl(venv, "units", str(tmp_path), "--live")
    assert done.returncode == 0, done.stderr
    dropins = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("*.d/*"))
    assert dropins == sorted(f"{unit}.d/{LIVE_DROPIN}" for unit in KITE_UNITS)
    assert all(p.read_text() == (source_dir() / LIVE_DROPIN).read_text() for p in tmp_path.glob("*.d/*"))


def test_the_installed_algoctl_migrates_and_seeds_the_control_plane_database(venv: Path, tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"  # the migrations are package data: without them the wheel cannot migrate
    config.write_text((REPO / "configs" / "paper.toml").read_text().replace(
        "sqlite:////var/lib/algo/control/control.db", f"sqlite:///{tmp_path}/control/control.db"))
    done = algoctl(venv, "config", "seed", "--config", str(config))
    assert done.returncode == 0 and "seeded 4 strategies" in done.stdout, done.stderr
    done = algoctl(venv, "config", "diff", "--config", str(config))
    assert (done.returncode, done.stdout) == (0, "no drift: the database's 4 strategies match fleet.toml\n"), done.stderr


def test_the_installed_nginx_config_serves_the_console_shipped_in_the_wheel(venv: Path, tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text((REPO / "configs" / "paper.toml").read_text())
    done = algoctl(venv, "gateway", "nginx-config", "--listen", "127.0.0.1:8443", "--cert", "/etc/algo/cert.pem",
                   "--key", "/etc/algo/key.pem", "--config", str(config))
    assert done.returncode == 0, done.stderr
    root = Path(re.findall(r"^\s*root (\S+);", done.stdout, re.M)[0])
    assert root.is_relative_to(venv) and {p.name for p in root.iterdir()} >= {"index.html", "console.js", "console.css"}
