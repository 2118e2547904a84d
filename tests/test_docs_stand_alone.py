"""The project's docs and code stand alone and claim only what is built: no file sends a reader
outside the repository, and the architecture's description of the bus transport is the code's."""

from __future__ import annotations

import inspect
import re
import subprocess
from typing import get_args

import pytest

from daemons.runtime import transport
from daemons.runtime.config import BusSection
from tests.conftest import REPO

# Design notes and recordings that live outside the repository, and machine paths.
OUTSIDE = re.compile(r"\.\./shared|shared/fixtures|/work/|\b(?:DESIGN|BUS_PERF|SANDBOX|REVIEW|STYLE|GATEWAY|MULTIHOST)"
                     r"\.md|(?<![/(\[])\bKITE\.md")
LOCATOR = "tests/conformance/conftest.py"  # the one place that says where Kite's recordings are looked for
PLANNED = "## Planned (not built)"


def tracked_text_files() -> list[str]:
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout: no list of tracked files")
    names = subprocess.run(["git", "-c", "safe.directory=*", "ls-files"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    return [n for n in names if n.endswith((".py", ".md", ".toml", ".yml", ".yaml", ".j2", ".sh", ".service",
                                            ".socket", ".timer", ".target", ".txt", ".cfg"))]


def test_nothing_sends_a_reader_outside_the_repository() -> None:
    hits = [f"{name}:{n}: {line.strip()}"
            for name in tracked_text_files() if name not in (LOCATOR, "tests/test_docs_stand_alone.py")
            for n, line in enumerate((REPO / name).read_text(errors="replace").splitlines(), 1)
            if OUTSIDE.search(line)]
    assert not hits, "\n".join(hits)


def test_the_architecture_describes_only_the_transport_that_is_built() -> None:
    built, _ = (REPO / "docs" / "ARCHITECTURE.md").read_text().split(PLANNED)
    assert get_args(BusSection.model_fields["transport"].annotation) == ("unix",)
    named = set(re.findall(r"\b([A-Z]\w*Transport)\b", built))
    assert named and named <= set(vars(transport)), named - set(vars(transport))
    # Redis Streams carry the bridge between hosts (built: daemons/bridge/), never the bus transport
    outside_bridge = re.sub(r"\n## Bridge \(multi-host\).*?(?=\n## )", "", built, flags=re.S)
    assert "Redis Streams" not in outside_bridge and "Redis Streams" in built and (REPO / "daemons" / "bridge").is_dir()
    (paragraph,) = [p for p in built.split("\n\n") if "`BusClient` talks to a `Transport`" in p]
    source = inspect.getsource(transport.Transport)
    for name in re.findall(r"`(\w+)(?:\(\w*\))?`", paragraph):
        assert name in ("BusClient", "Transport", "UnixTransport", "transport", "unix") or name in source, name
    assert "Redis" not in (transport.__doc__ or "")
