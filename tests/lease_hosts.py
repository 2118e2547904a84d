"""Execution "hosts" for the lease's tests and its failover benchmark: each an algo-bus and an
algo-execution process with its own bus socket, state directory, config and metrics port, all sharing
one Redis lease and one paper broker's book (as hosts share Kite). The test publishes on each host's bus
what the bridges would bring there (every approval reaches both hosts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import orjson

from daemons.algoctl import control
from daemons.algoctl.processes import stop_all
from daemons.runtime.calendar import IST
from daemons.runtime.config import FleetConfig, load_config
from tests.ports import free_ports

LEASE_PASSWORD = "lease-test-password"
LEASE_CREDENTIAL = "algo_execution_redis_password"
# What a deployment grants execution's lease: its scripts and the commands they call, on its keys only.
LEASE_ACL = (f"user algo-execution on >{LEASE_PASSWORD} ~algo:lease:* ~algo:fence:* resetchannels -@all "
             "+ping +eval +get +set +incr +pexpire")


class Redis(Protocol):
    socket: Path


def orders_by_tag(paper_dir: Path) -> dict[str, set[str]]:
    """Today's paper broker's book: the order ids placed under each tag (one per tag: nothing sent twice)."""
    path = paper_dir / datetime.now(IST).date().isoformat() / "broker.jsonl"
    found: dict[str, set[str]] = {}
    if path.exists():
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            if record.get("kind") == "order":
                found.setdefault(record["order"]["tag"], set()).add(record["order"]["order_id"])
    return found


def wait(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


@dataclass
class Host:
    name: str
    dir: Path
    env: dict[str, str]
    config: FleetConfig
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.dir / "execution.log"

    @property
    def execution(self) -> subprocess.Popen[bytes]:
        return self.procs[-1]

    def start(self) -> None:
        self.procs.append(subprocess.Popen([sys.executable, "-m", "daemons.bus"], env=self.env, stderr=subprocess.DEVNULL))
        wait(self.config.bus.socket.exists, f"{self.name}'s bus socket")
        with open(self.log, "wb") as out:
            self.procs.append(subprocess.Popen([sys.executable, "-m", "daemons.execution"], env=self.env, stderr=out))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        wait(lambda: text in self.log_text() or self.execution.poll() is not None, f"{self.name} to log {text!r}", timeout)
        assert text in self.log_text(), f"{self.name} exited ({self.execution.returncode}):\n{self.log_text()}"

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        control.send(self.config, topic, payload)

    def metric(self, name: str) -> float:
        port = self.config.daemons.execution.metrics_port
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return next(float(line.split()[-1]) for line in body.splitlines() if line.startswith(name + " "))

    def proc_signal(self, sig: signal.Signals) -> None:
        self.execution.send_signal(sig)

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.execution.wait(timeout)

    def stop(self) -> None:
        for proc in reversed(self.procs):  # one at a time, the last started first
            stop_all([proc], 20)


class Hosts:
    """The hosts of one test, stopped on exit. ``ttl_sec``, ``margin_sec``: the lease's."""

    def __init__(self, tmp: Path, redis: Redis, ttl_sec: float, margin_sec: float) -> None:
        self.tmp = tmp
        self.redis = redis
        self.lease = {"ttl_sec": ttl_sec, "margin_sec": margin_sec, "socket_timeout_sec": min(0.5, ttl_sec / 4)}
        self.hosts: dict[str, Host] = {}
        self.creds = tmp / "creds"
        self.creds.mkdir(exist_ok=True)
        (self.creds / LEASE_CREDENTIAL).write_text(LEASE_PASSWORD + "\n")

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for host in self.hosts.values():
            host.stop()

    def start(self, name: str) -> Host:
        folder = self.tmp / name
        folder.mkdir()
        lease = "".join(f"{k} = {v}\n" for k, v in self.lease.items())
        bus_port, execution_port = free_ports(2)
        (folder / "fleet.toml").write_text(
            f'[bus]\nsocket = "{folder}/bus.sock"\n\n[daemons.bus]\nmetrics_port = {bus_port}\n\n'
            f'[daemons.execution]\nmetrics_port = {execution_port}\npaper_dir = "{self.tmp}/broker"\n'
            "max_order_age_sec = 60\nstop_timeout_sec = 2\n\n"
            f'[daemons.execution.lease]\nredis_url = "unix://{self.redis.socket}"\naccount = "paper"\n'
            f'holder = "{name}"\n{lease}')
        env = {**os.environ, "ALGO_CONFIG": str(folder / "fleet.toml"), "STATE_DIRECTORY": str(folder / "state"),
               "CREDENTIALS_DIRECTORY": str(self.creds)}
        env.pop("NOTIFY_SOCKET", None)
        env.pop("JOURNAL_STREAM", None)
        host = Host(name, folder, env, load_config(folder / "fleet.toml"))
        self.hosts[name] = host
        host.start()
        return host

    def everywhere(self, topic: str, payload: dict[str, Any]) -> None:
        for host in self.hosts.values():
            if host.execution.poll() is None:
                host.publish(topic, payload)

    def book(self) -> dict[str, set[str]]:
        return orders_by_tag(self.tmp / "broker")

    @staticmethod
    def wait(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
        wait(predicate, what, timeout)

