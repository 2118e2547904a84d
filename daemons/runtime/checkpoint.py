"""State on disk: written atomically, so a crash leaves the old checkpoint or the new one, never half
of one; and, for a state that must be durable before something happens many times a second (an
engine's, before each signal), a write-ahead log beside it (``Checkpoint``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from . import disk_sync
from .integrity import DamagedFile
from .wal import RecordLog, scan

GENERATION = "generation"  # in the state file and every log record: which one is newer

log = logging.getLogger("algo.checkpoint")


def write(path: Path, state: dict[str, Any]) -> None:
    write_bytes(path, orjson.dumps(state, option=orjson.OPT_INDENT_2))


def write_bytes(path: Path, data: bytes) -> None:
    """``data`` as the whole of ``path``, atomically and durably."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        disk_sync.fsync(f.fileno(), path)
    os.replace(tmp, path)
    fsync_dir(path.parent)  # the rename itself must survive a power cut


def fsync_dir(folder: Path) -> None:
    """Make the folder's entries (a rename, a new or removed file) durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        disk_sync.fsync(fd, folder)
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


def restore(saved: dict[str, Any] | None, records: list[dict[str, Any]], offsets: list[int],
            wal: Path) -> tuple[dict[str, Any] | None, int, int]:
    """The file's state with the log's newer records applied in order: (state, its generation, records applied)."""
    base = saved.pop(GENERATION, 0) if saved else 0
    state, newest, applied = saved, base, 0
    for record, offset in zip(records, offsets, strict=True):
        generation, changed = record.get(GENERATION), record.get("state")
        added, merged = record.get("add", {}), record.get("merge", {})
        if type(generation) is not int or not isinstance(changed, dict) or not isinstance(added, dict) \
                or not all(isinstance(items, list) for items in added.values()) or not isinstance(merged, dict) \
                or not all(isinstance(entries, dict) for entries in merged.values()):
            raise DamagedFile(wal, offset, "not a checkpoint record")
        if generation <= base:  # the file holds it already (a crash came before the log was emptied)
            continue
        state = {**(state or {}), **changed}
        for key, items in added.items():
            state[key] = [*state.get(key, []), *items]
        for key, entries in merged.items():
            into = state.get(key, {})
            if not isinstance(into, dict):
                raise DamagedFile(wal, offset, f"a merge into {key!r}, which the state before holds as no object")
            state[key] = {**into, **entries}
        newest, applied = max(newest, generation), applied + 1
    return state, newest, applied


def peek(path: Path) -> dict[str, Any] | None:
    """The state a daemon would restore from ``path`` and its log, read without changing either: a tool's (or a
    test's) view of a running daemon's state, whose ``path`` alone can be a few seconds behind."""
    wal = path.with_suffix(".wal")
    try:
        found = scan(wal, wal.read_bytes())
    except FileNotFoundError:
        return read(path)
    return restore(read(path), found.records, found.offsets, wal)[0]


class Checkpoint:
    """A state file and its write-ahead log (``<name>.wal``). ``log`` makes a state durable at one
    ``fdatasync`` of an append (~0.1 ms on the bench's disk) where ``write`` costs two fsyncs and a rename
    (~0.4 ms, more while other processes flush: bench/pipeline/README.md, round 6); ``write`` (on a timer,
    on stop) folds the log back into the one file people and tools read, and empties it.

    A record need not hold the whole state: the keys it has replace the file's (a key whose value has not
    changed since the last ``write`` can be left out), ``add`` appends items to list-valued keys (a
    fill's id to the day's, without rewriting thousands of them) and ``merge`` replaces entries of
    dict-valued keys (the one strategy that signalled, not every one an engine hosts). ``read`` applies the
    records newer than the file to it, in order, so a crash after any ``log`` or ``write`` restores what was
    last made durable.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wal: RecordLog | None = None  # opened by read (a damaged log stops the daemon at setup)
        self.generation = 0
        self.logged = 0  # records since the file was last written: what the next write folds in
        self.trouble = ""  # why the last fold could not write the file ("" when it could)
        # The next record must hold the whole state: at start, after a change the daemon made without a record
        # (a day roll), or after a record the disk refused. Cleared by a whole record or a write of the file.
        self.behind = True

    @property
    def wal(self) -> RecordLog:
        if self._wal is None:
            self._wal = RecordLog(self.path.with_suffix(".wal"))
        return self._wal

    def read(self) -> dict[str, Any] | None:
        """The newest state made durable, or None when there is none yet; DamagedFile for a log record that is
        not one of ours."""
        state, generation, self.logged = restore(read(self.path), self.wal.records, self.wal.offsets, self.wal.path)
        self.generation = max(self.generation, generation)
        return state

    def log(self, state: dict[str, Any], add: dict[str, list[Any]] | None = None,
            merge: dict[str, dict[str, Any]] | None = None, sync: bool = True) -> None:
        """``state`` (or the keys of it changed since the last ``write``), ``add`` (items for list-valued keys)
        and ``merge`` (entries of dict-valued keys), durable when this returns (OSError: not); with ``sync``
        off only written (a killed process keeps it) until ``sync()``."""
        self.generation += 1
        record: dict[str, Any] = {GENERATION: self.generation, "state": state}
        if add:
            record["add"] = add
        if merge:
            record["merge"] = merge
        self.wal.append(record, sync=sync)
        self.logged += 1

    def record(self, whole: Callable[[], dict[str, Any]], lean: Callable[[], dict[str, Any]],
               add: dict[str, list[Any]] | None = None, merge: dict[str, dict[str, Any]] | None = None,
               sync: bool = True) -> None:
        """A record of what changed: ``lean()``, ``add`` and ``merge`` when the file and the records since hold
        the rest, else ``whole()``. Durable when this returns (OSError: not, and the next record is whole);
        ``sync`` off: written, and durable at ``sync()``."""
        state, add, merge = (whole(), None, None) if self.behind else (lean(), add, merge)
        self.behind = True  # until this record is on disk
        self.log(state, add, merge, sync)
        self.behind = False

    def sync(self) -> None:
        """fdatasync the records written with ``sync`` off; OSError: they may not survive a power cut, so the
        next record is whole."""
        try:
            self.wal.sync()
        except OSError:
            self.behind = True
            raise

    def write(self, state: dict[str, Any]) -> None:
        """``state`` as the state file, atomically and durably; the log's records are older now and dropped."""
        self.generation += 1
        write(self.path, {**state, GENERATION: self.generation})
        self.wal.truncate()
        self.logged = 0
        self.behind = False

    def fold(self, state: dict[str, Any]) -> None:
        """``write`` from a daemon's timer, which a full or failing disk must not stop: the log still holds every
        record since the file, so a refusal is logged once per outage (``trouble`` says why) and the next call
        tries again."""
        try:
            self.write(state)
        except OSError as exc:
            if not self.trouble:
                log.error("%s cannot be written (%s); the state since is kept in %s and the file is tried again",
                          self.path, exc.strerror or exc, self.wal.path, extra={"STATE_FILE": str(self.path)})
            self.trouble = exc.strerror or str(exc)
            return
        if self.trouble:
            log.info("%s written again", self.path, extra={"STATE_FILE": str(self.path)})
            self.trouble = ""

    def close(self) -> None:
        if self._wal is not None:
            self._wal.close()
            self._wal = None
