"""``[daemons.<name>]``: one section per daemon (its metrics port, stop timeout and status interval, and its
own keys), the engines' strategies, execution's margin check and lease, the bridge, and the gateway's and
algo-commander's sections."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .sections import MOVED_TO_MARKET
from .values import Count, Money, Quantity, Section, SocketPath, StrategyParam


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
    kind: str  # see daemons/strategies: ema_crossover, rsi_reversion, short_straddle, model
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
