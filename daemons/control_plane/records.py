"""What the store hands out: plain frozen values, detached from any database session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .transitions import State, Status, Verb


@dataclass(frozen=True)
class StrategySpec:
    """A strategy as fleet.toml declares it (``enabled`` becomes auto_start and running/stopped)."""

    name: str
    kind: str
    engine: str
    process: str
    params: dict[str, Any]
    desired_state: State
    auto_start: bool


@dataclass(frozen=True)
class StrategyView(StrategySpec):
    version: int
    updated_at: datetime


@dataclass(frozen=True)
class CommandView:
    id: str
    seq: int
    strategy: str
    verb: Verb
    args: dict[str, Any]
    actor: str
    status: Status
    reason: str | None
    created_at: datetime
    claimed_by: str | None
    claimed_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class AuditView:
    seq: int
    at: datetime
    actor: str
    action: str
    strategy: str | None
    command_id: str | None
    detail: dict[str, Any]
