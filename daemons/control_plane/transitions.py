"""What a command may do to a strategy, and to itself: two explicit tables, nothing decided elsewhere.

A strategy's desired state is what the operator asked for last (the engine that hosts it reports what it
does); a verb the table does not hold for the state the command meets is refused with the reason.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

State = Literal["running", "paused", "stopped"]
Verb = Literal["start", "stop", "restart", "pause", "resume", "update_config"]
Status = Literal["pending", "executed", "failed"]

# A command's id: the client's idempotency key, and how the unit that carries it out recognises a re-send
COMMAND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")

STATES: tuple[State, ...] = get_args(State)
VERBS: tuple[Verb, ...] = get_args(Verb)
STATUSES: tuple[Status, ...] = get_args(Status)

# (desired state, verb) -> desired state after the command has run
STRATEGY_TRANSITIONS: dict[tuple[State, Verb], State] = {
    ("stopped", "start"): "running",
    ("running", "stop"): "stopped",
    ("paused", "stop"): "stopped",
    ("running", "restart"): "running",
    ("paused", "restart"): "paused",  # a restart keeps the pause (the engine checkpoints it)
    ("running", "pause"): "paused",
    ("paused", "resume"): "running",
    ("running", "update_config"): "running",
    ("paused", "update_config"): "paused",
    ("stopped", "update_config"): "stopped",  # the new parameters apply at the next start
}

# (status, outcome) -> status: a command runs once; executed and failed lead nowhere
COMMAND_TRANSITIONS: dict[tuple[Status, Literal["executed", "failed"]], Status] = {
    ("pending", "executed"): "executed",
    ("pending", "failed"): "failed",
}


class Refused(ValueError):
    """A command the tables do not allow, with the reason an operator reads."""


def next_state(state: State, verb: Verb) -> State:
    """The desired state after ``verb``; Refused names the states the verb needs."""
    try:
        return STRATEGY_TRANSITIONS[state, verb]
    except KeyError:
        allowed = sorted(s for s, v in STRATEGY_TRANSITIONS if v == verb)
        raise Refused(f"{verb} needs a strategy that is {' or '.join(allowed)}; it is {state}") from None


def next_status(status: Status, outcome: Literal["executed", "failed"]) -> Status:
    try:
        return COMMAND_TRANSITIONS[status, outcome]
    except KeyError:
        raise Refused(f"the command is already {status}: a command runs once") from None
