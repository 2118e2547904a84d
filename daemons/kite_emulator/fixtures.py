"""Zerodha's recorded responses (kiteconnect-mocks), the source of every static route.

They live outside the package (``../shared/fixtures/kite`` next to the checkout, or
``$KITE_FIXTURES_DIR``): their licence allows use as test fixtures, not redistribution, so they are
not shipped in the wheel. Files are read once and never written.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

ENV = "KITE_FIXTURES_DIR"
CHECKOUT_DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "kite"


class FixturesError(FileNotFoundError):
    """The fixtures directory is missing: say where we looked and how to point elsewhere."""


class Fixtures:
    """Read access to one fixtures directory."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or Path(os.environ.get(ENV) or CHECKOUT_DEFAULT)
        if not (self.directory / "profile.json").is_file():
            raise FixturesError(
                f"no Kite fixtures in {self.directory} (expected profile.json); pass --fixtures DIR or set {ENV}"
            )

    def path(self, name: str) -> Path:
        return self.directory / name

    def data(self, name: str) -> Any:
        """The ``data`` member of a recorded success envelope (a fresh copy: callers may change it)."""
        return json.loads(_read(self.path(name)))["data"]


@cache
def _read(path: Path) -> str:
    return path.read_text()
