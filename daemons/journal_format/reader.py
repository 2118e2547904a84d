"""The one way to read a journal day: replay, `algoctl trace`, algo-eod and the benches all come here.

A day is events.jsonl (the order path; on days written before market.zst existed, every event) and
market.zst (market data and heartbeats, frames.py). Events come back as the dicts of an
events.jsonl line, the two files merged by their publish stamp. Only the bytes present when a file
was opened are read, so reading the day being journaled never feeds on itself; a line or frame torn
by a crash ends its file quietly, anything else unreadable is a ``JournalError`` naming file and line.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from . import frames
from .layout import EVENTS, KINDS, MARKET, MARKET_PREFIXES, kind_of

_MARKET_MARKS = tuple(f'"type":"{p}'.encode() for p in MARKET_PREFIXES)  # in a raw line: skip the rest unparsed
_TICK = "marketdata.tick"


class JournalError(ValueError):
    """A journal file that cannot be read; the message names the file (and line)."""


def files(path: Path) -> list[Path]:
    """The files of a day directory that exist, or the one file given; [] when there is nothing."""
    if path.is_dir():
        return [f for f in (path / EVENTS, path / MARKET) if f.is_file()]
    return [path] if path.is_file() else []


def events(path: Path, kinds: Collection[str] = KINDS, needle: str = "") -> Iterator[dict[str, Any]]:
    """The events of a day (or of one of its files) of the given kinds, in publish order; with ``needle``,
    only events whose JSON holds it (a cheap way to find an id)."""
    streams = [_frames(f, needle) if f.name.endswith(".zst") else _lines(f, kinds, needle.encode())
               for f in files(path) if "market" in kinds or not f.name.endswith(".zst")]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=itemgetter("ts"))


def ticks(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(journaled at, payload) of every marketdata.tick."""
    for event in events(path, ("market",)):
        if event["type"] == _TICK:
            yield event["ts"], event["payload"]


def _lines(file: Path, kinds: Collection[str], needle: bytes) -> Iterator[dict[str, Any]]:
    market_only = "orders" not in kinds
    size = file.stat().st_size
    with open(file, "rb") as f:
        read = 0
        for n, line in enumerate(f, 1):
            read += len(line)
            if read > size or not line.endswith(b"\n"):
                return  # written after we opened it, or a torn last line
            if needle and needle not in line:
                continue
            if market_only and not any(mark in line for mark in _MARKET_MARKS):
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise JournalError(f"{file}:{n}: not a JSON event") from None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str) or not isinstance(event.get("ts"), int):
                raise JournalError(f"{file}:{n}: not a journal event (no type or ts)")
            if kind_of(event["type"]) in kinds:
                yield event


def _frames(file: Path, needle: str) -> Iterator[dict[str, Any]]:
    raw = needle.encode()
    try:
        for event in frames.read(file, raw):  # only the frames that hold the needle are decoded
            if not raw or raw in orjson.dumps(event):
                yield event
    except frames.FrameError as exc:
        raise JournalError(str(exc)) from None
