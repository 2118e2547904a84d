"""Market data on disk: zstd frames of columnar JSON, about 25 bytes a tick instead of 500.

A frame holds one block of events (what the journal gathered in up to a second) as one line of JSON,
column by column: ticks repeat their field names and symbols, and a column of prices or volumes
compresses far better than the same values spread over rows (bench/journal/README.md has the
numbers that chose this over JSON lines in zstd and over Parquet). Frames are independent and
self-delimiting, so a file is appended frame by frame, a restart simply appends more, ``zstdcat``
prints one line per frame, and a frame torn by a crash (no final newline) is the only thing lost.

One line::

    {"shapes": [{"type": T, "source": S, "fields": [payload keys], "id": [...], "ts": [...], "seq": [...],
                 "trace": [null where trace == id], "key": [...], "values": [[column of field 0], ...]}, ...],
     "order": [shape of the 1st event, of the 2nd, ...]}   (no "order" when there is one shape)

A shape is the events of one (type, source, payload keys): columns need the same keys in every row.
Decoded events are the same dicts as a line of events.jsonl, payload keys in their order.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import IO, Any, cast

import orjson
import zstandard

from ..runtime.envelope import Event

LEVEL = 3  # while the day runs: ~1.6 us a tick (bench/journal); compaction rewrites closed days at COMPACT_LEVEL
COMPACT_LEVEL = 9
COMPACT_EVENTS = 20_000  # events per frame after compaction: larger frames, fewer bytes a tick
# A live frame is at most ~1,024 events (~190 KB of JSON, journal/writer.py): a 128 KiB window and small match
# tables do for it. Level 3's own were ~1.5 MB of compressor state, held all day, for 27 bytes a tick; these
# ~1.0 MB for 25.6 bytes, and less time (bench/pipeline/README.md, round 11).
LIVE_TABLES = {"window_log": 17, "hash_log": 14, "chain_log": 13}


class FrameError(ValueError):
    """A market-data file that cannot be read; the message names the file."""


class Block:
    """Events gathered for one frame, kept as rows; turned into columns when framed."""

    __slots__ = ("count", "order", "shapes")

    def __init__(self) -> None:
        self.shapes: dict[tuple[str, str, tuple[str, ...]], _Shape] = {}
        self.order: list[int] = []
        self.count = 0

    def add(self, event: Event) -> None:
        payload = event.payload
        sig = (event.type, event.source, tuple(payload))
        shape = self.shapes.get(sig)
        if shape is None:
            shape = self.shapes[sig] = _Shape(len(self.shapes))
        shape.add(event)
        self.order.append(shape.index)
        self.count += 1

    def add_dict(self, event: dict[str, Any]) -> None:
        """An event as the reader returns it (compaction re-frames what it read)."""
        self.add(Event(event["type"], event["source"], event["seq"], event["payload"], event["id"], event["ts"],
                       event["trace"], event.get("key", "")))

    def line(self) -> bytes:
        """The block as one line of columnar JSON."""
        shapes = [shape.columns(sig) for sig, shape in self.shapes.items()]
        chunk: dict[str, Any] = {"shapes": shapes}
        if len(shapes) > 1:
            chunk["order"] = self.order
        return orjson.dumps(chunk, option=orjson.OPT_APPEND_NEWLINE)

    def frame(self, compressor: zstandard.ZstdCompressor) -> bytes:
        return compressor.compress(self.line())


class _Shape:
    __slots__ = ("id", "index", "key", "rows", "seq", "trace", "ts")

    def __init__(self, index: int) -> None:
        self.index = index
        self.id: list[str] = []
        self.ts: list[int] = []
        self.seq: list[int] = []
        self.trace: list[str | None] = []
        self.key: list[str] = []
        self.rows: list[tuple[Any, ...]] = []

    def add(self, event: Event) -> None:
        self.id.append(event.id)
        self.ts.append(event.ts)
        self.seq.append(event.seq)
        self.trace.append(None if event.trace == event.id else event.trace)
        self.key.append(event.key)
        self.rows.append(tuple(event.payload.values()))

    def columns(self, sig: tuple[str, str, tuple[str, ...]]) -> dict[str, Any]:
        topic, source, fields = sig
        rows = self.rows  # a column per field: map(itemgetter) is ~2.5x cheaper than zip(*rows) over thousands of rows
        return {"type": topic, "source": source, "fields": fields, "id": self.id, "ts": self.ts, "seq": self.seq,
                "trace": self.trace, "key": self.key, "values": [list(map(itemgetter(i), rows)) for i in range(len(fields))]}


def compressor(level: int | None = None) -> zstandard.ZstdCompressor:
    """The live day's (``LEVEL`` with ``LIVE_TABLES``), or compaction's at ``level``."""
    if level is None:
        params = zstandard.ZstdCompressionParameters.from_level(LEVEL, write_checksum=1, **LIVE_TABLES)
        return zstandard.ZstdCompressor(compression_params=params)
    return zstandard.ZstdCompressor(level=level, write_checksum=True)


def read(path: Path, needle: bytes = b"") -> Iterator[dict[str, Any]]:
    """Every event of a market-data file in the order journaled, up to the size it had when opened (a file
    being written never feeds its reader), stopping quietly at a frame torn by a crash. With ``needle``,
    only the events of frames that hold it."""
    if not path.is_file():
        return
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        capped = cast(IO[bytes], _Capped(f, size))
        lines = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(capped, read_across_frames=True),
                                  buffer_size=1 << 20)
        frame = 0
        while True:
            frame += 1
            try:
                line = lines.readline()
            except zstandard.ZstdError as exc:
                raise FrameError(f"{path}: frame {frame} is damaged: {exc}") from None
            if not line.endswith(b"\n"):
                return  # the end, or a frame torn by a crash
            if needle and needle not in line:
                continue
            try:
                yield from decode(line)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise FrameError(f"{path}: frame {frame} is not a block of events: {exc!r}") from None


def decode(line: bytes) -> Iterator[dict[str, Any]]:
    chunk = orjson.loads(line)
    shapes = chunk["shapes"]
    cursors: list[Iterator[tuple[Any, ...]]] = []
    for s in shapes:
        fields, n = s["fields"], len(s["ts"])
        values: Iterable[tuple[Any, ...]] = zip(*s["values"], strict=True) if fields else repeat((), n)
        cursors.append(zip(s["id"], s["ts"], s["seq"], s["trace"], s["key"], values, strict=True))
    order: Iterable[int] = chunk.get("order") or repeat(0, len(shapes[0]["ts"]) if shapes else 0)
    for index in order:
        s = shapes[index]
        eid, ts, seq, trace, key, row = next(cursors[index])
        yield {"id": eid, "ts": ts, "type": s["type"], "source": s["source"], "seq": seq,
               "trace": eid if trace is None else trace, "key": key, "payload": dict(zip(s["fields"], row, strict=True))}


class _Capped(io.RawIOBase):
    """A file read no further than ``size`` bytes."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f, self.left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        n = self.f.readinto(view[:min(len(view), self.left)])  # type: ignore[attr-defined]
        self.left -= n or 0
        return n or 0
