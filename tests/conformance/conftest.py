"""Kite's recorded responses and ticker packets, for the conformance tests in this folder.

Zerodha's recordings (the kiteconnect-mocks files) may not be redistributed, so the project never
ships or needs them: the emulator serves its own data and these tests check it against the
recordings wherever they are at hand. This is the one place that says where they are looked for:
``$KITE_FIXTURES_DIR``, else ``shared/fixtures/kite`` beside the checkout. Without them the tests
skip with that reason, except under ``CI=true`` (CI has them), where they fail.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.helpers import unavailable

ENV = "KITE_FIXTURES_DIR"


class Recorded:
    """Read access to one directory of Kite's recorded responses."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / name

    def json(self, name: str) -> Any:
        """A file's whole JSON (a bare order update, a decoded tick)."""
        return json.loads(self.path(name).read_text())

    def data(self, name: str) -> Any:
        """The ``data`` member of a recorded success envelope."""
        return self.json(name)["data"]

    def packet(self, name: str) -> bytes:
        """A ``*.packet`` file: base64 of one raw ticker packet, without count or length."""
        return base64.b64decode(self.path(name).read_text())


def recorded_directory() -> Path:
    return Path(os.environ.get(ENV) or REPO.parent / "shared" / "fixtures" / "kite")


@pytest.fixture(scope="session")
def recorded() -> Recorded:
    directory = recorded_directory()
    if not (directory / "profile.json").is_file():
        unavailable("Kite conformance tests", f"Kite's recorded responses are not in {directory} (set {ENV} to their "
                    "directory)")
    return Recorded(directory)
