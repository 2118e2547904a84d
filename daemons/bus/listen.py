"""Where the broker's listening socket comes from: systemd (socket activation) or itself."""

from __future__ import annotations

import grp
import logging
import os
import socket
import stat
from pathlib import Path

from ..runtime.config import ConfigError, Problem, file_kind

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


def socket_path_problem(path: Path, who: str = "algo-bus") -> str | None:
    """Why ``who`` must not put its socket at ``path``, judged without touching anything; None when
    it may: nothing there yet (missing directories are created), or a socket (``bind_socket`` then
    probes whether a broker still listens on it). Anything else may be someone's file."""
    try:
        st = path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        for parent in path.parents:
            if parent.exists():
                return None if parent.is_dir() else f"{path}: {parent} is not a directory"
        return None
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    if not stat.S_ISSOCK(st.st_mode):
        return f"{path} is {file_kind(st.st_mode)}, not a socket: {who} replaces only a stale socket"
    return None


def bind_socket(path: Path, group: str, key: str = "bus.socket", who: str = "algo-bus") -> socket.socket:
    """Bind our own socket (outside systemd): mode 0660, group-owned by the fleet's group.

    ConfigError (exit 78, naming the config ``key``) for a path that holds anything but the stale socket
    of a ``who`` that died: a file, a directory, a symlink, or the live socket of another are never replaced.
    (algo-gateway binds its API socket here too.)
    """
    problem = socket_path_problem(path, who)
    if problem is None and path.is_socket():
        problem = _stale_or_live(path, key)
    if problem is not None:
        raise ConfigError(str(path), [Problem(key, problem)])
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o117)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
    except OSError as exc:
        sock.close()
        raise ConfigError(str(path), [Problem(key, f"cannot bind {path}: {exc.strerror or exc}")]) from None
    try:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    except (KeyError, PermissionError) as exc:
        log.warning("socket %s keeps its default group (%s)", path, exc)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _stale_or_live(path: Path, key: str) -> str | None:
    """Removes the socket of a broker (or gateway) that died (nobody accepts: ECONNREFUSED); anything else is a problem."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)  # a live broker with a full backlog does not answer at once
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        try:
            path.unlink()
        except OSError as exc:
            return f"cannot remove the stale socket {path}: {exc.strerror or exc}"
        return None
    except OSError as exc:
        return f"{path} is a socket algo-bus cannot probe ({exc.strerror or exc}): not replacing it"
    finally:
        probe.close()
    return f"another process is listening on {path}: stop it, or give this one another {key}"
