"""What no one section can check alone: ports unique across the fleet, the daemons a host runs, the
strategies (unique names, parameters their kind accepts), portfolios naming configured strategies, and the
credentials a mode needs."""

from __future__ import annotations

from collections.abc import Iterator

from ...strategies import build
from .daemon_sections import DaemonSection, DaemonsSection, listen_port
from .model import FleetConfig
from .problems import Problem


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
    """Unique names, parameters their kind accepts (its own constructor judges them), and an own process's port."""
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
