"""The write-ahead order log: every order is recorded here before it is sent, and every answer
from the broker after. One JSON object per line, appended and (by default) fsynced per record.

A crash can leave at most the last line torn; loading drops it (it was never acted on, since the
action follows the fsync) and truncates the file so later appends start on a clean line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("algo.execution")


class OrderLog:
    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self.records = self._load()  # what was there at open; appends are not kept in memory
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _load(self) -> list[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records, good = [], 0
        for line in data.splitlines(keepends=True):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("no newline")
                records.append(orjson.loads(line))
            except ValueError:
                log.warning("%s: dropping a torn record at byte %d (written during a crash, never acted on)",
                            self.path, good)
                with open(self.path, "r+b") as f:
                    f.truncate(good)
                break
            good += len(line)
        return records

    def append(self, record: dict[str, Any]) -> None:
        os.write(self._fd, orjson.dumps(record) + b"\n")
        if self.fsync:
            os.fdatasync(self._fd)

    def close(self) -> None:
        os.close(self._fd)
