"""Another machine for the systemd tests: a network namespace of the test's own, joined to the host's
by a veth pair on a private /30 (the host's end .1, the peer's .2). A server the test starts inside it
(``inside()``) is off-host for the fleet: a real, non-loopback address reached through the kernel's
routing, which systemd's IPAddressDeny= judges as it would judge api.kite.trade. Nothing is routed
beyond the pair: the peer has no default route and the host no route to it but the pair's own.
"""

from __future__ import annotations

import ctypes
import os
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self

CLONE_NEWNET = 0x40000000
SUBNETS = "10.231"  # 10.231.N.0/30, N free on the host


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=10)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns(CLONE_NEWNET)")


class Peer:
    """``with Peer() as peer``: the namespace ``peer.name`` at ``peer.address``, gone on exit."""

    def __init__(self) -> None:
        self.name = f"algo-peer-{os.getpid()}"
        self.link = f"algopeer{os.getpid() % 100000}"
        used = _ip("-4", "-o", "addr", "show") + _ip("-4", "route", "show")
        free = [n for n in range(256) if f"{SUBNETS}.{n}." not in used]
        net = f"{SUBNETS}.{random.Random(os.getpid()).choice(free)}"
        self.host_address, self.address = f"{net}.1", f"{net}.2"

    def __enter__(self) -> Self:
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.link)
            _ip("link", "set", self.link, "up")
            _ip("-n", self.name, "addr", "add", f"{self.address}/30", "dev", "eth0")
            _ip("-n", self.name, "link", "set", "eth0", "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Deleting the namespace destroys its end of the pair, and with it the host's end."""
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", self.link], check=False, capture_output=True, timeout=10)

    @contextmanager
    def inside(self) -> Iterator[None]:
        """This thread in the peer's namespace: sockets created meanwhile belong to it for good
        (threads serving them later need not be inside)."""
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(there)
            try:
                yield
            finally:
                _setns(back)
        finally:
            os.close(there)
            os.close(back)
