"""The fleet's one declarative config: a pydantic-settings model tree loaded from TOML.

Precedence, highest first: ``ALGO_*`` environment variables (nested with ``__``, e.g.
``ALGO_DAEMONS__HEARTBEAT__INTERVAL_SEC=0.5``), systemd credentials in
``$CREDENTIALS_DIRECTORY`` (secrets only), the TOML file, the defaults below.
Every problem is reported with its dotted path so an operator can fix all of them at once.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
import tomllib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

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


class MarketSection(Section):
    """The exchange's session, one place for every daemon that reads the market's time: risk's trading hours
    (judged on the market's clock, the tick time), the live feed's market hours (when silence is an incident),
    and the paper market's session and default day."""

    open: ClockTime = time(9, 15)  # IST
    close: ClockTime = time(15, 30)
    holidays: list[date] = []  # NSE trading holidays: weekdays without a session

    @field_validator("close")
    @classmethod
    def _after_open(cls, v: time, info: ValidationInfo) -> time:
        opens = info.data.get("open")
        if opens is not None and v <= opens:
            raise ValueError(f"must be after open ({opens})")
        return v

    @property
    def seconds(self) -> int:
        """The session's length."""
        return (self.close.hour * 3600 + self.close.minute * 60 + self.close.second
                - self.open.hour * 3600 - self.open.minute * 60 - self.open.second)


MOVED_TO_MARKET = frozenset(MarketSection.model_fields)  # once in [daemons.risk]
NSE_HOURS = MarketSection()  # the default: NSE's session, no holidays


class FleetSection(Section):
    mode: Literal["paper", "live"] = "paper"
    user: str = Field("algo", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    group: str = Field("algo", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # This host's name in a multi-host fleet: heartbeats carry it, and the daemons every host runs (algo-heartbeat,
    # algo-bridge) take it into their bus source ("heartbeat@a") so they cross bridges without clashing.
    # '': one host, the machine's hostname in heartbeats and plain source names.
    host: str = Field("", pattern=r"^[a-z0-9_.-]{0,64}$")
    # The [daemons.*] daemons this host runs in a multi-host fleet (bus and heartbeat always among them); the
    # other sections still describe the fleet (risk reads the engines' strategies). []: every daemon (one host).
    daemons: list[Annotated[str, Field(pattern=r"^[a-z]{1,32}$")]] = []


def _socket_path(v: Path) -> Path:
    if not v.is_absolute():
        raise ValueError("must be an absolute path")
    if len(os.fsencode(v)) > 107:
        raise ValueError("is longer than the 107 bytes a Unix socket path may have")
    return v


SocketPath = Annotated[Path, AfterValidator(_socket_path)]


class BusSection(Section):
    transport: Literal["unix"] = "unix"
    socket: SocketPath = Path("/run/algo/bus.sock")
    max_frame_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    # Bytes queued for one subscriber before it is treated as slow (conflate / disconnect).
    subscriber_buffer_bytes: int = Field(8 << 20, ge=64 << 10, le=1 << 30)
    # Bytes a client holds for the broker while disconnected or while the broker is slow.
    publish_buffer_bytes: int = Field(8 << 20, ge=64 << 10, le=1 << 30)
    reconnect_min_sec: float = Field(0.02, gt=0, le=5)
    reconnect_max_sec: float = Field(1.0, gt=0, le=60)


class MetricsSection(Section):
    bind: str = "127.0.0.1"

    @field_validator("bind")
    @classmethod
    def _loopback(cls, v: str) -> str:
        try:
            ok = ipaddress.ip_address(v).is_loopback
        except ValueError as exc:
            raise ValueError(f"{v!r} is not an IP address") from exc
        if not ok:
            raise ValueError(f"{v} is not a loopback address; expose metrics through a proxy instead")
        return v


class DaemonSection(Section):
    metrics_port: int = Field(ge=1024, le=65535)
    # How long a daemon may spend draining after SIGTERM; keep below the unit's TimeoutStopSec.
    stop_timeout_sec: float = Field(5.0, gt=0, le=60)
    status_interval_sec: float = Field(2.0, gt=0, le=60)


class BusDaemonSection(DaemonSection):
    metrics_port: int = Field(9470, ge=1024, le=65535)


class HeartbeatSection(DaemonSection):
    metrics_port: int = Field(9471, ge=1024, le=65535)
    # How often every daemon publishes health.heartbeat (and algo-heartbeat looks for silent ones).
    interval_sec: float = Field(1.0, ge=0.01, le=60)
    # Health fails (and the watchdog stops being fed) after the bus was unreachable this long.
    max_bus_outage_sec: float = Field(10.0, ge=0.1, le=3600)
    # A daemon with no heartbeat for this long is flagged silent (at least twice interval_sec).
    silent_after_sec: float = Field(5.0, gt=0, le=3600)
    # Other hosts of a multi-host fleet and their units to expect (their heartbeats come over the bridges):
    # {"b" = ["algo-risk", "algo-execution", "algo-heartbeat", "algo-bridge"]}, watched from algo-heartbeat's start.
    hosts: dict[Annotated[str, Field(pattern=r"^[a-z0-9_.-]{1,64}$")],
                list[Annotated[str, Field(pattern=r"^algo-[a-z0-9_@.-]{1,64}$")]]] = {}


class DerivativesSection(Section):
    """Contracts listed each session on one underlying of the paper universe."""

    underlying: str  # tradingsymbol of the spot in the instruments dump, e.g. "NIFTY 50"
    lot_size: int = Field(gt=0, le=100_000)
    strikes: int = Field(5, ge=0, le=50)  # either side of the money
    step: float = Field(gt=0)  # strike interval


class MarketdataSection(DaemonSection):
    metrics_port: int = Field(9472, ge=1024, le=65535)
    feed: Literal["simulator", "replay", "kite"] = "simulator"
    # kite (live): the instruments to stream, as Kite names them ("NSE:INFY", "NFO:NIFTY26NOVFUT",
    # "INDICES:NIFTY 50"), resolved to tokens through the day's instruments dump
    universe: list[str] = []
    ticker_mode: Literal["ltp", "quote", "full"] = "full"
    stale_after_sec: float = Field(10.0, gt=0, le=600)  # no tick this long in market hours: reconnect, unhealthy
    # replay: a journal day (its directory or events.jsonl) or a tick CSV, paced by its own clock
    replay_from: Path | None = None
    replay_speed: float = Field(1.0, gt=0, le=10_000)  # 1 = as recorded
    instruments: Path = Path("/etc/algo/instruments/paper.csv")  # a Kite instruments dump
    derivatives: list[DerivativesSection] = []
    seed: int = 1
    session_date: date | None = None  # default: today in IST
    session_minutes: float = Field(10.0, gt=0, le=375)  # 375 = the real 09:15-15:30 session
    steps_per_second: float = Field(2.0, gt=0, le=1000)  # each step ticks every instrument once
    # false: a step's ticks go out back to back (a burst per step); true: spread evenly over the step,
    # as a real feed delivers a market's ticks (what bench/pipeline calls a steady feed)
    spread_steps: bool = False
    # Candles and features (daemons/features): bars of this many seconds of exchange time, aligned from
    # midnight IST (so a whole number of them fits in a day), and the indicators' lengths in bars.
    features: bool = True  # publish marketdata.ohlc and features.bar, answer features.sync
    bar_seconds: int = Field(60, ge=1, le=3600)
    feature_history: int = Field(120, ge=1, le=2000)  # bars kept per symbol for features.snapshot
    ema_fast_bars: int = Field(12, ge=1, le=1000)
    ema_slow_bars: int = Field(26, ge=1, le=1000)
    rsi_bars: int = Field(14, ge=1, le=1000)
    atr_bars: int = Field(14, ge=1, le=1000)
    volatility_bars: int = Field(20, ge=2, le=1000)

    @field_validator("bar_seconds")
    @classmethod
    def _bars_fit_a_day(cls, value: int) -> int:
        if 86_400 % value:
            raise ValueError("must divide a day (86400 s) into whole bars, e.g. 60, 300, 900")
        return value


class StrategySection(Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")  # unique in the fleet: journald's STRATEGY=
    kind: str  # see daemons/engine/strategies: ema_crossover, rsi_reversion, short_straddle, model
    enabled: bool = True
    params: dict[str, StrategyParam] = {}
    # "own": run by algo-strategy@NAME in a process of its own (and skipped by its engine)
    process: Literal["engine", "own"] = "engine"
    metrics_port: int | None = Field(None, ge=1024, le=65535)  # required with process = "own"


class EngineSection(DaemonSection):
    strategies: list[StrategySection] = []
    checkpoint_sec: float = Field(30.0, gt=0, le=3600)  # state is also checkpointed on stop
    # A strategy whose calls raise this many times within the window is disabled for entries
    # (exits still go out) until `algoctl resume`.
    strategy_error_limit: int = Field(5, ge=1, le=1000)
    strategy_error_window_sec: float = Field(60.0, gt=0, le=86400)


class FnoSection(EngineSection):
    metrics_port: int = Field(9473, ge=1024, le=65535)


class EquitySection(EngineSection):
    metrics_port: int = Field(9474, ge=1024, le=65535)


class OptionsSection(EngineSection):
    metrics_port: int = Field(9475, ge=1024, le=65535)


class RiskSection(DaemonSection):
    metrics_port: int = Field(9476, ge=1024, le=65535)
    max_quantity: Quantity = 1800  # net position per symbol, fleet-wide
    max_quantity_by_symbol: dict[str, Quantity] = {}  # overrides, e.g. {"INFY" = 500}
    max_notional: Money = 5_000_000.0  # net position value per symbol
    max_open_positions: Count = 10
    max_order_value: Money = 2_000_000.0
    orders_per_second: float = Field(10.0, gt=0, le=10)  # fleet-wide; Kite allows 10/s
    price_band_pct: float = Field(2.0, gt=0, le=20)  # a limit price this far from the last price is refused
    daily_loss_limit: dict[str, Money] = {}  # per engine, rupees, positive; breaching engages the kill switch
    fleet_daily_loss_limit: Money = 50_000.0
    # per strategy, rupees: a breach blocks that strategy's entries (the others trade on)
    strategy_daily_loss_limit: dict[str, Money] = {}
    flatten_on_kill_switch: bool = False
    # A shadow of risk decides a made-up signal this often, so a real one finds its code warm (runtime/rehearsal.py);
    # 0: never
    rehearse_ms: float = Field(2.0, ge=0, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _hours_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and (moved := sorted(MOVED_TO_MARKET & data.keys())):
            raise ValueError(f"{', '.join(moved)} moved to [market]: the session's hours and holidays are the whole "
                             "fleet's (the feed reads them too), not risk's")
        return data


class MarginSection(Section):
    """Margin checked before an order is sent (daemons/execution/margin.py). Paper: the model below,
    SPAN-like percentages of notional per segment against ``funds``; live: Kite's order-margins API
    against the account's available margin (the percentages and funds are then not used)."""

    check: bool = True  # false: no margin check (Kite's RMS still rejects what the account cannot carry)
    funds: Money = 10_000_000.0  # paper: the account's funds, rupees
    equity_pct: float = Field(20.0, gt=0, le=100)  # EQ (intraday MIS: 5x leverage)
    futures_pct: float = Field(12.0, gt=0, le=100)  # FUT: SPAN + exposure, of the contract's notional
    option_short_pct: float = Field(12.0, gt=0, le=100)  # a sold CE/PE: of strike x quantity (the underlying's notional)
    # a bought CE/PE needs its premium: 100% of price x quantity, not configurable


class RedisLogin(Section):
    """How a daemon reaches Redis: where, as which ACL user, with which systemd credential, within what deadline.
    Shared by the bridge and execution's lease (docs/ARCHITECTURE.md, Bridge and Execution)."""

    # unix:///run/redis/redis.sock, redis://HOST:PORT, or rediss://HOST:PORT (TLS, verified against tls_ca_file)
    redis_url: str = Field(pattern=r"^(unix|redis|rediss)://\S+$")
    username: str = Field("algo", pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # the Redis ACL user
    # The systemd credential (LoadCredential= in the daemon's unit) holding that user's password
    password_credential: str = Field("algo_redis_password", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    tls_ca_file: Path | None = None  # rediss:// only: the CA that signed Redis's certificate
    socket_timeout_sec: float = Field(5.0, gt=0, le=60)  # a Redis call's deadline: a partition errs, never stalls

    @field_validator("tls_ca_file")
    @classmethod
    def _tls_only(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is not None and not str(info.data.get("redis_url", "")).startswith("rediss://"):
            raise ValueError("is for a rediss:// (TLS) redis_url")
        if v is not None and not v.is_absolute():
            raise ValueError("must be an absolute path")
        return v


class ExecutionLease(RedisLogin):
    """``[daemons.execution.lease]``: one active algo-execution per broker account across hosts, the others
    standing by (docs/ARCHITECTURE.md, Execution, "One execution per account"). Absent: a single host's."""

    # Names the lease: one per API key / broker account (its keys: <key_prefix>lease:execution:<account>)
    account: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    key_prefix: str = Field("algo:", pattern=r"^[A-Za-z0-9_.:-]{1,32}$")  # the ACL's key pattern (~algo:lease:*)
    username: str = Field("algo-execution", pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # the Redis ACL user (see ARCHITECTURE)
    password_credential: str = Field("algo_execution_redis_password", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    holder: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$")  # this host's name in the lease ('': the hostname)
    ttl_sec: float = Field(5.0, ge=0.5, le=300)  # a holder that stops renewing loses the lease this long after
    # No order is sent unless the lease is ours for longer than this: above the worst time one send takes
    # (Kite's place call with its retries; the paper broker's is a file append) plus clock-rate drift.
    margin_sec: float = Field(1.0, gt=0, le=60)
    socket_timeout_sec: float = Field(1.0, gt=0, le=60)  # a renewal's deadline: below ttl_sec - margin_sec

    @model_validator(mode="after")
    def _margin_below_ttl(self) -> ExecutionLease:
        if self.margin_sec >= self.ttl_sec / 2:
            raise ValueError(f"margin_sec ({self.margin_sec:g}) must be below half of ttl_sec ({self.ttl_sec:g}): "
                             "the lease is renewed every third of ttl_sec and must stay above the margin between renewals")
        if self.socket_timeout_sec >= self.ttl_sec - self.margin_sec:
            raise ValueError(f"socket_timeout_sec ({self.socket_timeout_sec:g}) must be below ttl_sec - margin_sec: a renewal "
                             "that waits that long could not keep the lease")
        return self


class ExecutionSection(DaemonSection):
    metrics_port: int = Field(9477, ge=1024, le=65535)
    margin: MarginSection = MarginSection()
    broker: Literal["paper", "kite"] = "paper"
    poll_sec: float = Field(2.0, gt=0, le=60)  # kite: the order book is polled this often besides postbacks
    market_protection: float = Field(-1, ge=-1, le=100)  # kite: % band for MARKET orders (-1: Kite's automatic)
    product: Literal["MIS", "CNC", "NRML"] = "MIS"
    # The paper broker: fills against the simulated book.
    slippage_bps: float = Field(2.0, ge=0, le=500)  # market orders fill this much worse than the touch
    latency_ms: float = Field(50.0, ge=0, le=60_000)  # an order can trade only on ticks this long after it was placed
    liquidity_pct: float = Field(100.0, gt=0, le=100)  # share of the quantity at the touch one tick may fill (partial fills)
    reject_pct: float = Field(0.0, ge=0, le=100)  # orders the paper broker rejects, chosen by client id (deterministic)
    fsync: bool = True  # the write-ahead order log is fsynced before an order is sent
    # An approval whose tick is older than this is refused, not sent: after a crash, risk re-sends its
    # recent approvals and only those still fresh become orders.
    max_order_age_sec: float = Field(5.0, gt=0, le=300)
    # The order-rate governor (Kite's limits per API key): over a budget an order waits; over the day's, it is refused.
    orders_per_second: float = Field(10.0, gt=0, le=10)
    orders_per_minute: int = Field(400, gt=0, le=400)
    orders_per_day: int = Field(5000, gt=0, le=5000)
    # New orders are refused (one crit line) while the state disk has less free space than this: before the
    # write-ahead log itself could fail. Below the journal's shed_free_mb, so market data is dropped first.
    refuse_free_mb: int = Field(256, ge=0, le=1_000_000)
    # A shadow of execution places a made-up order with a paper broker of its own this often, so a real approval
    # finds the code warm (runtime/rehearsal.py); 0: never
    rehearse_ms: float = Field(2.0, ge=0, le=1000)
    # The paper broker's book (broker.jsonl per day) lives here ('': the state directory). Executions that
    # share a lease share one paper broker, as they would share Kite: point them at one directory.
    paper_dir: Path | None = None
    lease: ExecutionLease | None = None  # active / standby across hosts; absent: this host's execution is the only one


class JournalSection(DaemonSection):
    metrics_port: int = Field(9478, ge=1024, le=65535)
    directory: Path = Path("/var/lib/algo/journal")  # one sub-directory per day (IST)
    # Orders, fills, signals and control events are fsynced before the next read from the bus;
    # batches holding only ticks and heartbeats at most this often (each time one compressed frame of them).
    tick_fsync_sec: float = Field(1.0, ge=0, le=60)
    # Below this much free space on its disk the journal drops market data (counted, one crit line) so the
    # order path, and execution's write-ahead log beside it, keep what is left; above 1.5x it journals it again.
    # Keep it well above daemons.execution.refuse_free_mb: market data goes first, orders last.
    shed_free_mb: int = Field(1024, ge=0, le=1_000_000)
    # Days kept per kind by algo-journal-retention.timer (0: forever); today's day and a day still being
    # written are never touched. market: market.zst (ticks, heartbeats); orders: events.jsonl and the CSVs.
    keep_market_days: int = Field(30, ge=0, le=100_000)
    keep_orders_days: int = Field(0, ge=0, le=100_000)


class BridgeSection(DaemonSection, RedisLogin):
    """algo-bridge: relays chosen topics between this host's bus and Redis Streams (docs/ARCHITECTURE.md,
    Bridge). Only in a multi-host fleet's config: without it no unit expects a bridge."""

    metrics_port: int = Field(9480, ge=1024, le=65535)
    host: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$")  # this host's name in Redis ('': the hostname)
    # The consumer group this host reads the order path in ('': its own, named after the host). Hosts that
    # share a group share its entries, and claim a dead one's after claim_timeout_sec.
    group: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    daemons: list[Annotated[str, Field(pattern=r"^[a-z0-9_@.-]{1,64}$")]] = Field(min_length=1)  # bus sources of this host
    exports: list[str] = []  # topic patterns relayed from this host's bus to Redis (e.g. "strategy.*")
    imports: list[str] = []  # topic patterns relayed from Redis to this host's bus (e.g. "risk.*")
    stream_prefix: str = Field("algo:", pattern=r"^[A-Za-z0-9_.:-]{1,32}$")  # the ACL's key pattern (~algo:*)
    marketdata_maxlen: int = Field(100_000, ge=100, le=100_000_000)  # MAXLEN ~ of the market-data stream
    order_maxlen: int = Field(1_000_000, ge=1000, le=100_000_000)  # MAXLEN ~ of each order-path stream
    claim_timeout_sec: float = Field(30.0, ge=0.1, le=3600)  # a consumer's pending entry idle this long is claimed
    outbox_events: int = Field(100_000, ge=1, le=10_000_000)  # order-path events held while Redis is unreachable
    dedup_events: int = Field(65_536, ge=1024, le=10_000_000)  # recent imported event ids never published twice
    block_ms: int = Field(1000, ge=10, le=10_000)  # how long one XREAD waits for entries (below socket_timeout_sec)
    reconnect_min_sec: float = Field(0.1, gt=0, le=5)
    reconnect_max_sec: float = Field(5.0, gt=0, le=60)

    @field_validator("exports", "imports")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            if pattern == "*" or not re.fullmatch(r"[a-z0-9_][a-z0-9_\-]*(\.[a-z0-9_\-]+)*(\.\*)?", pattern):
                raise ValueError(f"{pattern!r} is not a topic or 'prefix.*' (name what crosses hosts; '*' is refused)")
        return v


class PortfolioSection(Section):
    """One account or sub-book (daemons/portfolios): its capital, the strategies it follows and its own
    limits. Quantities are lots of the signal's instrument (docs/ARCHITECTURE.md, Portfolios)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # unique; the name in the report
    capital: Money
    strategies: list[str] = Field(min_length=1)  # names of configured strategies
    risk_fraction: float = Field(0.02, gt=0, le=1)  # of capital: the notional of one entry
    max_lots: int = Field(10, ge=0, le=1_000_000)  # |position| per symbol
    max_order_value: Money = 2_000_000.0  # one entry
    daily_loss_limit: Money = 50_000.0  # realised loss today; beyond it the portfolio's entries are refused
    enabled: bool = True  # false: entries refused, exits still go through


class DaemonsSection(Section):
    bus: BusDaemonSection = BusDaemonSection()
    heartbeat: HeartbeatSection = HeartbeatSection()
    marketdata: MarketdataSection = MarketdataSection()
    fno: FnoSection = FnoSection()
    equity: EquitySection = EquitySection()
    options: OptionsSection = OptionsSection()
    risk: RiskSection = RiskSection()
    execution: ExecutionSection = ExecutionSection()
    journal: JournalSection = JournalSection()
    bridge: BridgeSection | None = None  # multi-host fleets only

    def engines(self) -> Iterator[tuple[str, EngineSection]]:
        for name, section in self.items():
            if isinstance(section, EngineSection):
                yield name, section

    def items(self) -> Iterator[tuple[str, DaemonSection]]:
        for name in type(self).model_fields:
            if (section := getattr(self, name)) is not None:
                yield name, section


class KiteSection(Section):
    # Secrets: delivered as systemd credentials named kite_api_key, kite_api_secret, ...
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    access_token: SecretStr | None = None
    root: str = "https://api.kite.trade"
    ticker_root: str = "wss://ws.kite.trade"
    timeout_sec: float = Field(7.0, gt=0, le=60)
    max_connections: int = Field(3, ge=1, le=3)  # ticker WebSockets per API key
    instruments_per_connection: int = Field(3000, ge=1, le=3000)


class PremarketSection(Section):
    """algo-premarket's checks before the engines start."""

    min_free_mb: int = Field(500, ge=0)  # on the filesystems of /var/lib/algo and the journal
    max_clock_offset_sec: float = Field(1.0, gt=0)  # the kernel's estimated error when NTP-synchronised


class EodSection(Section):
    """algo-eod: the report after the close."""

    reports: Path = Path("/var/lib/algo/reports")  # <day>.json and <day>.md
    product: Literal["MIS", "CNC"] = "MIS"  # equity charges: intraday (MIS) or delivery (CNC)


class GatewaySection(DaemonSection):
    """algo-gateway (daemons/gateway): HTTP + WebSocket on a Unix socket, behind nginx. Not a
    ``[daemons.*]`` section: it runs only where deployed, and it serves /metrics on its socket, which
    nginx's loopback listener on ``metrics_port`` proxies (the unit has no IP sockets)."""

    metrics_port: int = Field(9479, ge=1024, le=65535)
    socket: SocketPath = Path("/run/algo-gateway/api.sock")
    # nginx's TLS listener in front of the gateway, ADDRESS:PORT ("0.0.0.0:443", "[::]:443"); set where the
    # gateway is deployed (the Ansible role writes it), which is what puts nginx's ports and the gateway's
    # socket into algo-premarket's port check. Unset: no gateway on this host.
    listen: str | None = None
    tokens: Path = Path("/var/lib/algo/gateway/tokens.json")  # HMAC digests of the API tokens, never the tokens
    pepper: SecretStr | None = None  # the HMAC key: systemd credential gateway_pepper
    origins: list[str] = []  # browser origins allowed on the WebSocket besides the page's own (https://host)
    ws_queue_events: int = Field(1024, ge=16, le=1_000_000)  # per client; a client this far behind is dropped
    ws_send_timeout_sec: float = Field(2.0, gt=0, le=60)  # a send blocked this long drops the client
    ring_events: int = Field(10_000, ge=16, le=1_000_000)  # recent events a reconnecting client can resume from
    # Wrong tokens per client address (nginx's X-Real-IP) and per token prefix: a bucket of this many,
    # refilled at this rate; an empty one refuses logins with 429 (gateway/ratelimit.py)
    failed_logins_burst: int = Field(20, ge=1, le=100_000)
    failed_logins_per_minute: float = Field(10.0, gt=0, le=60_000)

    @field_validator("listen")
    @classmethod
    def _address_port(cls, v: str | None) -> str | None:
        if v is not None:
            listen_port(v)
        return v


def listen_port(listen: str) -> int:
    """The port of an nginx ``listen`` ADDRESS:PORT (an IPv6 address in brackets); ValueError otherwise."""
    address, sep, port = listen.rpartition(":")
    host = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("must be ADDRESS:PORT with an IP address, e.g. 0.0.0.0:443 or [::]:443") from None
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("must end in :PORT, a port from 1 to 65535")
    return int(port)


class CommanderSection(DaemonSection):
    """algo-commander (daemons/commander): carries out the control plane's commands. Not a ``[daemons.*]``
    section, like the gateway: it serves the database's queue, which a fleet across hosts shares."""

    metrics_port: int = Field(9481, ge=1024, le=65535)
    # A claimed command whose outcome has not come back within this is claimed again and re-sent (its
    # engine was down, or this daemon died); the hosting unit answers a re-sent command with its first outcome.
    lease_sec: float = Field(10.0, ge=1, le=3600)
    poll_sec: float = Field(0.5, gt=0, le=60)  # how often the queue is looked at
    # The privileged helper that starts and stops algo-strategy@NAME units (algo-unitctl.socket)
    unitctl_socket: SocketPath = Path("/run/algo-unitctl.sock")
    unitctl_timeout_sec: float = Field(60.0, gt=0, le=600)  # above the units' TimeoutStartSec=


class ControlPlaneSection(Section):
    """The strategy registry and command queue (daemons/control_plane)."""

    # sqlite:////ABSOLUTE/PATH (WAL; every user of it needs write access to its directory) or
    # postgresql+psycopg://USER@HOST/DB; a password belongs in libpq's password file, never here.
    database_url: str = "sqlite:////var/lib/algo/control/control.db"

    @field_validator("database_url")
    @classmethod
    def _supported(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        if scheme == "sqlite" and sep and rest.startswith("//") and len(rest) > 2:
            return v
        if scheme == "postgresql+psycopg" and sep:
            netloc, _, db = rest.partition("/")
            if ":" in netloc.rpartition("@")[0]:  # an error of this type never echoes its input (_problem)
                raise PydanticCustomError("secret_in_url", "must not carry a password: put it in libpq's password "
                                          "file (PGPASSFILE)")
            if db.partition("?")[0]:
                return v
        raise ValueError("must be sqlite:////absolute/path.db or postgresql+psycopg://user@host/database")


@dataclass(frozen=True)
class _LoadContext:
    file_data: dict[str, Any]
    credentials_dir: Path | None


_CONTEXT: ContextVar[_LoadContext] = ContextVar("algo_config_load")


class FleetConfig(BaseSettings):
    """The whole fleet. One file describes every daemon so conflicts are caught in one place."""

    model_config = SettingsConfigDict(
        env_prefix="ALGO_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    fleet: FleetSection = FleetSection()
    market: MarketSection = MarketSection()
    bus: BusSection = BusSection()
    metrics: MetricsSection = MetricsSection()
    daemons: DaemonsSection = DaemonsSection()
    premarket: PremarketSection = PremarketSection()
    eod: EodSection = EodSection()
    gateway: GatewaySection = GatewaySection()
    # [[portfolios]]: none = every signal is sized by its strategy, as without portfolios
    portfolios: list[PortfolioSection] = []
    commander: CommanderSection = CommanderSection()
    control_plane: ControlPlaneSection = ControlPlaneSection()
    kite: KiteSection = KiteSection()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        ctx = _CONTEXT.get(_LoadContext({}, None))
        return (
            init_settings,
            env_settings,
            CredentialsSource(settings_cls, ctx.credentials_dir),
            InitSettingsSource(settings_cls, ctx.file_data),
        )


def secret_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Dotted paths of every SecretStr field; each maps to a credential named with underscores."""
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from secret_paths(ann, prefix + (name,))
        elif SecretStr in getattr(ann, "__args__", (ann,)):
            yield prefix + (name,)


def credential_name(path: tuple[str, ...]) -> str:
    return "_".join(path)


class CredentialsSource(PydanticBaseSettingsSource):
    """Reads secrets from systemd's $CREDENTIALS_DIRECTORY (LoadCredential=/LoadCredentialEncrypted=)."""

    def __init__(self, settings_cls: type[BaseSettings], directory: Path | None) -> None:
        super().__init__(settings_cls)
        self.directory = directory

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ does the whole tree at once

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.directory is None:
            return out
        for path in secret_paths(self.settings_cls):
            file = self.directory / credential_name(path)
            if not file.is_file():
                continue
            value = file.read_text().strip()
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        return out


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


def local_daemons(config: FleetConfig) -> Iterator[tuple[str, DaemonSection]]:
    """The ``[daemons.*]`` daemons this host runs: those ``[fleet] daemons`` names (and the bridge, when it has a
    section), or every one when it names none (one host runs the whole fleet)."""
    chosen = set(config.fleet.daemons)
    for name, section in config.daemons.items():
        if not chosen or name in chosen or name == "bridge":
            yield name, section


def fleet_ports(config: FleetConfig) -> Iterator[tuple[int, str]]:
    """Every TCP port this host's daemons listen on (their metrics), with its dotted config path."""
    local = dict(local_daemons(config))
    for name, section in local.items():
        yield section.metrics_port, f"daemons.{name}.metrics_port"
    yield config.commander.metrics_port, "commander.metrics_port"
    for engine, section in config.daemons.engines():
        if engine not in local:
            continue
        for n, strategy in enumerate(section.strategies):
            if strategy.process == "own" and strategy.enabled and strategy.metrics_port is not None:
                yield strategy.metrics_port, f"daemons.{engine}.strategies.{n}.metrics_port"


def nginx_ports(config: FleetConfig) -> Iterator[tuple[int, str]]:
    """The TCP ports nginx listens on in front of the gateway, where one is deployed (``gateway.listen``):
    its TLS listener and its loopback listener for the gateway's metrics."""
    if config.gateway.listen is not None:
        yield listen_port(config.gateway.listen), "gateway.listen"
        yield config.gateway.metrics_port, "gateway.metrics_port"


def cross_check(config: FleetConfig) -> list[Problem]:
    """Checks that span sections, which field validators cannot see."""
    problems: list[Problem] = []
    ports: dict[int, str] = {}
    claims = [(section.metrics_port, f"daemons.{name}.metrics_port") for name, section in config.daemons.items()]
    claims += [(config.gateway.metrics_port, "gateway.metrics_port"), (config.commander.metrics_port, "commander.metrics_port")]
    if config.gateway.listen is not None:
        claims.append((listen_port(config.gateway.listen), "gateway.listen"))
    for port, path in claims:
        if port in ports:
            problems.append(Problem(path, f"port {port} is already used by {ports[port]}"))
        else:
            ports[port] = path
    problems += _check_strategies(config, ports)
    problems += _check_portfolios(config)
    md = config.daemons.marketdata
    if md.feed == "replay" and md.replay_from is None:
        problems.append(Problem("daemons.marketdata.replay_from", "feed = \"replay\" needs a journal day or tick CSV"))
    problems += _check_local_daemons(config)
    hb = config.daemons.heartbeat
    if hb.silent_after_sec < 2 * hb.interval_sec:
        problems.append(Problem("daemons.heartbeat.silent_after_sec", f"must be at least twice daemons.heartbeat."
                                f"interval_sec ({2 * hb.interval_sec:g}): one late heartbeat is not silence"))
    if hb.hosts and not config.fleet.host:
        problems.append(Problem("daemons.heartbeat.hosts", "other hosts need this host named too: set [fleet] host"))
    elif config.fleet.host in hb.hosts:
        problems.append(Problem("daemons.heartbeat.hosts", f"names this host ({config.fleet.host}): its units are "
                                "the config's daemons"))
    bridge = config.daemons.bridge
    if bridge is not None and bridge.reconnect_min_sec > bridge.reconnect_max_sec:
        problems.append(Problem("daemons.bridge.reconnect_min_sec", "must not exceed daemons.bridge.reconnect_max_sec"))
    if config.bus.reconnect_min_sec > config.bus.reconnect_max_sec:
        problems.append(Problem("bus.reconnect_min_sec", "must not exceed bus.reconnect_max_sec"))
    if config.daemons.execution.broker == "kite":
        if config.fleet.mode != "live":
            problems.append(Problem("daemons.execution.broker", 'broker = "kite" sends real orders: it needs '
                                    '[fleet] mode = "live"'))
        if config.kite.max_connections < 2:
            problems.append(Problem("kite.max_connections", 'broker = "kite" keeps one ticker connection for order '
                                    "updates; the feed needs at least one more (2 or 3)"))
    return problems


def _check_local_daemons(config: FleetConfig) -> list[Problem]:
    """``[fleet] daemons``: known ``[daemons.*]`` names, with the two every host runs."""
    if not config.fleet.daemons:
        return []
    known = [name for name in DaemonsSection.model_fields if name != "bridge"]
    problems = [Problem("fleet.daemons", f"{name!r} is not a daemon (one of {', '.join(known)})")
                for name in config.fleet.daemons if name not in known]
    problems += [Problem("fleet.daemons", f"must include {name!r}: every host runs algo-{name}")
                 for name in ("bus", "heartbeat") if name not in config.fleet.daemons]
    return problems


def missing_credentials(config: FleetConfig, *names: str) -> list[Problem]:
    """Kite credentials (``api_key``, ``api_secret``, ``access_token``) that are absent.

    Not part of ``cross_check``: only the units that talk to Kite load them (least privilege), so
    each checks its own: execution and the feed the key and token, ``algoctl config validate`` of a
    live config the key and the secret (``algoctl login`` needs it).
    """
    how = {"access_token": "`algoctl login` installs it every morning"}
    return [Problem(f"kite.{name}", f"Kite needs it: install the systemd credential kite_{name} "
                    f"({how.get(name, 'ansible/deploy.yml installs it')}; algoctl takes --credentials DIR)")
            for name in names if getattr(config.kite, name) is None]


def _check_strategies(config: FleetConfig, ports: dict[int, str]) -> list[Problem]:
    from ..engine.strategies import build  # the engines' code judges their parameters

    problems: list[Problem] = []
    names: dict[str, str] = {}
    for engine, section in config.daemons.engines():
        for i, strategy in enumerate(section.strategies):
            path = f"daemons.{engine}.strategies.{i}"
            if strategy.name in names:
                problems.append(Problem(f"{path}.name", f"{strategy.name!r} is already used by {names[strategy.name]}"))
            names[strategy.name] = path
            try:
                build(strategy.kind, strategy.name, strategy.params)
            except ValueError as exc:
                problems.append(Problem(path, str(exc)))
            if strategy.process == "own":
                port = strategy.metrics_port
                if port is None:
                    problems.append(Problem(f"{path}.metrics_port", 'required with process = "own"'))
                elif port in ports:
                    problems.append(Problem(f"{path}.metrics_port", f"port {port} is already used by {ports[port]}"))
                else:
                    ports[port] = f"{path}.metrics_port"
    return problems


def _check_portfolios(config: FleetConfig) -> list[Problem]:
    """Unique ids, and every followed strategy configured (a typo would follow nothing, silently)."""
    strategies = {s.name for _, section in config.daemons.engines() for s in section.strategies}
    problems: list[Problem] = []
    ids: dict[str, int] = {}
    for n, portfolio in enumerate(config.portfolios):
        if portfolio.id in ids:
            problems.append(Problem(f"portfolios.{n}.id", f"{portfolio.id!r} is already used by portfolios.{ids[portfolio.id]}"))
        ids.setdefault(portfolio.id, n)
        for name in portfolio.strategies:
            if name not in strategies:
                problems.append(Problem(f"portfolios.{n}.strategies", f"{name!r} is not a configured strategy"))
    return problems


def redacted(config: FleetConfig) -> dict[str, Any]:
    """The effective config as plain data, for `algoctl config show`: SecretStr dumps as '**********'."""
    return config.model_dump(mode="json")
