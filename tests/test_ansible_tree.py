"""The role's module algo_fleet_tree (ansible/roles/algo_fleet/library/): one call makes a directory hold a
given set of files, so the role writes units, drop-ins and fingerprints without a module call per file.
Run as Ansible runs it, a script reading its arguments from a JSON file. Files are made root's, so these
tests need root (the deploy tests run as root too)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import unavailable

MODULE = Path(__file__).resolve().parents[1] / "ansible" / "roles" / "algo_fleet" / "library" / "algo_fleet_tree.py"


def tree(tmp_path: Path, **args: Any) -> dict[str, Any]:
    try:
        import ansible  # noqa: F401
    except ImportError:
        unavailable("Ansible tests", "ansible-core is not installed (pip install ansible-core ansible-lint)")
    if os.geteuid() != 0:
        pytest.skip("algo_fleet_tree makes its files root's: needs root")
    (tmp_path / "args.json").write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    out = subprocess.run([sys.executable, str(MODULE), str(tmp_path / "args.json")], capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def listing(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (p.read_text() if p.is_file() else "/", p.stat().st_mode & 0o7777)
            for p in sorted(root.rglob("*"))}


def test_writes_what_differs_removes_what_is_absent_and_a_second_call_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "units"
    root.mkdir()
    (root / "old.service").write_text("old\n")
    (root / "keep.service").write_text("same\n")
    (root / "keep.service").chmod(0o644)
    files = {"a.service": "A\n", "a.service.d/x.conf": "X\n", "keep.service": "same\n"}
    args = {"root": str(root), "files": files, "absent": ["old.service", "never.service"]}
    first = tree(tmp_path, **args)
    assert (first["changed"], first["written"], first["removed"]) == (True, ["a.service", "a.service.d/x.conf"],
                                                                      ["old.service"])
    assert listing(root) == {"a.service": ("A\n", 0o644), "a.service.d": ("/", 0o755),
                             "a.service.d/x.conf": ("X\n", 0o644), "keep.service": ("same\n", 0o644)}
    again = tree(tmp_path, **args)
    assert (again["changed"], again["written"], again["removed"]) == (False, [], [])

    (root / "keep.service").chmod(0o600)  # a mode alone differing is a change too
    assert tree(tmp_path, **args)["written"] == ["keep.service"]
    assert listing(root)["keep.service"] == ("same\n", 0o644)
    assert not list(root.rglob(".algo-tree-*"))  # no temporary file left behind


def test_check_mode_reports_and_writes_nothing_and_diff_shows_before_and_after(tmp_path: Path) -> None:
    root = tmp_path / "units"
    root.mkdir()
    (root / "a.service").write_text("before\n")
    (root / "gone.service").write_text("bye\n")
    result = tree(tmp_path, root=str(root), files={"a.service": "after\n", "b.d/b.conf": "B\n"}, absent=["gone.service"],
                  _ansible_check_mode=True, _ansible_diff=True)
    assert (result["changed"], result["written"], result["removed"]) == (True, ["a.service", "b.d/b.conf"], ["gone.service"])
    assert [(d["before"], d["after"]) for d in result["diff"]] == [("before\n", "after\n"), ("", "B\n"), ("bye\n", "")]
    assert listing(root) == {"a.service": ("before\n", 0o644), "gone.service": ("bye\n", 0o644)}


def test_prune_removes_the_other_top_level_files_only(tmp_path: Path) -> None:
    root = tmp_path / "fingerprints"
    (root / "sub").mkdir(parents=True)
    for name in ("algo-fno.service", "algo-old.service", "sub/kept"):
        (root / name).write_text("x\n")
    result = tree(tmp_path, root=str(root), files={"algo-fno.service": "y\n"}, prune=True)
    assert (result["written"], result["removed"]) == (["algo-fno.service"], ["algo-old.service"])
    assert sorted(listing(root)) == ["algo-fno.service", "sub", "sub/kept"]


def test_only_removing_creates_no_directory(tmp_path: Path) -> None:
    result = tree(tmp_path, root=str(tmp_path / "credentials"), absent=["kite_api_key", "kite_api_key.cred"])
    assert not result["changed"] and not (tmp_path / "credentials").exists()


@pytest.mark.parametrize("bad", ["../escape", "/etc/passwd", "a/../../b", ""])
def test_a_path_outside_root_is_refused(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "units"
    for args in ({"files": {bad: "x"}}, {"absent": [bad]}):
        result = tree(tmp_path, root=str(root), **args)
        assert result.get("failed") and "not a plain relative path" in result["msg"], result
    assert not root.exists() and not (tmp_path / "escape").exists()


def test_dirs_are_held_even_empty(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    result = tree(tmp_path, root=str(root), dirs=["wheels", "a/b"])
    assert result["changed"] and listing(root) == {"a": ("/", 0o755), "a/b": ("/", 0o755), "wheels": ("/", 0o755)}
    (root / "wheels").chmod(0o700)
    assert tree(tmp_path, root=str(root), dirs=["wheels", "a/b"])["changed"] and listing(root)["wheels"] == ("/", 0o755)
    assert not tree(tmp_path, root=str(root), dirs=["wheels", "a/b"])["changed"]
