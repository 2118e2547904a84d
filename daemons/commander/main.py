"""algo-commander claims the control plane's commands and has them carried out, acknowledged.

Each host runs one, and it claims only the commands of the strategies its host runs (a queue the hosts
share, on PostgreSQL, is served by every host's commander). Each claimed command goes to the unit that
hosts its strategy as ``control.command``; that unit (an engine, or ``algo-strategy@NAME``) applies it
and answers ``control.result``, which is written back with ``Store.finish``. A command whose unit is
down stays claimed until its lease runs out, is claimed again and sent again, so it runs when the unit
comes back; the unit answers a command it has seen with its first outcome, so it runs once. Start, stop
and restart of an own-process strategy go to the root helper algo-unitctl (the unit itself), then a
start to the process, which confirms it runs with the registry's parameters. Nothing here is in the
order path: the bus carries the commands, the database the queue, and a database outage only delays
them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge

from ..control_plane.database import DatabaseError, SchemaError
from ..control_plane.records import CommandView, StrategyView
from ..control_plane.store import Store
from ..control_plane.transitions import Refused as StoreRefused
from ..runtime.config import CommanderSection, FleetConfig, local_daemons
from ..runtime.daemon import Daemon, pause, serve
from ..runtime.envelope import CONTROL_COMMAND, CONTROL_RESULT, Event
from ..runtime.heartbeat import this_host
from ..runtime.metrics import DaemonMetrics
from ..unitctl.protocol import UNIT_VERBS, HelperUnavailable, Refused, UnitFailed, UnitVerb, request

log = logging.getLogger("algo.commander")


def hosted_engines(config: FleetConfig) -> frozenset[str] | None:
    """The engines this host runs, whose strategies' commands this host's commander takes (each host of a
    multi-host fleet has its own commander, and they may share one queue: PostgreSQL); None on a host that
    runs the whole fleet (``[fleet] daemons`` empty): every command is its own."""
    if not config.fleet.daemons:
        return None
    local = dict(local_daemons(config))
    return frozenset(engine for engine, _ in config.daemons.engines() if engine in local)


def host_unit(strategy: StrategyView) -> str:
    """The unit that answers for a strategy: its engine, or its own process."""
    return f"algo-strategy@{strategy.name}" if strategy.process == "own" else f"algo-{strategy.engine}"


class CommanderDaemon(Daemon):
    name = "commander"

    def __init__(self, config: FleetConfig, metrics: DaemonMetrics) -> None:
        super().__init__(config, metrics)
        self.worker = f"algo-commander@{this_host(config)}"
        self.store: Store | None = None
        self.database_error: str | None = None
        self.sent: dict[str, CommandView] = {}  # claimed and sent, awaiting control.result
        self.unit_done: set[str] = set()  # own-process start/stop/restart the helper has done (not repeated)
        self.unit_busy: set[str] = set()  # ... and those it is doing now
        self._tasks: set[asyncio.Task[None]] = set()
        self.finished = {"executed": 0, "failed": 0}  # for the status line
        self.counts = Counter("algo_commander_commands", "Commands finished, by verb and outcome",
                              ["verb", "outcome"], registry=metrics.registry)
        self.resent = Counter("algo_commander_resent", "Commands sent again after their lease ran out "
                              "(the hosting unit was down or did not answer)", registry=metrics.registry)
        self.database_up = Gauge("algo_commander_database_up", "1 while the control-plane database answers",
                                 registry=metrics.registry)
        Gauge("algo_commander_in_flight", "Commands claimed and not yet finished",
              registry=metrics.registry).set_function(lambda: len(self.sent) + len(self.unit_busy))
        self.bus.subscribe(CONTROL_RESULT, self._on_result)

    @classmethod
    def section_of(cls, config: FleetConfig) -> CommanderSection:
        return config.commander

    @property
    def section(self) -> CommanderSection:
        return self.config.commander

    async def run(self) -> None:
        while not self.stopping.is_set():
            await self._poll()
            await pause(self.stopping, self.section.poll_sec)

    async def drain(self) -> None:
        # What is in flight stays claimed in the database: the next commander takes it over after the lease.
        if self.store is not None:
            self.store.close()

    async def _poll(self) -> None:
        """Claim every command that is due (new, or its lease ran out) and dispatch it."""
        try:
            if self.store is None:
                self.store = await asyncio.to_thread(Store.open, self.config.control_plane.database_url)
            store = self.store
            engines = hosted_engines(self.config)
            while (command := await asyncio.to_thread(store.claim, self.worker, self.section.lease_sec, engines)) is not None:
                strategy = await asyncio.to_thread(store.strategy, command.strategy)
                if strategy is not None:  # claim() fails a command whose strategy is gone
                    await self._dispatch(command, strategy)
        except (DatabaseError, SchemaError, OSError) as exc:
            self._database_down(exc)
            return
        if self.database_error is not None:
            log.info("control-plane database reachable again")
        self.database_error = None
        self.database_up.set(1)

    def _database_down(self, exc: Exception) -> None:
        why = " ".join(str(exc).split())[:300] or type(exc).__name__
        if self.database_error is None:
            log.error("control-plane database unavailable, commands wait: %s", why)
        self.database_error = why
        self.database_up.set(0)

    async def _dispatch(self, command: CommandView, strategy: StrategyView) -> None:
        unit, verb = host_unit(strategy), command.verb
        if strategy.process == "own" and verb in UNIT_VERBS:
            if command.id not in self.unit_busy:
                self._spawn(self._unit_then_process(command, verb, strategy, unit))
        elif strategy.process == "own" and command.verb == "update_config" and strategy.desired_state == "stopped":
            # no process to tell: the registry takes the parameters, and the start sends them
            await self._finish(command, "executed", None)
        else:
            self._send(command, strategy, unit, command.verb)

    def _send(self, command: CommandView, strategy: StrategyView, unit: str, verb: str) -> None:
        again = command.id in self.sent
        self.sent[command.id] = command
        self.bus.publish(CONTROL_COMMAND, {
            "command_id": command.id, "verb": verb, "strategy": command.strategy, "args": command.args,
            "actor": command.actor, "unit": unit,
            "params": strategy.params, "kind": strategy.kind}, key=command.strategy)
        if again:
            self.resent.inc()
        log.info("%s %s by %s %s to %s", command.verb, command.strategy, command.actor, "sent again" if again else "sent",
                 unit, extra=self._fields(command) | {"UNIT": unit})

    async def _unit_then_process(self, command: CommandView, verb: UnitVerb, strategy: StrategyView, unit: str) -> None:
        """start|stop|restart of algo-strategy@NAME through algo-unitctl; then, unless stopped, a start to
        the process, whose answer finishes the command (it runs, with the registry's parameters)."""
        self.unit_busy.add(command.id)
        try:
            if command.id not in self.unit_done:  # a command claimed again is not restarted twice
                await asyncio.to_thread(request, str(self.section.unitctl_socket), verb, command.strategy,
                                        self.section.unitctl_timeout_sec)
                self.unit_done.add(command.id)
        except (Refused, UnitFailed) as exc:
            await self._finish(command, "failed", str(exc))
            return
        except HelperUnavailable as exc:
            log.error("%s %s waits: %s", command.verb, command.strategy, exc, extra=self._fields(command))
            return  # claimed again after the lease
        finally:
            self.unit_busy.discard(command.id)
        if command.verb == "stop":
            await self._finish(command, "executed", None)
        else:
            self._send(command, strategy, unit, "start")

    def _on_result(self, event: Event) -> None:
        p = event.payload
        command = self.sent.get(str(p.get("command_id")))
        if command is None or p.get("status") not in ("executed", "failed"):
            return  # not one this commander sent (another's, or a second answer to a re-send)
        reason = p.get("reason")
        self._spawn(self._finish(command, p["status"], reason if isinstance(reason, str) else None))

    async def _finish(self, command: CommandView, status: str, reason: str | None) -> None:
        self.sent.pop(command.id, None)
        self.unit_done.discard(command.id)
        store = self.store
        assert store is not None
        try:
            done = await asyncio.to_thread(store.finish, command.id, "executed" if status == "executed" else "failed",
                                           reason, self.worker)
        except StoreRefused as exc:  # finished already with another outcome: the first stands
            log.warning("%s %s: outcome %s not recorded: %s", command.verb, command.strategy, status, exc,
                        extra=self._fields(command))
            return
        except (DatabaseError, OSError) as exc:
            self._database_down(exc)  # still pending: claimed again after the lease, answered from memory
            return
        self.counts.labels(done.verb, done.status).inc()
        self.finished[done.status] += 1
        outcome = done.status + (f": {done.reason}" if done.reason else "")
        log.log(logging.INFO if done.status == "executed" else logging.WARNING, "%s %s by %s: %s", done.verb,
                done.strategy, done.actor, outcome, extra=self._fields(done))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _fields(command: CommandView) -> dict[str, str]:
        return {"STRATEGY": command.strategy, "ACTOR": command.actor, "COMMAND_ID": command.id}

    def status(self) -> str:
        database = f"database unavailable: {self.database_error}" if self.database_error else "database ok"
        return (f"{len(self.sent) + len(self.unit_busy)} commands in flight, {self.finished['executed']} executed, "
                f"{self.finished['failed']} failed; "
                f"{database}")


def main(argv: Sequence[str] | None = None) -> None:
    serve(CommanderDaemon, argv)
