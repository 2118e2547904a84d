"""Control-plane commands as the unit hosting a strategy carries them out: ``control.command`` in,
``control.result`` out (algo-commander sends one and writes the other back to the database).

A command names the unit that must answer (``algo-equity``, ``algo-strategy@NAME``), so exactly one
daemon applies it. What a verb does to a hosted strategy is one table, ``HOSTED_TRANSITIONS``; the
outcomes of the commands applied are remembered by id (``Executed``, checkpointed with the strategies),
so a command sent again (its result was lost, or the commander restarted and re-claimed it) is
answered with its first outcome and never applied twice.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, cast

from ..control_plane.transitions import COMMAND_ID, VERBS, Verb

HostedState = Literal["running", "paused", "stopped"]

# (what the strategy is in this unit, verb) -> what it becomes. Lenient where the end state is already
# reached (a pause of a paused strategy is done), so a unit whose state drifted from the database's
# desired state (an `algoctl pause` over the bus) converges; anything missing is refused with the reason.
HOSTED_TRANSITIONS: dict[tuple[HostedState, Verb], HostedState] = {
    ("running", "start"): "running",
    ("running", "stop"): "stopped",
    ("running", "restart"): "running",
    ("running", "pause"): "paused",
    ("running", "resume"): "running",
    ("running", "update_config"): "running",
    ("paused", "start"): "paused",
    ("paused", "stop"): "stopped",
    ("paused", "restart"): "paused",  # a restart keeps the pause
    ("paused", "pause"): "paused",
    ("paused", "resume"): "running",
    ("paused", "update_config"): "paused",
    ("stopped", "start"): "running",
    ("stopped", "stop"): "stopped",
    ("stopped", "update_config"): "stopped",  # the parameters apply when it starts
}
# Verbs that build the strategy afresh (its indicators start over, its position is kept)
REBUILDS: frozenset[Verb] = frozenset({"start", "restart", "update_config"})

class CommandFailed(Exception):
    """The command cannot be carried out; the message is the reason written back to the database."""


class BadCommand(ValueError):
    """A ``control.command`` payload that breaks the contract (no answer can be addressed)."""


def hosted_transition(state: HostedState, verb: Verb) -> HostedState:
    try:
        return HOSTED_TRANSITIONS[state, verb]
    except KeyError:
        raise CommandFailed(f"{verb} needs a strategy that is running or paused; it is {state}") from None


@dataclass(frozen=True)
class Command:
    """One ``control.command`` payload: {command_id, verb, strategy, args, actor, unit, params, kind}.
    ``params`` are the registry's parameters, which a run-time change made (a start and a restart build
    with them); ``kind`` is the registry's kind. Together they build a strategy created at run time
    (``POST /strategies``), which fleet.toml does not declare."""

    id: str
    verb: Verb
    strategy: str
    args: dict[str, Any]
    actor: str
    unit: str
    params: dict[str, Any] | None
    kind: str | None = None

    @classmethod
    def parse(cls, p: dict[str, Any]) -> Command:
        command_id, verb, unit = p.get("command_id"), p.get("verb"), p.get("unit")
        if not isinstance(command_id, str) or not COMMAND_ID.match(command_id):
            raise BadCommand(f"command_id: {command_id!r} is not a command id")
        if verb not in VERBS:
            raise BadCommand(f"verb: {verb!r} is not one of {', '.join(VERBS)}")
        for name in ("strategy", "actor", "unit"):
            if not isinstance(p.get(name), str) or not p[name]:
                raise BadCommand(f"{name}: expected a non-empty string, got {p.get(name)!r}")
        args, params = p.get("args", {}), p.get("params")
        if not isinstance(args, dict) or (params is not None and not isinstance(params, dict)):
            raise BadCommand("args and params must be objects")
        if verb == "update_config" and not isinstance(args.get("params"), dict):
            raise BadCommand('update_config needs args {"params": {...}}')
        kind = p.get("kind")
        if kind is not None and (not isinstance(kind, str) or not kind):
            raise BadCommand(f"kind: expected a non-empty string, got {kind!r}")
        return cls(command_id, cast(Verb, verb), p["strategy"], args, p["actor"], str(unit), params, kind)


@dataclass(frozen=True)
class Outcome:
    status: Literal["executed", "failed"]
    reason: str | None = None


class Executed:
    """The outcomes of the commands this unit applied, by id, oldest forgotten beyond ``limit`` (a
    command is re-sent within its lease, seconds to minutes, so thousands are plenty)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._outcomes: OrderedDict[str, Outcome] = OrderedDict()

    def get(self, command_id: str) -> Outcome | None:
        return self._outcomes.get(command_id)

    def add(self, command_id: str, outcome: Outcome) -> None:
        self._outcomes[command_id] = outcome
        while len(self._outcomes) > self.limit:
            self._outcomes.popitem(last=False)

    def dump(self) -> list[list[str | None]]:
        return [[i, o.status, o.reason] for i, o in self._outcomes.items()]

    def load(self, rows: list[list[str | None]]) -> None:
        for command_id, status, reason in rows:
            if isinstance(command_id, str) and status in ("executed", "failed"):
                self.add(command_id, Outcome(cast(Literal["executed", "failed"], status), reason))
