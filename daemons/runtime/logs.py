"""Logging for journalctl: one entry per event, a priority on each, searchable fields.

Under systemd (JOURNAL_STREAM matches stderr) entries go to journald over its native protocol
(logging-journald), so ``journalctl ORDER_ID=…`` and ``journalctl -p warning`` work. Elsewhere a
plain line goes to stderr. Pass fields as ``extra={"ORDER_ID": oid, "SYMBOL": sym}``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from logging_journald import JournaldLogHandler, check_journal_stream

# Fields people search by. Any other UPPER_CASE extra key is lifted to a journal field too.
FIELDS = ("ENGINE", "STRATEGY", "SYMBOL", "ORDER_ID", "TRACE_ID")
# The name of the root handler setup_logging installs, so a process running several mains in turn
# (the test suite) can tell it from others.
HANDLER_NAME = "algo-fleet"

_STD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k.isupper() and k not in _STD_ATTRS and v is not None}


class FleetJournalHandler(JournaldLogHandler):
    """Native-protocol handler that puts our fields at the top level (ORDER_ID, not EXTRA_ORDER_ID)."""

    def __init__(self, identifier: str, socket_path: Path | None = None) -> None:
        super().__init__(identifier=identifier, use_message_id=False, socket_path=socket_path)

    def _format_record(self, record: logging.LogRecord) -> list[tuple[str, Any]]:
        fields = _fields(record)
        for key in fields:
            delattr(record, key)
        try:
            pairs = [p for p in super()._format_record(record) if p[0] != "extra"]
        finally:
            for key, value in fields.items():
                setattr(record, key, value)
        pairs.extend((key, str(value)) for key, value in fields.items())
        return pairs


class PlainFormatter(logging.Formatter):
    """For a terminal: level, logger, message, then the fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def after_turn(logger: logging.Logger, level: int, msg: str, *args: object, extra: dict[str, Any] | None = None) -> None:
    """A line logged once this loop turn's events are written: a journald line costs ~50 µs, which the next
    order-path event of the same read (a reversal's second approval) would otherwise wait for. The record is
    made now (its time and caller are the decision's); without a running loop (a tool), it is logged at once."""
    if not logger.isEnabledFor(level):
        return
    path, line, func, stack = logger.findCaller(stacklevel=2)
    record = logger.makeRecord(logger.name, level, path, line, msg, args, None, func, extra, stack)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        logger.handle(record)
        return
    loop.call_soon(logger.handle, record)


def setup_logging(identifier: str, level: str = "INFO") -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if check_journal_stream():
        handler = FleetJournalHandler(identifier)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PlainFormatter())
    handler.set_name(HANDLER_NAME)
    root.addHandler(handler)
    root.setLevel(level)
