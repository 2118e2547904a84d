"""Simulated hosts for multi-host tests: each a private systemd (daemons/algoctl/sandbox.py) as PID 1 of its
own PID, mount, UTS, network and cgroup namespace, with a cgroup subtree of its own (``algo-mh-<host>`` in
every hierarchy); the network namespaces joined by veth pairs to one bridge the test makes
(bench/multihost/net.py's ``Topology``: 10.250.0.0/24, no address on the host's side); redis-server alone in
a fourth namespace, reachable at 10.250.0.10:6379 from the hosts and on a Unix socket (a file) from the test.
Bare hosts have nothing of the fleet but sshd (tests/systemd/ssh.py), and a controller namespace of their own
runs Ansible against them over SSH.

Nothing is left after teardown (namespaces, links, cgroups, processes: checked against a snapshot taken
before), and a run that was killed outright is cleaned up by the next one before it starts: every name
begins with ``algo-mh``, nothing else of the project's uses that prefix.
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
from tests.conftest import REPO
from tests.lease_hosts import LEASE_ACL, LEASE_CREDENTIAL, LEASE_PASSWORD
from tests.systemd.ssh import UNIT, SshAccess
from tests.test_bridge import CREDENTIAL, PASSWORD, RedisServer

sys.path.insert(0, str(REPO / "bench"))  # bench/ is no package; bench/multihost is (mypy's name: multihost)

from multihost.net import Topology, ip

PREFIX = "algo-mh"  # namespaces algo-mh-<host>, their veth pairs' ends algo-mh-<host>, the bridge algo-mh0
SUBNET = "10.250.0"
REDIS = f"{SUBNET}.10"
REDIS_URL = f"redis://{REDIS}:6379"
CONTROLLER = "control"  # the namespace Ansible runs in when there are bare hosts
PAPER = "/var/lib/algo/execution/paper"  # the paper broker's book, one directory shared by the executions


def unavailable_reason() -> str | None:
    for tool in ("ip", "redis-server"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iproute2 redis-server)"
    return None


def namespaces() -> set[str]:
    """The network namespaces of these tests (other tests may make theirs meanwhile: scripts/test.sh's streams)."""
    names = (line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip())
    return {n for n in names if n.startswith(PREFIX)}


def links() -> set[str]:
    names = (line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link", "show").stdout.splitlines())
    return {n for n in names if n.startswith(PREFIX)}


def cgroups() -> set[Path]:
    return {Path(d) for h in own_cgroup_dirs("") for top in h.path.glob(f"{PREFIX}-*") for d, _, _ in os.walk(top)}


def processes_in(name: str) -> list[int]:
    return [int(p) for p in ip("netns", "pids", name, check=False).stdout.split()]


def clean_stale() -> None:
    """What a run killed outright left beyond the network (``Topology`` removes that): the processes in its
    namespaces (a host's systemd takes its whole PID namespace with it), and the hosts' cgroup subtrees."""
    for name in sorted(namespaces()):
        for pid in processes_in(name):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while processes_in(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        ip("netns", "delete", name)
    for h in own_cgroup_dirs(""):
        for leftover in h.path.glob(f"{PREFIX}-*"):
            _remove_own_cgroups(leftover.name)


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


@dataclass
class HostSpec:
    units: tuple[str, ...] = ()  # the fleet's units this host has (a Wants= naming another's is ignored)
    config: str = ""  # its fleet.toml
    shares_paper_book: bool = False  # its execution uses the paper book shared by the account's executions
    # bare: nothing of the fleet on it (Sandbox(bare=True)), and sshd on its address for the test's controller
    # (tests/systemd/ssh.py) to deploy it with Ansible; units and config are then Ansible's to write
    bare: bool = False


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

    def __init__(self, tmp: Path, specs: Mapping[str, HostSpec]) -> None:
        self.tmp = tmp
        self.specs = specs
        # redis at .10, the hosts at .11, .12, ...; with bare hosts, a namespace for the controller last
        self.ssh = SshAccess(tmp / "ssh") if any(s.bare for s in specs.values()) else None
        self.net = Topology(PREFIX, SUBNET, ("redis", *specs, *([CONTROLLER] if self.ssh else [])))
        self.hosts: dict[str, Host] = {}
        self._stack = ExitStack()
        self.canary = Path("/tmp") / f"{PREFIX}-canary-{os.getpid()}"  # a stock sysinit.target would wipe /tmp

    def __enter__(self) -> Hosts:
        clean_stale()
        self.before = Snapshot()
        self.canary.write_text("the multi-host test's; /tmp must survive its hosts\n")
        try:
            self._stack.enter_context(self.net)
            (self.tmp / "redis").mkdir()
            self.redis = RedisServer(self.tmp / "redis", aof=True, appendfsync="everysec", users=[LEASE_ACL],
                                     listen=f"{REDIS}:6379", netns=self.net.netns("redis"))
            self.redis.start()
            self._stack.callback(self.redis.kill)
            paper = self.tmp / "paper"
            paper.mkdir()
            for name, spec in self.specs.items():
                self.hosts[name] = self._boot(name, spec, paper)
        except BaseException:
            self._stack.close()
            raise
        return self

    def _boot(self, name: str, spec: HostSpec, paper: Path) -> Host:
        root = self.tmp / name
        binds = [(paper, PAPER)] if spec.shares_paper_book else []
        box = Sandbox(root / "sandbox", units=spec.units, netns=self.net.netns(name), cgroup=self.net.netns(name),
                      hostname=name, bare=spec.bare, binds=binds)
        root.mkdir()
        if self.ssh is not None and spec.bare:
            box.prepare()
            self.ssh.install(box, name, self.net.address(name))
        else:
            self._configure(box, root, spec, paper)
        self._stack.callback(box.stop)
        box.start()
        if spec.bare:
            box.systemctl("start", UNIT, check=True)
        return Host(name, box)

    def _configure(self, box: Sandbox, root: Path, spec: HostSpec, paper: Path) -> None:
        """A host with its fleet.toml, credentials and the drop-ins a multi-host deployment adds."""
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

    def cut(self, name: str) -> None:
        """A partition: the host's link down (its sends fail at once: "Network is unreachable")."""
        ip("-n", self.net.netns(name), "link", "set", "eth0", "down")

    def restore(self, name: str) -> None:
        ip("-n", self.net.netns(name), "link", "set", "eth0", "up")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stack.close()
        deadline = time.monotonic() + 10  # a deleted namespace's veth pair may linger a moment: the kernel's async cleanup
        while (left := self.before.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.1)
        survived = self.canary.exists()
        self.canary.unlink(missing_ok=True)
        if exc is None:
            if left:
                raise SandboxError(f"the hosts' teardown left {'; '.join(left)}")
            if not survived:
                raise SandboxError(f"{self.canary} vanished while the hosts ran: something wiped the host's /tmp")

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def control(self, *cmd: str, env: Mapping[str, str] | None = None,
                timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """A command of the controller's, run in its own namespace (it reaches the hosts' sshd and Redis)."""
        assert self.ssh is not None, "no bare hosts, so no controller"
        return subprocess.run([*self.net.exec_prefix(CONTROLLER), *cmd], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})

    def admin(self) -> redis.Redis:
        """A Redis client as its administrator, on the Unix socket (from the test's own namespace)."""
        return redis.Redis(unix_socket_path=str(self.redis.socket), socket_timeout=5)
