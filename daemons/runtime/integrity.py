"""Durable state that is not what the daemon wrote.

A damaged file must neither be acted on nor repaired by guesswork (truncating it at the damage would
delete whatever was written after it): the daemon stops with exit 78, which the units list in
RestartPreventExitStatus= so systemd does not restart it in a loop, after one crit line naming the
file and the byte offset. The file is left as it is for the operator (docs/OPERATIONS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class DamagedFile(Exception):
    """``path`` cannot be trusted from byte ``offset`` on (None: the file as a whole), because of ``problem``."""

    def __init__(self, path: Path, offset: int | None, problem: str) -> None:
        self.path, self.offset, self.problem = path, offset, problem
        where = f"{path} at byte {offset}" if offset is not None else str(path)
        super().__init__(f"{where}: {problem}; the file is left as it is: stopped until an operator repairs it "
                         "(docs/OPERATIONS.md, \"A damaged state file\")")

    def fields(self) -> dict[str, Any]:
        """Journal fields, so ``journalctl STATE_FILE=...`` finds it."""
        return {"STATE_FILE": str(self.path), "STATE_OFFSET": self.offset}
