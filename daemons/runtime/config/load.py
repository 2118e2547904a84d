"""Reading ``fleet.toml``: only a regular file of bounded size, TOML, then the model and the cross-checks."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)
from pydantic_settings import (
    SettingsError,
)

from .checks import cross_check
from .model import _CONTEXT, FleetConfig, _LoadContext
from .problems import ConfigError, Problem, _problem
from .values import DEFAULT_CONFIG_PATH, MAX_CONFIG_BYTES


def resolve_path(explicit: str | os.PathLike[str] | None, environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    return Path(env.get("ALGO_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    credentials_dir: str | os.PathLike[str] | None = None,
) -> FleetConfig:
    """Load, validate and cross-check the fleet config; raise ConfigError listing all problems."""
    file = resolve_path(path)
    try:
        data = tomllib.loads(_read_config_file(file))
    except FileNotFoundError:
        raise ConfigError(str(file), [Problem("<file>", "no such file (set --config or ALGO_CONFIG)")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(file), [Problem("<file>", str(exc))]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), [Problem("<toml>", str(exc))]) from None
    except RecursionError:
        raise ConfigError(str(file), [Problem("<toml>", "arrays or tables nested too deeply")]) from None

    creds = credentials_dir or os.environ.get("CREDENTIALS_DIRECTORY")
    token = _CONTEXT.set(_LoadContext(data, Path(creds) if creds else None))
    try:
        config = FleetConfig()
    except ValidationError as exc:
        raise ConfigError(str(file), [_problem(err) for err in exc.errors()]) from None
    except SettingsError as exc:  # an ALGO_* variable for a table or list that is not JSON
        problem = Problem("<environment>", f"{exc} (an ALGO_* variable is not valid JSON)")
        raise ConfigError(str(file), [problem]) from None
    finally:
        _CONTEXT.reset(token)

    problems = cross_check(config)
    if problems:
        raise ConfigError(str(file), problems)
    return config


def file_kind(mode: int) -> str:
    """What a stat mode says a path is, for messages that refuse it."""
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symlink"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))
    return next((what for test, what in kinds if test(mode)), "an unknown kind of file")


def _read_config_file(file: Path) -> str:
    """Only a regular file: a FIFO would block the read forever, a device could be endless (or arm a
    watchdog by being opened), so they are refused before opening, and again on what was opened."""
    _require_regular(file, file.stat())
    fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        _require_regular(file, os.fstat(fd))  # replaced between the check and the open
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(str(file), [Problem("<file>", f"is larger than {MAX_CONFIG_BYTES >> 20} MiB")])
    return raw.decode()


def _require_regular(file: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(str(file), [Problem("<file>", f"is {file_kind(st.st_mode)}, not a regular file")])


def redacted(config: FleetConfig) -> dict[str, Any]:
    """The effective config as plain data, for `algoctl config show`: SecretStr dumps as '**********'."""
    return config.model_dump(mode="json")
