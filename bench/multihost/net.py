"""Simulated hosts for the multi-host benchmark: network namespaces joined by veth pairs to one Linux
bridge, created by the bench and removed again whatever happens.

Each namespace gets an address of ``subnet`` (``.10 + i``) and its loopback; the bridge in the root
namespace has no address, so the hosts reach each other and nothing else, and nothing outside them
reaches in. A process joins a namespace by ``nsenter --net`` (it execs: the pid the bench holds is the
daemon's); the bench reads the daemons' loopback-only metrics from a thread of its own that joined the
namespace (``Reader``), as a local Prometheus would.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _enter(netns: str) -> None:
    """Move the calling thread (only it) into ``netns``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Reader:
    """Calls made from inside a namespace: one worker thread that joined it at its start."""

    def __init__(self, netns: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, initializer=_enter, initargs=(netns,))

    def call(self, fn: Callable[[], T]) -> T:
        return self._pool.submit(fn).result()

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class Topology:
    """Namespaces ``<prefix>-<host>`` with addresses ``<subnet>.10``, ``.11``, ... in the order of ``hosts``,
    each joined by a veth pair (``<prefix>-<host>`` in the root namespace, ``eth0`` inside) to the bridge
    ``<prefix>0``. Leftovers of an earlier run that died unclean are removed first; everything made is
    removed on exit (Ctrl-C and errors included) and ``leftovers()`` says what of it is still there."""

    def __init__(self, prefix: str, subnet: str, hosts: Sequence[str]) -> None:
        self.prefix, self.subnet, self.hosts = prefix, subnet, tuple(hosts)
        self.bridge = f"{prefix}0"
        self.readers: dict[str, Reader] = {}

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{10 + self.hosts.index(host)}"

    def veth(self, host: str) -> str:
        return f"{self.prefix}-{host}"[:15]

    def exec_prefix(self, host: str) -> list[str]:
        """What runs a command in ``host``'s namespace."""
        return ["nsenter", f"--net={NETNS_DIR / self.netns(host)}", "--"]

    def reader(self, host: str) -> Reader:
        if host not in self.readers:
            self.readers[host] = Reader(self.netns(host))
        return self.readers[host]

    def __enter__(self) -> Topology:
        self.remove()
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            ip("link", "set", self.bridge, "up")
            for host in self.hosts:
                ns, veth = self.netns(host), self.veth(host)
                ip("netns", "add", ns)
                ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
                ip("link", "set", veth, "master", self.bridge, "up")
                ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
                ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.remove()

    def remove(self) -> None:
        """Delete the namespaces (their ends of the veth pairs go with them, and so the pairs) and the bridge."""
        for reader in self.readers.values():
            reader.close()
        self.readers.clear()
        for host in self.hosts:
            if (NETNS_DIR / self.netns(host)).exists():
                ip("netns", "del", self.netns(host), check=False)
            ip("link", "del", self.veth(host), check=False)
        ip("link", "del", self.bridge, check=False)

    def leftovers(self) -> list[str]:
        """Namespaces and links of this topology that exist now."""
        out = [self.netns(h) for h in self.hosts if (NETNS_DIR / self.netns(h)).exists()]
        links = {line.split()[1].split("@")[0].rstrip(":") for line in ip("-o", "link").stdout.splitlines()}
        return out + sorted(links & ({self.veth(h) for h in self.hosts} | {self.bridge}))
