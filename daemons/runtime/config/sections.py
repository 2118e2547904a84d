"""The fleet-wide sections of ``fleet.toml``: the market's session, the fleet and its bus, metrics, Kite, the
pre-market and end-of-day checks, the control plane's database, and the portfolios. The daemons' own sections
are in ``daemon_sections.py``."""

from __future__ import annotations

import ipaddress
from datetime import date, time
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .values import ClockTime, Money, Section, SocketPath


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
