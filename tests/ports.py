"""Free loopback TCP ports for the tests' daemons, nginx and servers: chosen by the kernel, never fixed, so
tests running side by side (pytest-xdist workers) and a fleet on this machine (9470-9481) never collide."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: all bound at once, so the kernel cannot hand the same one out twice (two
    calls of a bind-and-close helper can, and a config then refuses the clash)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def free_port() -> int:
    """One free port (several for one config: ``free_ports``)."""
    (port,) = free_ports(1)
    return port


@contextmanager
def refused_port() -> Iterator[int]:
    """A port bound but not listening for the block: connecting to it is refused, and nothing else (another
    test's server, running beside this one) can take it meanwhile, as it could a port closed before use."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])
