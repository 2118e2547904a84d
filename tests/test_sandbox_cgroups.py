"""What a shared sandbox counts as its own cgroup directories, on a stand-in cgroup tree (no root needed): never
the subtree of a sandbox that runs in cgroups of its own, even one that starts while the tree is being walked."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemons.algoctl import sandbox
from tests.helpers import unavailable


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two hierarchies, each with a directory that was there before; the marks' directory empty."""
    root = tmp_path / "cgroup"
    for hierarchy in ("blkio", "memory"):
        (root / hierarchy / "system.slice").mkdir(parents=True)
    monkeypatch.setattr(sandbox, "CGROUP_ROOT", root)
    monkeypatch.setattr(sandbox, "OWN_CGROUPS", tmp_path / "own")
    (tmp_path / "own").mkdir()
    return root


def start_beside(tree: Path, name: str) -> None:
    """What ``Sandbox._own_cgroup`` does, in its order: the mark first, then a directory in every hierarchy."""
    (sandbox.OWN_CGROUPS / name).touch()
    for hierarchy in tree.iterdir():
        (hierarchy / name / "system.slice").mkdir(parents=True)


def test_the_subtree_of_a_sandbox_running_in_its_own_cgroups_is_not_counted(tree: Path) -> None:
    start_beside(tree, "algo-mh-hosta")
    assert sorted(sandbox._cgroup_dirs()) == [tree / "blkio" / "system.slice", tree / "memory" / "system.slice"]


def test_one_that_starts_while_the_tree_is_walked_is_not_counted_either(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race that removed a starting host's blkio directory from under its shell in CI: the marks were read
    before the walk, and the sandbox beside marked itself and made its directories during it."""
    walk = os.walk

    def walk_while_one_starts(top: Path) -> Iterator[tuple[str, list[str], list[str]]]:
        if Path(top).name == "memory":  # the first hierarchy has been walked: the other one starts now
            start_beside(tree, "algo-mh-hostb")
        yield from walk(top)

    monkeypatch.setattr(os, "walk", walk_while_one_starts)
    hostb = {d for d in sandbox._cgroup_dirs() if "algo-mh-hostb" in d.parts}
    assert not hostb, f"a shared sandbox's stop would remove {sorted(hostb)}"


def test_a_host_s_shell_makes_and_joins_its_cgroup_even_when_its_directory_is_gone() -> None:
    """On the real cgroup tree (root): the directory an own-cgroup sandbox's shell joins may be removed by anyone
    while it is empty (CI: "cannot create .../blkio/algo-mh-mdx/cgroup.procs"). The shell's line makes it again
    and moves in, so here, with no directory made beforehand, the shell still ends up inside it."""
    if os.geteuid() != 0:
        unavailable("real cgroup tree", "moving a shell into a new cgroup needs root")
    name = f"algo-test-join-{os.getpid()}"
    hierarchies = [h for h in sandbox.own_cgroup_dirs(name) if h.fstype == "cgroup" and h.options]
    if not hierarchies:
        unavailable("real cgroup tree", "no cgroup v1 controller hierarchy is mounted under /sys/fs/cgroup")
    h = hierarchies[0]
    assert not h.path.exists()
    try:
        out = subprocess.run(["sh", "-c", f"{sandbox._join_cgroup(h)}; cat /proc/self/cgroup"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        assert f"/{name}" in out, out
    finally:
        if h.path.exists():
            h.path.rmdir()
