"""Kite's recorded instruments dumps against the emulator's: the same columns in the same order,
the same kinds of value per column, and both read by the emulator and by the fleet's loader."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from kiteconnect import KiteConnect

from daemons.kite_emulator import datafiles
from daemons.kite_emulator.instruments import COLUMNS, Instruments
from daemons.marketdata.instruments import load_instruments
from tests.conformance.conftest import Recorded

DUMPS = ["instruments_all.csv", "instruments_nse.csv"]
KINDS = [("empty", re.compile(r"")), ("int", re.compile(r"-?\d+")), ("float", re.compile(r"-?\d+\.\d+")),
         ("date", re.compile(r"\d{4}-\d{2}-\d{2}"))]


def kinds(text: str) -> dict[str, set[str]]:
    """Per column, the kinds of value it holds (text for anything else)."""
    out: dict[str, set[str]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        for column, value in row.items():
            found = next((name for name, pattern in KINDS if pattern.fullmatch(value)), "text")
            out.setdefault(column, set()).add(found)
    return out


@pytest.mark.parametrize("name", DUMPS)
def test_recorded_dumps_have_the_emulators_columns_and_load_everywhere(recorded: Recorded, name: str) -> None:
    text = recorded.path(name).read_text()
    assert tuple(text.splitlines()[0].split(",")) == COLUMNS
    rows = text.count("\n") - 1
    assert len(load_instruments(recorded.path(name))) == rows
    registry = Instruments.from_csv(recorded.path(name))
    assert registry.csv().splitlines()[0] == text.splitlines()[0]


def test_the_emulators_dump_holds_the_same_kinds_of_value_per_column(recorded: Recorded, tmp_path: Path) -> None:
    ours, theirs = datafiles.text("instruments.csv"), recorded.path("instruments_all.csv").read_text()
    assert ours.splitlines()[0] == theirs.splitlines()[0]
    want = kinds(theirs)
    # Kite's recorded dump has no index rows; a live one lists indices with lot size 0 and tick size 0.0.
    assert {column: found - want[column] for column, found in kinds(ours).items()} == {c: set() for c in COLUMNS}
    client = KiteConnect("k")
    parsed_ours, parsed_theirs = client._parse_instruments(ours.encode()), client._parse_instruments(theirs.encode())
    for column in COLUMNS:
        assert {type(r[column]) for r in parsed_ours} <= {type(r[column]) for r in parsed_theirs} | {type(None)}, column
