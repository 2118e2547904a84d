"""A write-ahead log of records: execution's orders (each recorded before it is sent, every answer from
the broker after), the paper broker's book, risk's portfolio allocations and an engine's state before a
signal. One JSON object per line, appended and (by default) fdatasync'ed per record, so a crash can tear
only the last line.

Each line carries a CRC-32 of itself as its last key, so it stays a JSON line (``grep``, ``jq``):
``{"op":"new","client_id":"...",...,"crc32":"1a2b3c4d"}``, the checksum over the line's bytes before
``,"crc32"``. Loading trusts nothing else:

- bytes after the last newline are a torn write (a crash came mid-append; the action follows the
  append, so it was never acted on): they, and only they, are cut off;
- any other line that does not verify is damage (a flipped byte, a lost or extra newline, a line
  replaced): the file is left as it is and ``DamagedFile`` names it and the line's byte offset.

Files written before checksums (days begun by an older version) have no ``crc32`` on any line; such
a file is read as it was (each line one non-empty JSON object, a torn last line dropped) and appended
to in its own format until its day ends, so no file mixes the two. A line there that parses but was
damaged cannot be told from a good one: the checksums start with the next day's files.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from . import disk_sync
from .integrity import DamagedFile

log = logging.getLogger("algo.state")

KEY = "crc32"
_FIELD = b',"crc32":"'
_END = b'"}'
_TRAILER = len(_FIELD) + 8 + len(_END)  # ,"crc32":"1a2b3c4d"}


def encode(record: dict[str, Any]) -> bytes:
    """One line: the record (a non-empty object) with its checksum as the last key."""
    head = orjson.dumps(record)[:-1]
    return b"%s%s%08x%s\n" % (head, _FIELD, zlib.crc32(head), _END)


def _has_checksum(line: bytes) -> bool:
    """Shaped like a checksummed line, newline left off (whether it verifies or not)."""
    return line.endswith(_END) and line[-_TRAILER:-_TRAILER + len(_FIELD)] == _FIELD


def checksummed(lines: list[bytes]) -> bool:
    """A file's format, from its whole lines: checksummed unless it has lines and none carries one."""
    return not lines or any(map(_has_checksum, lines))


def _checksummed(line: bytes) -> dict[str, Any]:
    """The record of a checksummed line (newline left off); ValueError saying why it is not one."""
    if not _has_checksum(line):
        raise ValueError("a line without its checksum")
    head = line[:-_TRAILER]
    if b"%08x" % zlib.crc32(head) != line[-_TRAILER + len(_FIELD):-len(_END)]:
        raise ValueError("checksum mismatch")
    record = orjson.loads(line)
    if not isinstance(record, dict) or KEY not in record:  # only a line made to look like ours
        raise ValueError("not a record")
    del record[KEY]
    return record


def _legacy(line: bytes) -> dict[str, Any]:
    """The record of a line written before checksums; ValueError saying why it is not one."""
    record = orjson.loads(line)  # orjson.JSONDecodeError is a ValueError
    if not isinstance(record, dict) or not record:
        raise ValueError(f"not a record: {line[:40]!r}")
    return record


class Scan(NamedTuple):
    """What a log's bytes hold: its records, each one's offset, its format, and where the whole
    records end (any bytes after that are a torn last record)."""

    records: list[dict[str, Any]]
    offsets: list[int]
    checksums: bool
    end: int


def scan(path: Path, data: bytes) -> Scan:
    """Read ``data`` (the bytes of ``path``) without touching the file; DamagedFile at the first
    line that is not a record."""
    end = data.rfind(b"\n") + 1
    lines = data[:end].split(b"\n")[:-1]  # not splitlines: a flipped byte may be a \r
    checksums = checksummed(lines)
    parse = _checksummed if checksums else _legacy
    records: list[dict[str, Any]] = []
    offsets: list[int] = []
    at = 0
    for line in lines:
        try:
            records.append(parse(line))
        except ValueError as exc:
            raise DamagedFile(path, at, f"damaged record ({exc})") from None
        offsets.append(at)
        at += len(line) + 1
    if end < len(data):  # a whole record and one more byte is no torn write (an append writes both at once)
        try:
            parse(data[end:-1])
        except ValueError:
            pass
        else:
            raise DamagedFile(path, end, "damaged record (its newline is not one)")
    return Scan(records, offsets, checksums, end)


class RecordLog:
    """One log file: its records as found at open (checked, a torn tail cut off), and appends."""

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:  # a directory, no permission: nothing to trust, nothing to touch
            raise DamagedFile(path, None, f"cannot be read as a log: {exc.strerror or exc}") from None
        found = scan(path, data)
        if found.end < len(data):
            self._cut_torn(found.end, len(data) - found.end)
        self.records = found.records  # what was there at open; appends are not kept in memory
        self.offsets = found.offsets  # each record's byte offset, to name one that cannot be replayed
        self.checksums = found.checksums  # False: a file begun before checksums, appended to as it was written
        self._size = found.end  # bytes of whole records: where a failed append is cut back to
        self._torn = False  # a failed append could not be taken back yet
        self.unsynced = False  # appended with sync=False and not fdatasync'ed since
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _cut_torn(self, at: int, size: int) -> None:
        log.warning("%s: dropping a torn last record of %d bytes at byte %d (written during a crash, never acted "
                    "on)", self.path, size, at, extra={"STATE_FILE": str(self.path), "STATE_OFFSET": at})
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, at)
            disk_sync.fsync(fd, self.path)  # the cut is durable before anything is appended after it
        finally:
            os.close(fd)

    def replay(self, apply: Callable[[dict[str, Any]], None]) -> None:
        """Each record read at open, in order, to ``apply``. A record of a shape it cannot take (which
        only a file written before checksums can hold) is damage, named by its offset like any other."""
        for at, record in zip(self.offsets, self.records, strict=True):
            try:
                apply(record)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise DamagedFile(self.path, at, f"a record that cannot be replayed ({type(exc).__name__}: "
                                                 f"{exc})") from None

    def append(self, record: dict[str, Any], *, sync: bool = True) -> None:
        """On disk (fdatasync'ed unless ``fsync`` is off, or ``sync`` defers it to ``sync()``) when this
        returns. Or OSError, and the file as it was: a half-written line followed by later appends would be
        damage in mid-file. Written without the fdatasync, a record survives the process (it is in the page
        cache), not yet a power cut."""
        line = encode(record) if self.checksums else orjson.dumps(record) + b"\n"
        try:
            if self._torn:  # the last cut-back failed too: nothing goes after half a line
                os.ftruncate(self._fd, self._size)
                self._torn = False
            written = os.write(self._fd, line)
            while written < len(line):  # a short write: the rest, or the error (a full disk) that cut it short
                written += os.write(self._fd, line[written:])
            if self.fsync and sync:
                disk_sync.fdatasync(self._fd, self.path)  # the earlier unsynced records with it
        except OSError:
            self._cut_back()
            raise
        self._size += len(line)
        if self.fsync:
            self.unsynced = not sync

    def sync(self) -> None:
        """fdatasync what was appended without it; OSError if the disk refuses."""
        if self.unsynced:
            disk_sync.fdatasync(self._fd, self.path)  # a refusal leaves them unsynced: the next call tries again
            self.unsynced = False

    def truncate(self) -> None:
        """Drop every record: what they held is durable elsewhere now. Not synced by itself: the next
        append's fdatasync carries the cut with it, and records a crash leaves behind are older than that."""
        os.ftruncate(self._fd, 0)
        self._size = 0
        self._torn = False
        self.records, self.offsets = [], []

    def _cut_back(self) -> None:
        """Take a failed append back; if even that fails, the next append tries first (and a
        restart cuts the torn tail at open)."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            self._torn = True

    def close(self) -> None:
        os.close(self._fd)
