"""The fleet's one declarative config: a pydantic-settings model tree loaded from TOML.

Precedence, highest first: ``ALGO_*`` environment variables (nested with ``__``, e.g.
``ALGO_DAEMONS__HEARTBEAT__INTERVAL_SEC=0.5``), systemd credentials in
``$CREDENTIALS_DIRECTORY`` (secrets only), the TOML file, the defaults.
Every problem is reported with its dotted path so an operator can fix all of them at once.

The package, by concern: ``values.py`` (the value types, the ``Section`` base), ``sections.py`` (the fleet-wide
sections), ``daemon_sections.py`` (``[daemons.*]``), ``model.py`` (``FleetConfig`` and its sources),
``problems.py`` (``Problem``, ``ConfigError``), ``load.py`` (reading the file), ``checks.py`` (the
cross-checks). Everything a daemon needs is imported from here.
"""

from .checks import fleet_ports, local_daemons, missing_credentials, nginx_ports
from .daemon_sections import (
    BridgeSection,
    BusDaemonSection,
    CommanderSection,
    DaemonSection,
    DaemonsSection,
    DerivativesSection,
    EngineSection,
    EquitySection,
    ExecutionLease,
    ExecutionSection,
    FnoSection,
    GatewaySection,
    HeartbeatSection,
    JournalSection,
    MarginSection,
    MarketdataSection,
    OptionsSection,
    RedisLogin,
    RiskSection,
    StrategySection,
)
from .load import file_kind, load_config, redacted, resolve_path
from .model import FleetConfig
from .problems import ConfigError, Problem
from .sections import (
    NSE_HOURS,
    BusSection,
    ControlPlaneSection,
    EodSection,
    FleetSection,
    KiteSection,
    MarketSection,
    MetricsSection,
    PortfolioSection,
    PremarketSection,
)

__all__ = [
    "NSE_HOURS", "BridgeSection", "BusDaemonSection", "BusSection", "CommanderSection", "ConfigError",
    "ControlPlaneSection", "DaemonSection", "DaemonsSection", "DerivativesSection", "EngineSection", "EodSection",
    "EquitySection", "ExecutionLease", "ExecutionSection", "FleetConfig", "FleetSection", "FnoSection",
    "GatewaySection", "HeartbeatSection", "JournalSection", "KiteSection", "MarginSection", "MarketSection",
    "MarketdataSection", "MetricsSection", "OptionsSection", "PortfolioSection", "PremarketSection", "Problem",
    "RedisLogin", "RiskSection", "StrategySection", "file_kind", "fleet_ports", "load_config", "local_daemons",
    "missing_credentials", "nginx_ports", "redacted", "resolve_path",
]
