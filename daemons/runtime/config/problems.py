"""How a config is refused: every problem with its dotted path, so an operator fixes them all at once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """Every problem found in a config, each with its dotted path."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(map(str, problems)))


def _problem(err: Any) -> Problem:
    path = ".".join(str(p) for p in err["loc"]) or "<root>"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required"
    elif "input" in err and err["type"] not in ("model_type", "dict_type", "secret_in_url"):
        msg = f"{msg} (got {err['input']!r})"
    return Problem(path, msg)
