#!/usr/bin/python
"""Make a directory hold a given set of files in one module call (unit files, drop-ins, fingerprints).

One call per directory instead of one template/copy/file call per file: over SSH each module call is a
round trip, and the role manages some forty files on every play.
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
---
module: algo_fleet_tree
short_description: Make a directory hold a given set of files
description:
  - Writes each file of O(files) under O(root) whose content or mode differs (atomically, through a temporary
    file in the same directory), removes the paths of O(absent) that exist and, with O(prune), the top-level
    regular files of O(root) that O(files) does not name.
  - Files and the directories that hold them (and those of O(dirs)) are owned by root. Missing directories are
    created for the files to write; directories only named by O(absent) or O(prune) are never created or changed.
  - One module call for a whole directory, where the template, copy and file modules take one call per file.
options:
  root:
    description: The directory, absolute.
    type: path
    required: true
  files:
    description: Relative path (sub-directories allowed) to the file's text content.
    type: dict
    default: {}
  dirs:
    description: Relative paths of directories to hold even when no file of O(files) is in them.
    type: list
    elements: str
    default: []
  absent:
    description: Relative paths to remove if they exist (files or symbolic links).
    type: list
    elements: str
    default: []
  prune:
    description: Also remove the regular files directly in O(root) that O(files) does not name.
    type: bool
    default: false
  mode:
    description: Mode of the files written.
    type: str
    default: "0644"
  dir_mode:
    description: Mode of the directories that hold them.
    type: str
    default: "0755"
notes:
  - Supports check mode (reports what would change, writes nothing) and diff mode (before and after of each file).
  - A relative path that is absolute or leaves O(root) (C(..)) fails the task.
author: algo-fleet
"""

EXAMPLES = r"""
- name: Install the unit files and drop-ins, removing those no longer wanted
  algo_fleet_tree:
    root: /etc/systemd/system
    files:
      algo-bus.service: "[Unit]\nDescription=bus\n"
      algo-fno.service.d/algo-cpus.conf: "[Service]\nCPUAffinity=1-3\n"
    absent: [algo-risk.service, algo-fno.service.d/algo-credentials.conf]

- name: The install directory with its docs and an empty wheels/
  algo_fleet_tree:
    root: /opt/algo
    dirs: [wheels]
    files: {docs/ARCHITECTURE.md: "# Architecture\n"}

- name: One fingerprint file per unit, the others removed
  algo_fleet_tree:
    root: /opt/algo/fingerprints
    files: {algo-fno.service: "0123abcd\n"}
    prune: true
"""

RETURN = r"""
written:
  description: The relative paths created or changed (in check mode, that would be), sorted.
  returned: always
  type: list
  elements: str
  sample: [algo-fno.service, algo-fno.service.d/algo-cpus.conf]
removed:
  description: The relative paths removed (in check mode, that would be), sorted.
  returned: always
  type: list
  elements: str
  sample: [algo-risk.service]
"""


def relative(root: str, rel: str) -> str:
    """The absolute path of rel under root; rel must stay inside root."""
    parts = rel.split("/")
    if not rel or os.path.isabs(rel) or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{rel!r} is not a plain relative path inside {root}")
    return os.path.join(root, *parts)


def current(path: str, mode: int, content: bytes | None = None) -> bool:
    """Whether path is a directory (content None) or a regular file holding content, root's, with mode."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    kind = stat.S_ISDIR(st.st_mode) if content is None else stat.S_ISREG(st.st_mode)
    if not kind or stat.S_IMODE(st.st_mode) != mode or (st.st_uid, st.st_gid) != (0, 0):
        return False
    return content is None or read(path) == content


def read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None


def write(path: str, content: bytes, mode: int) -> None:
    """Atomically: a temporary file in the same directory, then renamed over path."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".algo-tree-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chown(tmp, 0, 0)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def text(data: bytes | None) -> str:
    return (data or b"").decode(errors="replace")


def run(module: AnsibleModule) -> dict[str, Any]:
    p = module.params
    root: str = p["root"]
    if not os.path.isabs(root):
        module.fail_json(msg=f"root must be an absolute path: {root!r}")
    try:
        mode, dir_mode = int(p["mode"], 8), int(p["dir_mode"], 8)
        files = {relative(root, rel): str(content).encode() for rel, content in p["files"].items()}
        absent = [relative(root, rel) for rel in p["absent"]]
        wanted_dirs = [relative(root, rel) for rel in p["dirs"]]
    except ValueError as e:
        module.fail_json(msg=str(e))
    both = sorted(set(files) & set(absent))
    if both:
        module.fail_json(msg=f"paths both wanted and absent: {both}")
    if p["prune"] and os.path.isdir(root):
        absent += [path for name in os.listdir(root) for path in [os.path.join(root, name)]
                   if path not in files and stat.S_ISREG(os.lstat(path).st_mode)]

    dirs = {root} if files or wanted_dirs else set()
    for d in [*(os.path.dirname(path) for path in files), *wanted_dirs]:
        while d != root:
            dirs.add(d)
            d = os.path.dirname(d)
    new_dirs = sorted(d for d in dirs if not current(d, dir_mode))
    written = sorted(path for path, content in files.items() if not current(path, mode, content))
    removed = sorted({path for path in absent if os.path.lexists(path)})
    for path in removed:
        if os.path.isdir(path) and not os.path.islink(path):
            module.fail_json(msg=f"{path} is a directory: not removed")

    result: dict[str, Any] = {"changed": bool(new_dirs or written or removed),
                              "written": [os.path.relpath(path, root) for path in written],
                              "removed": [os.path.relpath(path, root) for path in removed]}
    if module._diff:
        result["diff"] = [{"before_header": path, "after_header": path, "before": text(read(path)),
                           "after": text(files.get(path))} for path in written + removed]
    if module.check_mode:
        return result
    for d in new_dirs:
        os.makedirs(d, mode=dir_mode, exist_ok=True)
        os.chown(d, 0, 0)
        os.chmod(d, dir_mode)
    for path in written:
        if read(path) == files[path] and not os.path.islink(path):  # the content is right: only mode or owner
            os.chown(path, 0, 0)
            os.chmod(path, mode)
        else:
            write(path, files[path], mode)
    for path in removed:
        os.unlink(path)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": True},
            "files": {"type": "dict", "default": {}},
            "dirs": {"type": "list", "elements": "str", "default": []},
            "absent": {"type": "list", "elements": "str", "default": []},
            "prune": {"type": "bool", "default": False},
            "mode": {"type": "str", "default": "0644"},
            "dir_mode": {"type": "str", "default": "0755"},
        },
        supports_check_mode=True,
    )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
