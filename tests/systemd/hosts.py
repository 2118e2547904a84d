"""Simulated hosts for multi-host tests: each a private systemd (daemons/algoctl/sandbox.py) as PID 1 of its
own PID, mount, UTS, network and cgroup namespace, with a cgroup subtree of its own (``algo-mh-<host>`` below
the test's cgroup in every hierarchy); the network namespaces joined by veth pairs to one bridge the test
makes (10.250.0.0/24, no address on the host's side); redis-server alone in a fourth namespace, reachable
at 10.250.0.10:6379 from the hosts and on a Unix socket (a file) from the test.

Nothing is left after teardown (namespaces, links, cgroups, processes: checked against a snapshot taken
before), and a run that crashed is cleaned up by the next one before it starts: every name begins with
``algo-mh`` (``algomh`` for links), nothing else of the project's uses that prefix.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import redis

from daemons.algoctl.sandbox import Sandbox, SandboxError, _remove_own_cgroups, own_cgroup_dirs
from tests.lease_hosts import LEASE_ACL, LEASE_CREDENTIAL, LEASE_PASSWORD
from tests.test_bridge import CREDENTIAL, PASSWORD, RedisServer

PREFIX = "algo-mh"
BRIDGE = "algomh0"
VETH = "algomh-"  # the host's end of a namespace's veth pair: algomh-<name>
SUBNET = "10.250.0"
REDIS = f"{SUBNET}.10"
REDIS_URL = f"redis://{REDIS}:6379"
PAPER = "/var/lib/algo/execution/paper"  # the paper broker's book, one directory shared by the executions


def netns(host: str) -> str:
    return f"{PREFIX}-{host}"


def unavailable_reason() -> str | None:
    for tool in ("ip", "redis-server"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 redis-server)"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def namespaces() -> set[str]:
    return {line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()}


def links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link", "show").stdout.splitlines()}


def cgroups() -> set[Path]:
    return {Path(d) for h in own_cgroup_dirs("") for top in h.path.glob(f"{PREFIX}-*") for d, _, _ in os.walk(top)}


def processes_in(name: str) -> list[int]:
    return [int(p) for p in ip("netns", "pids", name, check=False).stdout.split()]


def clean_stale() -> None:
    """Whatever a crashed run of these tests left: its namespaces' processes (a host's systemd takes its
    whole PID namespace with it), the namespaces, the bridge and the hosts' cgroup subtrees."""
    for name in sorted(n for n in namespaces() if n.startswith(PREFIX)):
        for pid in processes_in(name):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while processes_in(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        ip("netns", "delete", name)
    if BRIDGE in links():
        ip("link", "delete", BRIDGE)
    wait_links_gone()
    for h in own_cgroup_dirs(""):
        for leftover in h.path.glob(f"{PREFIX}-*"):
            _remove_own_cgroups(leftover.name)


def wait_links_gone(timeout: float = 20) -> None:
    """The kernel dismantles a deleted namespace, and its veth pairs, after its last user is gone: asynchronously."""
    deadline = time.monotonic() + timeout
    while any(link.startswith(VETH) for link in links()) and time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass
class Snapshot:
    """What of the host's kernel state these tests touch, to compare after teardown."""
    namespaces: set[str] = field(default_factory=namespaces)
    links: set[str] = field(default_factory=links)
    cgroups: set[Path] = field(default_factory=cgroups)

    def leftovers(self) -> list[str]:
        after = Snapshot()
        return [f"{what}: {sorted(str(x) for x in getattr(after, what) - getattr(self, what))}"
                for what in ("namespaces", "links", "cgroups") if getattr(after, what) - getattr(self, what)]


class Network:
    """One bridge, and per name a network namespace on it (eth0 at 10.250.0.<octet>)."""

    def __init__(self) -> None:
        self.members: dict[str, int] = {}
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("link", "set", BRIDGE, "up")

    def add(self, name: str, octet: int) -> None:
        ns = netns(name)
        ip("netns", "add", ns)
        self.members[name] = octet
        ip("link", "add", f"{VETH}{name}"[:15], "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", f"{VETH}{name}"[:15], "master", BRIDGE, "up")
        ip("-n", ns, "addr", "add", f"{SUBNET}.{octet}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")

    def cut(self, name: str) -> None:
        """A partition: the host's link down (its sends fail fast: "Network is unreachable")."""
        ip("-n", netns(name), "link", "set", "eth0", "down")

    def restore(self, name: str) -> None:
        ip("-n", netns(name), "link", "set", "eth0", "up")

    def delete(self) -> None:
        for name in self.members:
            ip("netns", "delete", netns(name), check=False)  # takes its end of the veth pair with it
        ip("link", "delete", BRIDGE, check=False)
        wait_links_gone()


@dataclass
class HostSpec:
    octet: int  # its address: 10.250.0.<octet>
    units: tuple[str, ...]  # the fleet's units this host has (a Wants= naming another's is ignored)
    config: str  # its fleet.toml
    shares_paper_book: bool = False  # its execution uses the paper book shared by the account's executions


class Host:
    def __init__(self, name: str, box: Sandbox) -> None:
        self.name = name
        self.box = box

    def start(self, *units: str, timeout: float = 90) -> None:
        self.box.systemctl("start", *units, check=True, timeout=timeout)

    def status(self, unit: str) -> str:
        return self.box.show(unit, "StatusText")["StatusText"]

    def journal(self, unit: str, *args: str) -> str:
        return self.box.journalctl("-u", unit, *args).stdout

    def journal_json(self, unit: str) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.box.journalctl("-u", unit, "-o", "json").stdout.splitlines()]

    def messages(self, unit: str, since: float = 0.0) -> list[str]:
        """A unit's journal messages logged after ``since`` (a time.time())."""
        return [str(e.get("MESSAGE", "")) for e in self.journal_json(unit) if int(e["__REALTIME_TIMESTAMP"]) / 1e6 > since]

    def metric(self, port: int, line_start: str) -> float:
        """The sum of one of this host's daemons' samples, scraped from inside its network namespace."""
        body = self.box.run(sys.executable, "-c", "import urllib.request; print(urllib.request.urlopen("
                            f"'http://127.0.0.1:{port}/metrics', timeout=5).read().decode())", check=True).stdout
        return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith(line_start))

    def kill(self) -> None:
        """kill -9 of the whole host: its PID 1, and with it (the kernel's doing) every process in its namespaces."""
        assert self.box.pid is not None
        os.kill(self.box.pid, signal.SIGKILL)


class Hosts:
    """The simulated hosts and Redis of one test module; everything is torn down on exit."""

    def __init__(self, tmp: Path, specs: Mapping[str, HostSpec], redis_octet: int = 10) -> None:
        self.tmp = tmp
        self.specs = specs
        self.redis_octet = redis_octet
        self.hosts: dict[str, Host] = {}
        self._stack = ExitStack()
        self.canary = Path("/tmp") / f"{PREFIX}-canary-{os.getpid()}"  # a stock sysinit.target would wipe /tmp

    def __enter__(self) -> Hosts:
        clean_stale()
        self.before = Snapshot()
        self.canary.write_text("the multi-host test's; /tmp must survive its hosts\n")
        try:
            net = Network()
            self._stack.callback(net.delete)
            self.net = net
            net.add("redis", self.redis_octet)
            (self.tmp / "redis").mkdir()
            self.redis = RedisServer(self.tmp / "redis", aof=True, appendfsync="everysec", users=[LEASE_ACL],
                                     listen=f"{REDIS}:6379", netns=netns("redis"))
            self.redis.start()
            self._stack.callback(self.redis.kill)
            paper = self.tmp / "paper"
            paper.mkdir()
            for name, spec in self.specs.items():
                net.add(name, spec.octet)
                self.hosts[name] = self._boot(name, spec, paper)
        except BaseException:
            self._stack.close()
            raise
        return self

    def _boot(self, name: str, spec: HostSpec, paper: Path) -> Host:
        root = self.tmp / name
        binds = [(paper, PAPER)] if spec.shares_paper_book else []
        box = Sandbox(root / "sandbox", units=spec.units, netns=netns(name), cgroup=netns(name), hostname=name,
                      binds=binds)
        root.mkdir()
        config = root / "fleet.toml"
        config.write_text(spec.config)
        box.prepare(config)
        creds = box.etc / "credentials"
        creds.mkdir(mode=0o700, exist_ok=True)
        for credential, password in ((CREDENTIAL, PASSWORD), (LEASE_CREDENTIAL, LEASE_PASSWORD)):
            (creds / credential).write_text(password + "\n")
            (creds / credential).chmod(0o600)
        # what the deployment adds on a host of a multi-host fleet: Redis's address, and the lease's password
        box.install_dropin("algo-bridge.service", "redis", f"[Service]\nIPAddressAllow={REDIS}\n")
        if "algo-execution.service" in spec.units:
            box.install_dropin("algo-execution.service", "lease",
                               f"[Service]\nLoadCredential={LEASE_CREDENTIAL}:/etc/algo/credentials/{LEASE_CREDENTIAL}\n"
                               f"IPAddressAllow={REDIS}\n")
        if spec.shares_paper_book:
            (box.state / "execution" / "paper").mkdir(parents=True, exist_ok=True)
            os.chown(paper, *box.user_ids())
        self._stack.callback(box.stop)
        box.start()
        return Host(name, box)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()
        left = self.before.leftovers()
        survived = self.canary.exists()
        self.canary.unlink(missing_ok=True)
        if exc is None:
            if left:
                raise SandboxError(f"the hosts' teardown left {'; '.join(left)}")
            if not survived:
                raise SandboxError(f"{self.canary} vanished while the hosts ran: something wiped the host's /tmp")

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def admin(self) -> redis.Redis:
        """A Redis client as its administrator, on the Unix socket (from the test's own namespace)."""
        return redis.Redis(unix_socket_path=str(self.redis.socket), socket_timeout=5)
