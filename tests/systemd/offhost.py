"""Another machine for the systemd tests: a network namespace of the test's own, joined to the host's
by a veth pair on a private /30 (the host's end .1, the peer's .2). A server the test starts inside it
(``inside()``) is off-host for the fleet: a real, non-loopback address reached through the kernel's
routing, which systemd's IPAddressDeny= judges as it would judge api.kite.trade. Nothing is routed
beyond the pair: the peer has no default route and the host no route to it but the pair's own.
``serve_names()`` makes the peer the DNS server too, as a host's resolver in its LAN would be.
"""

from __future__ import annotations

import ctypes
import os
import random
import socket
import struct
import subprocess
import threading
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
        self._servers: list[socket.socket] = []

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

    def serve_names(self, names: dict[str, str]) -> None:
        """A DNS server on the peer's port 53 (UDP) answering A queries for ``names`` (name -> IPv4
        address); a name it does not know is NXDOMAIN, another type of record for one it knows is empty."""
        with self.inside():
            server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind((self.address, 53))
        self._servers.append(server)
        threading.Thread(target=_answer, args=(server, names), name="offhost-dns", daemon=True).start()

    def close(self) -> None:
        """Deleting the namespace destroys its end of the pair, and with it the host's end."""
        for server in self._servers:
            server.close()
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


def _answer(server: socket.socket, names: dict[str, str]) -> None:
    """RFC 1035 at its smallest: one question per query, answered from ``names``."""
    while True:
        try:
            query, client = server.recvfrom(512)
        except OSError:  # closed
            return
        end = 12
        while end < len(query) and query[end]:
            end += query[end] + 1
        if len(query) < end + 5:
            continue
        labels, pos = [], 12
        while query[pos]:
            labels.append(query[pos + 1:pos + 1 + query[pos]].decode("ascii", "replace").lower())
            pos += query[pos] + 1
        name = ".".join(labels)
        qtype = struct.unpack("!H", query[end + 1:end + 3])[0]
        question = query[12:end + 5]
        answers = b""
        if name in names and qtype == 1:  # A
            answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(names[name])
        rcode = 0 if name in names else 3
        header = struct.pack("!HHHHHH", struct.unpack("!H", query[:2])[0], 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
        server.sendto(header + question + answers, client)
