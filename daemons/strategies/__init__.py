"""The strategies an engine can host, by the ``kind`` a config names them with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_args, get_type_hints

from .base import FeatureBar, Fill, Signal, Strategy, Tick
from .model import ModelStrategy
from .reversion import RsiReversion
from .straddle import ShortStraddle
from .trend import EmaCrossover

KINDS: dict[str, type[Strategy]] = {cls.kind: cls for cls in (EmaCrossover, RsiReversion, ShortStraddle, ModelStrategy)}


def watched(strategies: Iterable[Strategy]) -> frozenset[str] | None:
    """The symbols and underlyings these strategies watch; None when one of them watches every one."""
    names: set[str] = set()
    for strategy in strategies:
        these = strategy.watches()
        if these is None:
            return None
        names |= these
    return frozenset(names)


def build(kind: str, name: str, params: dict[str, Any]) -> Strategy:
    """A configured strategy; ValueError says what is wrong with the kind or its parameters."""
    cls = KINDS.get(kind)
    if cls is None:
        raise ValueError(f"unknown strategy kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    hints = get_type_hints(cls.__init__)
    for key, value in params.items():
        if isinstance(value, bool) and {int, float} & {hints.get(key), *get_args(hints.get(key))}:
            raise ValueError(f"{kind}: {key} must be a number, not true/false")  # Python would take true as 1
    try:
        return cls(name, **params)
    except TypeError as exc:  # a missing or unknown parameter
        raise ValueError(f"{kind}: {str(exc).split('__init__() ', 1)[-1]}") from None


__all__ = ["KINDS", "FeatureBar", "Fill", "ModelStrategy", "Signal", "Strategy", "Tick", "build", "watched"]
