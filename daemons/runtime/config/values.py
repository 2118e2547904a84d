"""The value types of the fleet's config: what every section's keys share (finite numbers that fit in 64 bits,
money, quantities, counts, clock times on the market's clock, socket paths), and ``Section``, the base that
refuses unknown keys."""

from __future__ import annotations

import math
import os
from datetime import time
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError

DEFAULT_CONFIG_PATH = Path("/etc/algo/fleet.toml")


MAX_CONFIG_BYTES = 4 << 20  # a fleet config is a few KiB


INT64 = (-(2**63), 2**63 - 1)  # what orjson, Prometheus and the bus carry


def _not_bool(value: Any) -> Any:
    """TOML's true/false are not numbers, though pydantic would read true as 1."""
    if isinstance(value, bool):
        raise PydanticCustomError("bool_not_number", "must be a number, not true/false")
    return value


def _finite_param(value: Any) -> Any:
    """Strategy parameters are free-form, but a NaN, an infinity or a 65-bit int in one is never meant."""
    problem = _number_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _number_problem(value: Any, where: str = "") -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where}must be a finite number"
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        return f"{where}must fit in 64 bits"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return next((p for key, item in items if (p := _number_problem(item, f"{where}{key}: ")) is not None), None)


# Limits risk compares against: positive, finite (allow_inf_nan=False below), never a boolean. A NaN
# loss limit would never trigger (pnl <= -nan is false) and silently disable the kill switch.
Money = Annotated[float, BeforeValidator(_not_bool), Field(gt=0, le=1e12)]  # rupees


Quantity = Annotated[int, BeforeValidator(_not_bool), Field(gt=0, le=10**9)]  # units of an instrument


Count = Annotated[int, BeforeValidator(_not_bool), Field(gt=0, le=10**6)]


StrategyParam = Annotated[Any, AfterValidator(_finite_param)]


def _clock_time(value: Any) -> Any:
    """A wall-clock time as TOML (09:15:00) or text writes it; pydantic would read 0 as midnight UTC."""
    if not isinstance(value, (time, str)):
        raise PydanticCustomError("clock_time", "must be a time of day such as 09:15:00")
    return value


def _local(value: time) -> time:
    if value.tzinfo is not None:
        raise PydanticCustomError("clock_time", "must be a time of day in IST, without an offset")
    return value


ClockTime = Annotated[time, BeforeValidator(_clock_time), AfterValidator(_local)]  # IST, the market's clock


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored; numbers are finite,
    fit in 64 bits, and true/false is accepted only where the field is a boolean."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="wrap")
    @classmethod
    def _strict_numbers(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        annotation = cls.model_fields[info.field_name].annotation if info.field_name else None
        if {int, float} & {annotation, *get_args(annotation)}:
            _not_bool(value)
        result = handler(value)
        if type(result) is int and not INT64[0] <= result <= INT64[1]:
            raise ValueError("must fit in 64 bits")
        return result


def _socket_path(v: Path) -> Path:
    if not v.is_absolute():
        raise ValueError("must be an absolute path")
    if len(os.fsencode(v)) > 107:
        raise ValueError("is longer than the 107 bytes a Unix socket path may have")
    return v


SocketPath = Annotated[Path, AfterValidator(_socket_path)]
