"""The lifecycle every daemon shares, shaped for systemd ``Type=notify``:

setup -> READY=1 -> run ... SIGTERM -> STOPPING=1 -> drain (bounded) -> exit 0
SIGHUP -> RELOADING=1 -> re-read config -> reload hook -> READY=1 -> the outcome to algo-reload (reload_handshake)
A config error exits 78 (EX_CONFIG), which the units list in RestartPreventExitStatus=; so does a
damaged state file (``integrity.DamagedFile``), after one crit line.
WATCHDOG=1 is sent from the event loop, and only while the daemon's health check passes,
so a blocked loop or a failing check gets the process killed and restarted by systemd.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import uvloop

from .client import BusClient
from .config import ConfigError, DaemonSection, FleetConfig, Problem, load_config, resolve_path
from .envelope import HEALTH_HEARTBEAT
from .heartbeat import Heartbeat, bus_source, this_host
from .integrity import DamagedFile
from .logs import setup_logging
from .metrics import BusClientCollector, DaemonMetrics
from .notify import Notifier
from .reload_handshake import Handshake, runtime_dir

EX_OK = 0
EX_FAILURE = 1
EX_CONFIG = 78

log = logging.getLogger("algo.runtime")


class Daemon(ABC):
    """Subclass, set ``name`` (its ``[daemons.<name>]`` section), implement the hooks.

    Every daemon but the broker gets ``self.bus``: subscribe in ``__init__``; the runner connects
    it after ``setup()`` (so restored state is in place before the first event) and closes it
    after ``drain()``.
    """

    name: ClassVar[str]
    uses_bus: ClassVar[bool] = True
    bus_acks: ClassVar[bool] = False  # calls self.bus.acknowledge() once what it got is durable (the journal)
    metrics_port: ClassVar[bool] = True  # False: it serves its registry itself (algo-gateway, on its Unix socket)
    bus: BusClient
    last_tick = 0.0  # monotonic time of the last market tick handled (0: none yet, or not a tick consumer)

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.stopping = asyncio.Event()
        if self.uses_bus:
            self.bus = BusClient.for_config(config.bus, source=bus_source(self.name, config), acks=self.bus_acks)
            metrics.registry.register(BusClientCollector(self.bus))

    def state_path(self, filename: str) -> Path:
        """A file in the unit's StateDirectory= (/var/lib/algo/<name> when run by hand)."""
        return Path(os.environ.get("STATE_DIRECTORY", f"/var/lib/algo/{self.name}")) / filename

    @classmethod
    def section_of(cls, config: FleetConfig) -> DaemonSection:
        """This daemon's config section; ConfigError when the config has none for it."""
        section: DaemonSection | None = getattr(config.daemons, cls.name)
        if section is None:  # an optional section (the bridge's) left out of this host's config
            raise ConfigError("config", [Problem(f"daemons.{cls.name}", f"algo-{cls.name} runs only with this section")])
        return section

    @property
    def section(self) -> DaemonSection:
        return self.section_of(self.config)

    @property
    def unit(self) -> str:
        """The systemd unit (without .service) that runs this daemon: how heartbeats name it."""
        return f"algo-{self.name}"

    def tick_age(self) -> float | None:
        """Seconds since the last tick this daemon handled, for its heartbeat; None before any."""
        return time.monotonic() - self.last_tick if self.last_tick else None

    async def setup(self) -> None:
        """Everything that must hold before READY=1 (sockets bound, state restored)."""

    @abstractmethod
    async def run(self) -> None:
        """The daemon's work; return once ``self.stopping`` is set."""

    async def drain(self) -> None:
        """Finish in-flight work after SIGTERM; bounded by the section's stop_timeout_sec."""

    async def reload(self, config: FleetConfig) -> None:
        """Apply a re-read config. The default adopts it; override to act on changes."""
        self.config = config

    def health(self) -> str | None:
        """None when healthy, else why not. While unhealthy the watchdog is not fed."""
        return None

    @abstractmethod
    def status(self) -> str:
        """One human line for ``systemctl status`` (STATUS=)."""


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less when ``stopping`` is set meanwhile (a timer of a loop that must end on stop)."""
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        pass


def settle_heap() -> None:
    """What setup built (modules, config, restored state: ~40k objects) lives as long as the process: moved out
    of the cyclic GC's reach, so a collection walks only what the daemon made since. A full one walked it all,
    10-12 ms in algo-marketdata and algo-journal at 10k ticks/s, and the first ones after READY took 1-1.6 ms
    in the order path's daemons, in the middle of whatever handler allocated (bench/pipeline/README.md,
    round 12). Garbage is collected first so that none of it is kept for good."""
    gc.collect()
    gc.freeze()


class Runner:
    """Drives one Daemon through its lifecycle under systemd (or a terminal)."""

    def __init__(self, daemon: Daemon, notifier: Notifier, config_path: str) -> None:
        self.daemon = daemon
        self.notifier = notifier
        self.config_path = config_path
        self._unhealthy_since: float | None = None
        self._started = time.monotonic()
        self._worst_lag = 0.0  # since the last heartbeat
        self._host = this_host(daemon.config)
        self.handshake = Handshake(runtime_dir())
        self.refused_reload = False  # the last reload refused the file (or failed to apply it)

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        d = self.daemon
        loop.add_signal_handler(signal.SIGTERM, d.stopping.set)
        loop.add_signal_handler(signal.SIGINT, d.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))

        try:
            await d.setup()
        except ConfigError as exc:  # what the config points at (a file, a symbol) is unusable
            for problem in exc.problems:
                log.error("config error in %s: %s", exc.source, problem)
            return EX_CONFIG
        except DamagedFile as exc:
            return self._damaged(exc)
        if d.uses_bus:
            await d.bus.start()
        settle_heap()
        self.notifier.ready(d.status())
        log.info("%s ready: %s", d.name, d.status())
        helpers = [loop.create_task(self._status_loop(), name="status")]
        if d.uses_bus:
            helpers.append(loop.create_task(self._heartbeat_loop(), name="heartbeat"))
        if self.notifier.watchdog_interval:
            helpers.append(loop.create_task(self._watchdog_loop(self.notifier.watchdog_interval), name="watchdog"))

        worker = loop.create_task(d.run(), name=d.name)
        stop = loop.create_task(d.stopping.wait())
        done, _ = await asyncio.wait({worker, stop}, return_when=asyncio.FIRST_COMPLETED)
        if worker in done and not d.stopping.is_set():
            if isinstance(damage := worker.exception(), DamagedFile):  # e.g. a new day's files, opened at midnight
                return self._damaged(damage)
            worker.result()  # re-raise a crash so the unit fails and restarts
            log.error("%s stopped working without being asked to", d.name)
            return EX_FAILURE

        self.notifier.stopping(f"stopping: draining (up to {d.section.stop_timeout_sec:g}s)")
        log.info("%s stopping", d.name)
        for task in helpers:
            task.cancel()
        try:
            await asyncio.wait_for(asyncio.gather(worker, d.drain()), d.section.stop_timeout_sec)
        except TimeoutError:
            log.warning("%s did not drain within %.1fs; exiting anyway", d.name, d.section.stop_timeout_sec)
        if d.uses_bus:
            await d.bus.close()
        stop.cancel()
        return EX_OK

    def _damaged(self, exc: DamagedFile) -> int:
        """Durable state that is not what was written: one crit line, and exit 78 so systemd does not
        restart into the same damage (a restart cannot repair it; an operator can)."""
        log.critical("%s: %s", self.daemon.name, exc, extra=exc.fields())
        return EX_CONFIG

    async def reload(self) -> None:
        """SIGHUP: re-read the config and apply it, or refuse it and keep the running one; either way the
        outcome goes to ``algo-reload`` (``ExecReload=``), so that ``systemctl reload`` reports it."""
        token = self.handshake.requested()
        self.notifier.reloading()
        problems: list[str] = []
        try:
            config = load_config(self.config_path)
            type(self.daemon).section_of(config)  # e.g. a strategy process whose strategy was removed
        except ConfigError as exc:
            self.daemon.metrics.reloads.labels("rejected").inc()
            problems = [f"{exc.source}: {problem}" for problem in exc.problems]
            for problem in problems:
                log.error("reload rejected, keeping the running config: %s", problem)
        else:
            try:
                await self.daemon.reload(config)
            except Exception as exc:  # a bug in a reload hook: logged whole, reported, and the daemon goes on
                log.exception("%s failed to apply the reloaded config", self.daemon.name)
                self.daemon.metrics.reloads.labels("failed").inc()
                problems = [f"applying it failed: {exc!r}; see the journal"]
            else:
                self.daemon.metrics.reloads.labels("applied").inc()
                log.info("%s reloaded %s", self.daemon.name, self.config_path)
        self.refused_reload = bool(problems)
        self.daemon.metrics.reload_refused.set(self.refused_reload)
        self.notifier.ready(self._status_line())
        self.handshake.answer(token, problems)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.daemon.section.status_interval_sec)
            self.notifier.status(self._status_line())

    def _status_line(self) -> str:
        if self._unhealthy_since is not None:
            return f"UNHEALTHY: {self.daemon.health()}"
        if self.refused_reload:  # the file is not what runs, and a restart would exit 78
            return f"CONFIG REFUSED at the last reload, the previous one runs (journalctl -p err); {self.daemon.status()}"
        return self.daemon.status()

    async def _watchdog_loop(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        metrics = self.daemon.metrics
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            metrics.loop_lag.observe(self._lag(loop.time() - due))
            problem = self.daemon.health()
            if problem is None:
                if self._unhealthy_since is not None:
                    log.info("%s healthy again", self.daemon.name)
                    self._unhealthy_since = None
                self.notifier.watchdog()
                metrics.watchdog_pings.inc()
                metrics.healthy.set(1)
                continue
            metrics.healthy.set(0)
            if self._unhealthy_since is None:
                self._unhealthy_since = time.monotonic()
                log.error("%s unhealthy, no longer feeding the watchdog: %s", self.daemon.name, problem)
                self.notifier.status(self._status_line())

    def _lag(self, late: float) -> float:
        lag = max(0.0, late)
        self._worst_lag = max(self._worst_lag, lag)
        return lag

    async def _heartbeat_loop(self) -> None:
        """One heartbeat at once, then one every interval (re-read, so a reload changes it)."""
        loop = asyncio.get_running_loop()
        while True:
            interval = self.daemon.config.daemons.heartbeat.interval_sec
            if self.daemon.bus.connected:  # one held back in the outbox would say "alive" about the past
                self.daemon.bus.publish(HEALTH_HEARTBEAT, self.heartbeat(interval).payload())
            self._worst_lag = 0.0
            due = loop.time() + interval
            await asyncio.sleep(interval)
            self._lag(loop.time() - due)

    def heartbeat(self, interval: float) -> Heartbeat:
        d = self.daemon
        problem = d.health()
        return Heartbeat(d.unit, self._host, os.getpid(), round(time.monotonic() - self._started, 3), interval,
                         problem is None, problem, round(self._worst_lag, 6), _rounded(d.tick_age()))


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def command_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """``--config`` and ``--log-level``, as every console script of the fleet takes them."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help="fleet config (default: $ALGO_CONFIG or /etc/algo/fleet.toml)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def config_failed(exc: ConfigError) -> NoReturn:
    """One err line per problem, then exit 78 (EX_CONFIG: the units do not restart on it)."""
    for problem in exc.problems:
        log.error("config error in %s: %s", exc.source, problem)
    sys.exit(EX_CONFIG)


def start_command(prog: str, args: argparse.Namespace) -> FleetConfig:
    """A oneshot's start: logging, then the config (or exit 78)."""
    setup_logging(prog, args.log_level)
    try:
        return load_config(resolve_path(args.config))
    except ConfigError as exc:
        config_failed(exc)


def serve(daemon_cls: type[Daemon], argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of every daemon's console script."""
    args = command_parser(f"algo-{daemon_cls.name}", daemon_cls.__doc__).parse_args(argv)
    setup_logging(f"algo-{daemon_cls.name}", args.log_level)
    notifier = Notifier()  # strips NOTIFY_SOCKET before anything can spawn a child
    config_path = str(resolve_path(args.config))
    try:
        config = load_config(config_path)
        section = daemon_cls.section_of(config)
    except ConfigError as exc:
        config_failed(exc)
    metrics = DaemonMetrics(daemon_cls.name)
    try:
        if daemon_cls.metrics_port:
            metrics.serve(config.metrics.bind, section.metrics_port)
    except OSError as exc:
        log.error("cannot serve metrics on %s:%d: %s", config.metrics.bind, section.metrics_port, exc)
        sys.exit(EX_FAILURE)

    runner = Runner(daemon_cls(config, metrics), notifier, config_path)
    code = _run_loop(runner.main())
    metrics.close()
    logging.shutdown()
    sys.exit(code)


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """uvloop: half the broker round-trip latency of the default loop (bench/README.md, Background)."""
    return uvloop.run(coro)
