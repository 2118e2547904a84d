"""Where the registry differs from fleet.toml, field by field, in a stable order for people and scripts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import orjson

from ..runtime.config import FleetConfig
from .records import StrategySpec

ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "(absent)"})()
# Fields a command can change at run time; the rest only fleet.toml changes.
RUNTIME_FIELDS = frozenset({"desired_state", "params"})
_COMPARED = tuple(f.name for f in fields(StrategySpec) if f.name not in ("name", "params"))


@dataclass(frozen=True)
class Drift:
    strategy: str
    field: str  # a StrategySpec field, "params.KEY", or "strategy" when one side lacks it altogether
    toml: Any
    database: Any

    @property
    def runtime(self) -> bool:
        return self.field.split(".", 1)[0] in RUNTIME_FIELDS

    def __str__(self) -> str:
        return f"{self.strategy}: {self.field}: fleet.toml {_show(self.toml)}, database {_show(self.database)}"


def _show(value: Any) -> str:
    return repr(value) if value is ABSENT else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def declared(config: FleetConfig) -> list[StrategySpec]:
    """fleet.toml's strategies: an enabled one starts with the fleet, a disabled one stays stopped."""
    return [StrategySpec(name=s.name, kind=s.kind, engine=engine, process=s.process, params=dict(s.params),
                         desired_state="running" if s.enabled else "stopped", auto_start=s.enabled)
            for engine, section in config.daemons.engines() for s in section.strategies]


def compare(toml: Iterable[StrategySpec], database: Iterable[StrategySpec]) -> list[Drift]:
    """Every difference, sorted by strategy and field."""
    left, right = {s.name: s for s in toml}, {s.name: s for s in database}
    drifts: list[Drift] = []
    for name in left.keys() | right.keys():
        a, b = left.get(name), right.get(name)
        if a is None or b is None:
            drifts.append(Drift(name, "strategy", "declared" if a else ABSENT, "present" if b else ABSENT))
            continue
        drifts += [Drift(name, f, getattr(a, f), getattr(b, f)) for f in _COMPARED if getattr(a, f) != getattr(b, f)]
        drifts += [Drift(name, f"params.{key}", a.params.get(key, ABSENT), b.params.get(key, ABSENT))
                   for key in a.params.keys() | b.params.keys() if a.params.get(key, ABSENT) != b.params.get(key, ABSENT)]
    return sorted(drifts, key=lambda d: (d.strategy, d.field))


def render(drifts: list[Drift], count: int) -> str:
    if not drifts:
        return f"no drift: the database's {count} strategies match fleet.toml"
    return "\n".join(map(str, drifts)) + f"\n{len(drifts)} difference(s) between fleet.toml and the database"
