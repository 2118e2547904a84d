"""The emulator's own data, shipped in the package (``data/``): an invented account (profile,
margins, holdings), quotes and candles for instruments it has no price for, and a small
instruments dump. Each file holds what Kite's ``data`` member carries for its route, in the shapes
docs/KITE.md describes; tests/conformance/ checks those shapes against Kite's recorded responses
when they are at hand. Files are read once and never written.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

_DATA = resources.files("daemons.kite_emulator") / "data"


def text(name: str) -> str:
    """A data file as text (the instruments dump)."""
    return _read(name)


def load(name: str) -> Any:
    """A data file's JSON (a fresh copy: callers may change it)."""
    return json.loads(_read(name))


@cache
def _read(name: str) -> str:
    return (_DATA / name).read_text()
