"""Hostile config values: every one refused with its dotted path and exit 78, never a traceback or a
hang, and never a limit risk cannot compare against (a NaN loss limit would disable the kill switch)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import os
import random
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from datetime import date, time
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from daemons.algoctl.main import main as algoctl_main
from daemons.runtime.config import ConfigError, FleetConfig, RiskSection, load_config
from tests.conftest import REPO

PAPER = REPO / "configs" / "paper.toml"
HUGE = str(2**70)

RISK_STRATEGY = '[[daemons.equity.strategies]]\nname = "rsi-infy"\nkind = "rsi_reversion"\n'
EMA = '[[daemons.fno.strategies]]\nname = "ema-x"\nkind = "ema_crossover"\nparams = { underlying = "NIFTY", '

# (TOML, the dotted path the refusal must name)
BAD_VALUES = [
    ("[daemons.risk]\nfleet_daily_loss_limit = nan", "daemons.risk.fleet_daily_loss_limit"),
    ("[daemons.risk]\nfleet_daily_loss_limit = inf", "daemons.risk.fleet_daily_loss_limit"),
    ("[daemons.risk]\nfleet_daily_loss_limit = -inf", "daemons.risk.fleet_daily_loss_limit"),
    ("[daemons.risk]\nfleet_daily_loss_limit = 1e300", "daemons.risk.fleet_daily_loss_limit"),
    ("[daemons.risk]\nmax_notional = inf", "daemons.risk.max_notional"),
    ("[daemons.risk]\nmax_order_value = nan", "daemons.risk.max_order_value"),
    (f"[daemons.risk]\nmax_quantity = {HUGE}", "daemons.risk.max_quantity"),
    ("[daemons.risk]\nmax_quantity = true", "daemons.risk.max_quantity"),
    ("[daemons.risk]\nmax_open_positions = true", "daemons.risk.max_open_positions"),
    ("[daemons.risk]\norders_per_second = true", "daemons.risk.orders_per_second"),
    ("[daemons.risk]\ndaily_loss_limit = { fno = -5000.0 }", "daemons.risk.daily_loss_limit.fno"),
    ("[daemons.risk]\ndaily_loss_limit = { fno = nan }", "daemons.risk.daily_loss_limit.fno"),
    ("[daemons.risk]\ndaily_loss_limit = { fno = inf }", "daemons.risk.daily_loss_limit.fno"),
    ("[daemons.risk]\ndaily_loss_limit = { fno = 0.0 }", "daemons.risk.daily_loss_limit.fno"),
    ("[daemons.risk]\ndaily_loss_limit = { fno = true }", "daemons.risk.daily_loss_limit.fno"),
    ("[daemons.risk]\nmax_quantity_by_symbol = { INFY = -1 }", "daemons.risk.max_quantity_by_symbol.INFY"),
    ("[daemons.risk]\nmax_quantity_by_symbol = { INFY = true }", "daemons.risk.max_quantity_by_symbol.INFY"),
    (f"[daemons.risk]\nmax_quantity_by_symbol = {{ INFY = {HUGE} }}", "daemons.risk.max_quantity_by_symbol.INFY"),
    ("[daemons.risk]\nmax_quantity_by_symbol = { INFY = 1.5 }", "daemons.risk.max_quantity_by_symbol.INFY"),
    ("[daemons.risk]\nstrategy_daily_loss_limit = { rsi-infy = -1.0 }",
     "daemons.risk.strategy_daily_loss_limit.rsi-infy"),
    ("[daemons.risk]\nstrategy_daily_loss_limit = { rsi-infy = nan }",
     "daemons.risk.strategy_daily_loss_limit.rsi-infy"),
    ("[market]\nopen = 16:00:00\nclose = 15:30:00", "market.close"),
    ("[market]\nopen = 09:15:00\nclose = 09:15:00", "market.close"),
    ("[daemons.risk]\nholidays = [2026-12-25]", "daemons.risk"),  # moved to [market]: said so
    ("[daemons.execution]\norders_per_day = true", "daemons.execution.orders_per_day"),
    ("[daemons.execution]\nslippage_bps = nan", "daemons.execution.slippage_bps"),
    ("[daemons.heartbeat]\ninterval_sec = nan", "daemons.heartbeat.interval_sec"),
    ("[daemons.heartbeat]\nmax_bus_outage_sec = true", "daemons.heartbeat.max_bus_outage_sec"),
    ("[daemons.fno]\nmetrics_port = true", "daemons.fno.metrics_port"),
    (f"[daemons.marketdata]\nseed = {HUGE}", "daemons.marketdata.seed"),
    ("[daemons.marketdata]\nseed = true", "daemons.marketdata.seed"),
    ("[daemons.marketdata]\nsession_minutes = inf", "daemons.marketdata.session_minutes"),
    ('[[daemons.marketdata.derivatives]]\nunderlying = "NIFTY 50"\nlot_size = true\nstep = 50.0',
     "daemons.marketdata.derivatives.0.lot_size"),
    ('[[daemons.marketdata.derivatives]]\nunderlying = "NIFTY 50"\nlot_size = 75\nstep = nan',
     "daemons.marketdata.derivatives.0.step"),
    ("[bus]\nmax_frame_bytes = true", "bus.max_frame_bytes"),
    ("[bus]\nreconnect_max_sec = inf", "bus.reconnect_max_sec"),
    ("[premarket]\nmin_free_mb = true", "premarket.min_free_mb"),
    (f"[premarket]\nmin_free_mb = {HUGE}", "premarket.min_free_mb"),
    ("[kite]\nmax_connections = true", "kite.max_connections"),
    (EMA + "quantity = 75, fast = 9, slow = nan }", "daemons.fno.strategies.0.params.slow"),
    (EMA + "quantity = 75, fast = inf, slow = 21 }", "daemons.fno.strategies.0.params.fast"),
    (EMA + f"quantity = {HUGE}, fast = 9, slow = 21 }}", "daemons.fno.strategies.0.params.quantity"),
    (EMA + "quantity = true, fast = 9, slow = 21 }", "daemons.fno.strategies.0"),
    (RISK_STRATEGY + 'params = { symbol = "INFY", quantity = 10, period = true }', "daemons.equity.strategies.0"),
    (RISK_STRATEGY + 'params = { symbol = "INFY", quantity = 10, oversold = nan, exit_above = 55.0 }',
     "daemons.equity.strategies.0.params.oversold"),
    (RISK_STRATEGY + 'params = { symbol = "INFY", quantity = 10, oversold = 30.0, exit_above = [1.0, -inf] }',
     "daemons.equity.strategies.0.params.exit_above"),
]


def validate(path: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemons.algoctl", "config", "validate", str(path)],
                          check=False, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.parametrize(("toml", "dotted"), BAD_VALUES, ids=[f"{d}={t.split('=')[-1].strip()[:24]}"
                                                              for t, d in BAD_VALUES])
def test_validate_refuses_each_bad_value_naming_its_path(toml: str, dotted: str, tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(toml + "\n")
    result = validate(config)
    assert result.returncode == 78, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"  {dotted}: " in result.stderr, result.stderr


def test_hours_or_holidays_left_in_the_risk_section_say_where_they_went(tmp_path: Path) -> None:
    """A fleet.toml from before [market]: refused with where the keys live now, not as unknown keys."""
    path = tmp_path / "fleet.toml"
    path.write_text("[daemons.risk]\nopen = 09:15:00\nholidays = [2026-12-25]\n")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    [problem] = refused.value.problems
    assert problem.path == "daemons.risk" and "holidays, open moved to [market]" in problem.message


def test_a_fifo_as_the_config_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fleet.toml"
    os.mkfifo(fifo)
    result = validate(fifo, timeout=20)  # today's read blocks until a writer appears: forever
    assert result.returncode == 78
    assert "<file>: is a FIFO, not a regular file" in result.stderr


@pytest.mark.parametrize(("path", "kind"), [("/dev/zero", "a character device"), ("/tmp", "a directory")])
def test_a_device_or_directory_as_the_config_is_refused(path: str, kind: str) -> None:
    result = validate(Path(path), timeout=20)  # /dev/zero would be read until memory runs out
    assert result.returncode == 78
    assert f"<file>: is {kind}, not a regular file" in result.stderr


def test_a_daemon_refuses_a_nan_limit_at_start_with_exit_78(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text("[daemons.risk]\ndaily_loss_limit = { fno = nan }\n")
    result = subprocess.run([sys.executable, "-m", "daemons.risk", "--config", str(config)],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert "daemons.risk.daily_loss_limit.fno" in result.stderr and "Traceback" not in result.stderr


def test_a_daemon_started_on_a_fifo_exits_78(tmp_path: Path) -> None:
    fifo = tmp_path / "fleet.toml"
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, "-m", "daemons.heartbeat", "--config", str(fifo)],
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 78 and "is a FIFO" in result.stderr


# -- risk never holds a limit it cannot compare against -----------------------------------------------

RISK_LIMITS = ["max_notional", "max_order_value", "fleet_daily_loss_limit", "orders_per_second", "price_band_pct"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1.0, 0.0, True])
def test_risk_section_refuses_limits_it_cannot_enforce(value: float) -> None:
    for field in RISK_LIMITS:
        with pytest.raises(ValueError):
            RiskSection.model_validate({field: value})
    for table in ("daily_loss_limit", "strategy_daily_loss_limit"):
        with pytest.raises(ValueError):
            RiskSection.model_validate({table: {"fno": value}})
    with pytest.raises(ValueError):
        RiskSection.model_validate({"max_quantity_by_symbol": {"INFY": value}})


@pytest.mark.parametrize("env", [
    {"ALGO_DAEMONS__RISK__FLEET_DAILY_LOSS_LIMIT": "nan"},
    {"ALGO_DAEMONS__RISK__FLEET_DAILY_LOSS_LIMIT": "-inf"},
    {"ALGO_DAEMONS__RISK__DAILY_LOSS_LIMIT": '{"fno": NaN}'},
    {"ALGO_DAEMONS__RISK__STRATEGY_DAILY_LOSS_LIMIT": '{"rsi-infy": Infinity}'},
    {"ALGO_DAEMONS__RISK__MAX_QUANTITY_BY_SYMBOL": '{"INFY": true}'},
])
def test_no_route_gives_risk_a_nan_limit(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text("")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert err.value.problems[0].path.startswith(next(iter(env)).removeprefix("ALGO_").replace("__", ".").lower())


def test_a_reload_with_a_nan_loss_limit_is_rejected_and_risk_keeps_its_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemons.risk.main import RiskDaemon
    from daemons.runtime.daemon import Runner
    from daemons.runtime.metrics import DaemonMetrics
    from daemons.runtime.notify import Notifier

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    config = tmp_path / "fleet.toml"
    config.write_text("[daemons.risk]\ndaily_loss_limit = { equity = 1000.0 }\n")
    risk = RiskDaemon(load_config(config), DaemonMetrics("risk"))
    runner = Runner(risk, Notifier(), str(config))
    config.write_text("[daemons.risk]\ndaily_loss_limit = { equity = nan }\n")
    asyncio.run(runner.reload())
    assert risk.rules.limits.daily_loss_limit == {"equity": 1000.0}
    config.unlink()
    os.mkfifo(config)  # the reload must not block the event loop (and so the watchdog) on it
    with deadline(10):
        asyncio.run(runner.reload())
    assert risk.rules.limits.daily_loss_limit == {"equity": 1000.0}
    assert risk.metrics.registry.get_sample_value("algo_config_reloads_total", {"result": "rejected"}) == 2
    risk.rules.mark("INFY", 1000.0, 0)
    risk.rules.book.fill("equity", "INFY", "BUY", 10, 1000.0)
    risk.rules.mark("INFY", 800.0, 0)  # -2,000: the limit of 1,000 still bites
    assert risk.rules.loss_breach("equity") == "equity daily loss -2,000 breached its limit 1,000"


# -- fuzz: paper.toml with its values mutated -----------------------------------------------------------

class Deep:
    """Arrays nested deeper than a recursive TOML parser can follow."""

    toml = "[" * 3000 + "]" * 3000


HOSTILE: list[Any] = [
    math.nan, math.inf, -math.inf, 2**64, -(2**63) - 1, 2**63 - 1, 10**400, -1, 0, 1, -0.0, 1e308, 5e-324, True,
    False, "", "x" * 5000, "nan", "\u202e\U0001f4a5", [], [math.nan], {}, {"a": math.nan},
    {"nested": {"deep": [1, "2"]}}, date(1, 1, 1), time(23, 59, 59), [[[[]]]], Deep(),
]


def leaves(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every value's path, whole tables included (a section replaced by a number is hostile too)."""
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        for i, value in enumerate(node):
            yield from leaves(value, (*path, i))


def toml_value(v: Any) -> str:
    if isinstance(v, Deep):
        return v.toml
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, (int, date, time)):
        return v.isoformat() if isinstance(v, (date, time)) else str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(map(toml_value, v)) + "]"
    return "{ " + ", ".join(f'"{k}" = {toml_value(x)}' for k, x in v.items()) + " }"


def toml_document(data: dict[str, Any]) -> str:
    """Every table inline under its dotted key: enough TOML for any tree tomllib gives back."""
    return "".join(f'"{key}" = {toml_value(value)}\n' for key, value in data.items())


def mutate(base: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    data: dict[str, Any] = _copy(base)
    paths = list(leaves(data))
    for path in rng.sample(paths, rng.randint(1, 3)):
        node: Any = data
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = rng.choice(HOSTILE)
        except (KeyError, IndexError, TypeError):
            pass  # under a table this mutation already replaced
    return data


def _copy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def hung(signum: int, frame: FrameType | None) -> None:
        raise AssertionError(f"validate hung for {seconds}s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def validate_in_process(path: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            algoctl_main(["config", "validate", str(path)])
        except SystemExit as exc:
            return int(exc.code or 0), err.getvalue()
    return 0, err.getvalue()


@pytest.mark.parametrize("seed", range(4))
def test_validate_of_a_mutated_paper_config_exits_0_or_78_and_never_hangs(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    base = tomllib.loads(PAPER.read_text())
    config = tmp_path / "fleet.toml"
    codes = []
    for _ in range(60):
        config.write_text(toml_document(mutate(base, rng)))
        with deadline(20):
            code, stderr = validate_in_process(config)  # an exception here is the traceback validate must never show
        assert code in (0, 78), stderr
        if code == 78:
            assert all(": " in line for line in stderr.splitlines()[1:]), stderr
        codes.append(code)
    assert codes.count(78) > 30  # the pool is hostile: most mutations must be refused


def test_the_real_cli_survives_mutated_configs(tmp_path: Path) -> None:
    rng = random.Random(99)
    base = tomllib.loads(PAPER.read_text())
    for i in range(6):
        config = tmp_path / f"fleet-{i}.toml"
        config.write_text(toml_document(mutate(base, rng)))
        result = validate(config, timeout=60)
        assert result.returncode in (0, 78) and "Traceback" not in result.stderr, result.stderr


def test_the_fuzzer_writes_toml_that_round_trips() -> None:
    base = tomllib.loads(PAPER.read_text())
    assert tomllib.loads(toml_document(base)) == base
    assert FleetConfig.model_validate(base).daemons.risk.daily_loss_limit["fno"] == 20000.0


def test_an_environment_table_that_is_not_json_is_a_config_error(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text("")
    monkeypatch.setenv("ALGO_DAEMONS__RISK__DAILY_LOSS_LIMIT", "{fno: 5")
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert err.value.problems[0].path == "<environment>"
