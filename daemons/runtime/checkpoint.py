"""Strategy state on disk: written atomically, so a crash leaves the old checkpoint or the new
one, never half of one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson


def write(path: Path, state: dict[str, Any]) -> None:
    write_bytes(path, orjson.dumps(state, option=orjson.OPT_INDENT_2))


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` as the whole of ``path``, atomically and durably."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)  # the rename itself must survive a power cut


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a rename, a new or removed file) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: Path) -> dict[str, Any] | None:
    """The last checkpoint, or None when there is none yet."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a checkpoint object")
    return data
