"""Where the broker's listening socket comes from: systemd (socket activation) or itself."""

from __future__ import annotations

import grp
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger("algo.bus")

SD_LISTEN_FDS_START = 3


def systemd_socket() -> socket.socket | None:
    """The socket passed by algo-bus.socket, per sd_listen_fds(3); None when not socket-activated."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0"))
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # children must not think the fds are theirs
    if count < 1:
        return None
    if count > 1:
        log.warning("systemd passed %d sockets; using the first", count)
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise RuntimeError(f"algo-bus.socket must be a ListenStream= Unix socket, got {sock.family!r}/{sock.type!r}")
    sock.setblocking(False)
    return sock


def bind_socket(path: Path, group: str) -> socket.socket:
    """Bind our own socket (outside systemd): mode 0660, group-owned by the fleet's group."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket of a broker that died
        else:
            raise RuntimeError(f"another broker is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    try:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    except (KeyError, PermissionError) as exc:
        log.warning("bus socket %s keeps its default group (%s)", path, exc)
    sock.listen(1024)
    sock.setblocking(False)
    return sock
