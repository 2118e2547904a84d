"""How bars and features travel (topics ``marketdata.ohlc``, ``features.bar``, ``features.snapshot``).

The bus envelope is JSON (docs/ARCHITECTURE.md, Envelope); what is chosen here is the payload, by
measurement (bench/features/README.md):

- ``features.bar`` (one symbol's bar close): the values as a JSON array in ``FEATURES`` order. With one
  row the envelope dominates: a binary array (msgpack, or raw float64) in base64 saves 13-16% of the
  bytes for 20-35% more CPU at each end, while named fields cost 1.5x the CPU and 15% more bytes.
- ``features.snapshot`` (a symbol's history from the cache): the rows as one little-endian float64
  array in base64, ``COLUMNS`` wide: a fraction of the bytes of JSON arrays and decoded straight
  into a numpy array.
"""

from __future__ import annotations

import base64
import math
import sys
from typing import TYPE_CHECKING, Any

from .cache import COLUMNS, WIDTH, Ring
from .candles import NS, Bar
from .indicators import FEATURES

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Rows = npt.NDArray[np.float64]

SCHEMA = 1  # bumped when FEATURES or COLUMNS change in a way that breaks readers


def bar_features(bar: Bar, interval_ns: int, features: tuple[float, ...]) -> dict[str, Any]:
    """The ``features.bar`` payload; NaN (not warmed up yet) travels as null."""
    return {"schema": SCHEMA, "token": bar.token, "symbol": bar.symbol, "start": bar.start_ns,
            "end": bar.start_ns + interval_ns, "v": [None if math.isnan(x) else x for x in features]}


def snapshot(ring: Ring, requester: str, bar_seconds: int) -> dict[str, Any]:
    """The ``features.snapshot`` payload for one symbol, addressed to ``requester``."""
    values = ring.history()
    if sys.byteorder == "big":
        values.byteswap()  # the wire's float64s are little-endian
    return {"schema": SCHEMA, "to": requester, "token": ring.token, "symbol": ring.symbol, "bar_seconds": bar_seconds,
            "columns": list(COLUMNS), "rows": len(values) // WIDTH, "data": base64.b64encode(values.tobytes()).decode()}


def snapshot_rows(payload: dict[str, Any]) -> Rows:
    """A ``features.snapshot`` payload's rows (oldest first), ``len(payload["columns"])`` wide."""
    import numpy as np  # ~10 MB of RSS: only in a reader, never in algo-marketdata, which writes snapshots

    data = np.frombuffer(base64.b64decode(payload["data"], validate=True), dtype="<f8")
    return data.reshape(int(payload["rows"]), len(payload["columns"])).astype(np.float64)


def snapshot_bars(payload: dict[str, Any]) -> list[tuple[int, list[float | None]]]:
    """Each row of a ``features.snapshot`` payload as a ``features.bar`` would carry it: (the bar's end in
    exchange time, ns; its values in ``FEATURES`` order, None while warming up), oldest first. A payload
    of another shape raises KeyError, TypeError or ValueError."""
    rows, columns = snapshot_rows(payload), list(payload["columns"])
    at = [columns.index(name) for name in FEATURES]
    start, seconds = columns.index("start_sec"), int(payload["bar_seconds"])
    return [((int(row[start]) + seconds) * NS, [None if math.isnan(x) else float(x) for x in row[at]]) for row in rows]
