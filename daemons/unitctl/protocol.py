"""The helper's one-line protocol, both ends: ``VERB NAME\n`` in, ``ok``, ``refused: WHY`` or
``failed: WHY`` out. What may be asked is decided here, and only here: a verb of ``UNIT_VERBS`` and the
name of a strategy fleet.toml declares with ``process = "own"``; the unit is built from them, never
taken from the request."""

from __future__ import annotations

import re
import socket
from typing import Literal, get_args

from ..runtime.config import FleetConfig

UnitVerb = Literal["start", "stop", "restart"]
UNIT_VERBS: tuple[UnitVerb, ...] = get_args(UnitVerb)
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")  # a strategy name, as the config accepts it
MAX_REQUEST = 128


class Refused(ValueError):
    """A request for anything but start|stop|restart of an own-process strategy's unit."""


class UnitFailed(RuntimeError):
    """The helper answered, and the unit did not do what was asked (the reason is systemctl's)."""


class HelperUnavailable(OSError):
    """The helper could not be reached or did not answer: nothing is known to have happened."""


def own_strategies(config: FleetConfig) -> frozenset[str]:
    """The strategies fleet.toml runs in their own process, enabled or not (a command may start one)."""
    return frozenset(s.name for _, section in config.daemons.engines() for s in section.strategies if s.process == "own")


def parse(line: bytes, allowed: frozenset[str]) -> tuple[UnitVerb, str]:
    """(verb, unit) for a request line; Refused says why anything else is refused."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise Refused("not ASCII") from None
    parts = text.removesuffix("\n").split(" ")
    if len(parts) != 2:
        raise Refused("expected 'VERB NAME'")
    verb, name = parts
    if verb not in UNIT_VERBS:
        raise Refused(f"verb {verb[:16]!r} is not one of {', '.join(UNIT_VERBS)}")
    if not NAME.match(name):
        raise Refused(f"{name[:40]!r} is not a strategy name")
    if name not in allowed:
        raise Refused(f"{name!r} is not a strategy fleet.toml runs in its own process")
    return verb, f"algo-strategy@{name}.service"


def request(path: str, verb: UnitVerb, name: str, timeout: float) -> None:
    """Ask the helper at ``path``; returns once the unit did it. UnitFailed or Refused with the helper's
    reason, HelperUnavailable when there was no answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(f"{verb} {name}\n".encode())
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        raise HelperUnavailable(f"algo-unitctl at {path}: {exc}") from None
    answer = reply.decode(errors="replace").strip()
    if answer == "ok":
        return
    if answer.startswith("refused: "):
        raise Refused(answer.removeprefix("refused: "))
    if answer.startswith("failed: "):
        raise UnitFailed(answer.removeprefix("failed: "))
    raise HelperUnavailable(f"algo-unitctl at {path} answered {answer[:80]!r}")
