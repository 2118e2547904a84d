"""``algoctl wal``: the operator's tools for a damaged write-ahead log (execution's, the paper broker's
book, an engine's checkpoint.wal).

``check`` reads a log as its daemon will, without changing it. ``seal`` gives a line the operator
has repaired by hand its checksum again, so the daemon takes it; the file is replaced
atomically with its owner and mode, and the bytes before the seal are kept next to it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from ..runtime import checkpoint
from ..runtime.integrity import DamagedFile
from ..runtime.wal import KEY, checksummed, encode, scan


class WalError(Exception):
    """What stops a check or a seal, in one line."""


def check(path: Path) -> str:
    """One line: how many records, which format, a torn tail; WalError naming the damage."""
    data = path.read_bytes()
    try:
        found = scan(path, data)
    except DamagedFile as exc:
        at = exc.offset or 0
        line = data.count(b"\n", 0, at) + 1
        text = data[at:].split(b"\n", 1)[0]
        raise WalError(f"{path}: line {line} (byte {at}): {exc.problem}: {text[:160]!r}") from None
    form = "checksummed" if found.checksums else "written before checksums"
    torn = (f"; a torn last record of {len(data) - found.end} bytes at byte {found.end}, which its daemon cuts "
            "off when it starts" if found.end < len(data) else "")
    return f"{path}: OK, {len(found.records)} records, {form}{torn}"


def seal(path: Path, number: int) -> str:
    """Checksum line ``number`` (1-based) again, as it now reads; then ``check`` the result."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    if not 1 <= number < len(lines):
        raise WalError(f"{path} has no whole line {number} (it has {len(lines) - 1})")
    if not checksummed(lines[:-1]):
        raise WalError(f"{path} was written before checksums: a repaired line needs no seal")
    owner = path.stat().st_uid
    if os.geteuid() not in (0, owner):
        raise WalError(f"{path} belongs to uid {owner}: seal it as root, so it keeps its owner")
    try:
        record = orjson.loads(lines[number - 1])
    except orjson.JSONDecodeError as exc:
        raise WalError(f"{path}: line {number} is not JSON yet ({exc}); repair it first") from None
    if not isinstance(record, dict) or not record:
        raise WalError(f"{path}: line {number} is not a record (a non-empty JSON object); repair it first")
    record.pop(KEY, None)
    lines[number - 1] = encode(record)[:-1]
    backup = path.with_name(f"{path.name}.before-seal-{time.strftime('%Y%m%dT%H%M%S')}")
    _replace(backup, data, path)
    _replace(path, b"\n".join(lines), path)
    return f"line {number} sealed (the file before: {backup})\n{check(path)}"


def _replace(path: Path, data: bytes, like: Path) -> None:
    """``data`` as ``path``, atomically, with the owner and mode of ``like`` (execution's, not root's)."""
    st = like.stat()
    checkpoint.write_bytes(path, data)
    os.chown(path, st.st_uid, st.st_gid)
    os.chmod(path, st.st_mode & 0o7777)
