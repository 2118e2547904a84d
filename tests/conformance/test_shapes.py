"""The shape comparison the conformance tests rely on (needs no recordings)."""

from __future__ import annotations

from tests.conformance.shapes import mismatches

KITE = [{"order_id": "1", "price": 10, "tag": None, "meta": {}}, {"order_id": "2", "price": 1.5, "tag": "X"}]


def test_same_shape_passes_ints_and_floats_alike_and_null_matches_anything() -> None:
    assert mismatches([{"order_id": "9", "price": 2, "tag": "Y"}], [KITE]) == []
    assert mismatches([{"order_id": None, "price": 2.5, "tag": "Y", "meta": {}}], [KITE]) == []


def test_missing_extra_and_wrongly_typed_keys_are_named() -> None:
    assert mismatches([{"price": "10", "tag": "Y", "colour": 1}], [KITE]) == [
        "data[0]: no 'order_id'", "data[0]: 'colour', which Kite never sends",
        "data[0].price: a str where Kite has number"]


def test_mixed_scalar_lists_are_positional() -> None:
    candles = [["2026-01-05T09:15:00+0530", 1.0, 2.0, 0.5, 1.5, 100]]
    assert mismatches([["2026-01-05T09:16:00+0530", 1, 2, 0.5, 1.5, 10]], [candles]) == []
    assert mismatches([["t", 1, 2, 0.5, 1.5, 10, 7]], [candles]) == ["data[0]: 7 items where Kite has 6"]
    assert mismatches([[1, 1, 2, 0.5, 1.5, 10]], [candles]) == ["data[0][0]: a number where Kite has str"]
