"""The checks algo-premarket runs before the engines may start.

Each check returns None when all is well, or one line for the operator that names what to fix.
Conditions worth knowing but not worth stopping the fleet for are logged as warnings by the check.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pwd
import secrets
import socket
import stat
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..bus.listen import socket_path_problem
from ..runtime.config import ConfigError, FleetConfig, KiteSection, fleet_ports, load_config, nginx_ports

log = logging.getLogger("algo.premarket")

STATE_ROOT = Path("/var/lib/algo")
# The fleet's directories under STATE_ROOT; the journal's real location comes from the config.
STATE_DIRS = ("fno", "equity", "options", "risk", "execution", "journal")
# A wall clock before this date means a dead RTC battery and no time source, not a real date.
BUILD_DATE = datetime(2026, 1, 1, tzinfo=UTC)
# Problems listed by the config check; the rest are counted (`algoctl config validate` lists all).
MAX_PROBLEMS = 5

# adjtimex(2): the return value when the clock is not synchronised, and the status bit that says so.
TIME_ERROR = 5
STA_UNSYNC = 0x0040


def check_config(path: Path) -> tuple[FleetConfig | None, str | None]:
    """Load the config; every other check needs it, so it comes back with the verdict."""
    try:
        return load_config(path), None
    except ConfigError as exc:
        shown = "; ".join(str(p) for p in exc.problems[:MAX_PROBLEMS])
        more = len(exc.problems) - MAX_PROBLEMS
        tail = f"; and {more} more (algoctl config validate {exc.source})" if more > 0 else ""
        return None, f"{exc.source} is invalid: {shown}{tail}"


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """glibc's struct timex (64-bit Linux), including its reserved tail."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


@dataclass(frozen=True)
class NtpState:
    """What the kernel knows about its clock discipline (errors in seconds)."""

    synchronised: bool
    esterror_sec: float
    maxerror_sec: float


def read_ntp_state() -> NtpState:
    """adjtimex(2) with modes = 0 only reads, so it needs no CAP_SYS_TIME; raises OSError when refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    timex = _Timex()  # zeroed: modes = 0
    rc = libc.adjtimex(ctypes.byref(timex))
    if rc == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return NtpState(
        synchronised=rc != TIME_ERROR and not timex.status & STA_UNSYNC,
        esterror_sec=timex.esterror / 1e6,
        maxerror_sec=timex.maxerror / 1e6,
    )


def check_clock(max_offset_sec: float, *, now: datetime | None = None, ntp: NtpState | None = None) -> str | None:
    """Orders and journal days are stamped with the wall clock, so it must be roughly right."""
    now = now or datetime.now(UTC)
    if now < BUILD_DATE:
        return (f"wall clock reads {now:%Y-%m-%d %H:%M} UTC, before this build ({BUILD_DATE:%Y-%m-%d}): "
                "dead RTC battery or no time source; set the clock and enable NTP")
    if ntp is None:
        try:
            ntp = read_ntp_state()
        except OSError as exc:
            log.warning("clock: cannot read the kernel's NTP state (adjtimex: %s); clock error not checked",
                        exc.strerror)
            return None
    if not ntp.synchronised:
        # Containers and many hosts are never marked synchronised; that alone must not stop trading.
        log.warning("clock: the kernel says it is not NTP-synchronised; clock error not checked "
                    "(enable systemd-timesyncd or chrony)")
        return None
    # esterror, not maxerror: the kernel grows maxerror by 500 ppm between NTP polls by design,
    # so it passes a second within half an hour even on a well-disciplined clock.
    if ntp.esterror_sec > max_offset_sec:
        return (f"kernel estimates the clock error at {ntp.esterror_sec:.3f} s (at most {ntp.maxerror_sec:.3f} s), "
                f"above premarket.max_clock_offset_sec = {max_offset_sec:g} s: check the NTP source "
                "(timedatectl timesync-status or chronyc tracking)")
    return None


def journal_directory(config: FleetConfig, state_root: Path = STATE_ROOT) -> Path:
    """The configured journal directory, moved along with --state-root when it lies under the default root."""
    directory = config.daemons.journal.directory
    if directory.is_relative_to(STATE_ROOT):
        return state_root / directory.relative_to(STATE_ROOT)
    return directory


def state_directories(config: FleetConfig, state_root: Path = STATE_ROOT) -> list[Path]:
    dirs = {name: state_root / name for name in STATE_DIRS}
    dirs["journal"] = journal_directory(config, state_root)
    return list(dirs.values())


def check_state_directories(config: FleetConfig, state_root: Path = STATE_ROOT) -> str | None:
    """Daemons that cannot write their checkpoints or journal lose state; find out before the open."""
    problems = [p for p in (_check_directory(d, state_root) for d in state_directories(config, state_root)) if p]
    return "; ".join(problems) or None


def _check_directory(path: Path, state_root: Path) -> str | None:
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        try:
            ancestor = _nearest_existing(path)
            if not ancestor.is_dir():
                return f"{ancestor} is not a directory, so {path} cannot be created: remove or move it"
        except OSError as exc:
            return f"cannot inspect {path}: {exc.strerror}"
        if path.is_relative_to(state_root):
            # Missing is fine: the unit's StateDirectory= creates it, with the right owner, at start.
            return None
        # Elsewhere the daemon creates it, which needs the nearest existing ancestor to be writable.
        err = _write_error(ancestor)
        return None if err is None else f"{path} does not exist and {ancestor} is not writable by {_whoami()}: {err}"
    except OSError as exc:
        return f"cannot inspect {path}: {exc.strerror}"
    if not stat.S_ISDIR(mode):
        return f"{path} is not a directory: remove or move it"
    err = _write_error(path)
    return None if err is None else f"{path} is not writable by {_whoami()}: {err}"


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _write_error(directory: Path) -> str | None:
    """Create and remove a file: os.access() does not see LSMs, ACL masks or an immutable flag."""
    probe = directory / f".algo-premarket-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(probe)
    return None


def _whoami() -> str:
    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def check_free_disk(config: FleetConfig, state_root: Path = STATE_ROOT) -> str | None:
    """A full disk fails checkpoints and the journal mid-session; each filesystem is judged once."""
    need = config.premarket.min_free_mb
    filesystems: dict[int, Path] = {}
    for path in (state_root, journal_directory(config, state_root)):
        try:
            filesystems.setdefault(os.stat(_nearest_existing(path)).st_dev, path)
        except OSError as exc:
            return f"cannot inspect {path}: {exc.strerror}"
    short = []
    for path in filesystems.values():
        vfs = os.statvfs(_nearest_existing(path))
        free_mb = vfs.f_bavail * vfs.f_frsize // (1 << 20)
        if free_mb < need:
            short.append(f"{free_mb} MB free on the filesystem of {path}, premarket.min_free_mb needs {need} MB")
    return "; ".join(short) or None


CREDENTIALS = ("api_key", "access_token")  # the secret stays with `algoctl login`, no unit loads it


LISTEN = "0A"  # a socket's state in /proc/net/tcp{,6}
# nginx's pid file under the state root: the prefix the deploy gives the gateway's nginx (ansible/roles/algo_fleet)
NGINX_PID_FILE = Path("nginx/run/nginx.pid")


def listeners(proc_net: Path = Path("/proc/net")) -> dict[int, list[tuple[int, int]]]:
    """Listening TCP sockets of this network namespace: port -> [(owner uid, inode)] (any local address:
    one on the wildcard or on loopback takes the port from a metrics endpoint bound to 127.0.0.1)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == LISTEN:
                port = int(fields[1].rsplit(":", 1)[1], 16)
                out.setdefault(port, []).append((int(fields[7]), int(fields[9])))
    return out


def socket_owner(inode: int, proc: Path = Path("/proc")) -> str:
    """``pid N (comm)`` of the process holding socket ``inode``, where /proc lets us see it."""
    target = f"socket:[{inode}]"
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) == target for fd in (entry / "fd").iterdir()):
                return _process(int(entry.name), proc)
        except OSError:  # gone, or not ours to look at (ProtectProc=invisible hides other users')
            continue
    return "a process this check cannot see"


def _process(pid: int, proc: Path = Path("/proc")) -> str:
    try:
        return f"pid {pid} ({(proc / str(pid) / 'comm').read_text().strip()})"
    except OSError:
        return f"pid {pid}"


def nginx_running(state_root: Path = STATE_ROOT) -> bool:
    """Whether the gateway's nginx runs: its pid file (under the deploy's nginx prefix) names a live process.
    kill(pid, 0) answers across users, which /proc does not here (ProtectProc=invisible); and nginx binds
    every listen address at start or fails, so while it runs it holds them."""
    try:
        pid = int((state_root / NGINX_PID_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def check_ports(config: FleetConfig, fleet_uid: int | None = None, proc: Path = Path("/proc"),
                state_root: Path = STATE_ROOT) -> str | None:
    """Every port the fleet will listen on is free, or held by the fleet itself (a restart of premarket
    with the fleet up): a daemon's by the fleet's own user (premarket runs as it), nginx's (in front of the
    gateway) by a running nginx of the fleet, whose master binds them as root. One taken by anyone else
    would leave that daemon half-started, so it is named with its owner before anything starts; so is a
    live listener on the gateway's socket that is not the fleet's."""
    fleet_uid = os.geteuid() if fleet_uid is None else fleet_uid
    taken = listeners(proc / "net")
    ours = dict(nginx_ports(config))
    if ours and nginx_running(state_root):
        ours = {}  # nginx is up: its own ports are taken by it
    problems = []
    for port, path in [*fleet_ports(config), *ours.items()]:
        for uid, inode in taken.get(port, []):
            if uid != fleet_uid:
                problems.append(f"port {port} ({path}) is taken by {_user(uid)}, {socket_owner(inode, proc)}")
                break
    ports = "; ".join(problems) + ": stop that process or choose another port in fleet.toml" if problems else None
    sock = check_gateway_socket(config.gateway.socket, fleet_uid, proc) if config.gateway.listen is not None else None
    return "; ".join(r for r in (ports, sock) if r) or None


def check_gateway_socket(path: Path, fleet_uid: int, proc: Path = Path("/proc")) -> str | None:
    """The gateway's socket path is free, a stale socket (the gateway replaces it), or the running gateway's
    (a listener of the fleet's user); a live listener of anyone else, or a file that is no socket, is not."""
    problem = socket_path_problem(path, "algo-gateway")
    if problem is not None:
        return f"gateway.socket: {problem}"
    if not path.is_socket():
        return None
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        pid, uid, _gid = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    except ConnectionRefusedError:
        return None  # stale: nobody listens
    except OSError as exc:
        return (f"gateway.socket: {path} is a socket this check cannot probe ({exc.strerror or exc}), owned by "
                f"{_user(path.lstat().st_uid)}: remove it if no gateway of this fleet runs")
    finally:
        probe.close()
    if uid == fleet_uid:
        return None
    return (f"gateway.socket: {path} is listened on by {_user(uid)}, {_process(pid, proc)}: stop that process "
            "or choose another gateway.socket in fleet.toml")


def _user(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


def check_credentials(kite: KiteSection) -> str | None:
    """Live mode cannot reach Kite without them; names only what is missing, never a value."""
    missing = [f"kite_{name}" for name in CREDENTIALS if not _secret(kite, name)]
    if not missing:
        return None
    return (f"live mode is missing the systemd credential(s) {', '.join(missing)} "
            "(LoadCredential= in the unit; the daily access token comes from `algoctl login`)")


def _secret(kite: KiteSection, name: str) -> str:
    value = getattr(kite, name)
    return value.get_secret_value() if value is not None else ""


def check_broker_token(kite: KiteSection, timeout: float = 5) -> str | None:
    """Kite access tokens expire every morning; a stale one must stop the fleet before it trades."""
    # Imported here: kiteconnect pulls in Twisted, and paper mode never needs it.
    import requests
    from kiteconnect import KiteConnect
    from kiteconnect.exceptions import KiteException, TokenException

    client = KiteConnect(api_key=_secret(kite, "api_key"), root=kite.root, timeout=timeout)
    client.set_access_token(_secret(kite, "access_token"))
    try:
        profile = client.profile()
    except TokenException:
        return "Kite access token rejected (expired or revoked): run `algoctl login`"
    except KiteException as exc:
        return f"Kite refused the profile request: {type(exc).__name__} (HTTP {exc.code}): {_scrub(str(exc), kite)}"
    except requests.RequestException as exc:
        # The exception text can carry the request; its type says enough without risking a secret.
        return f"cannot reach Kite at {kite.root}: {type(exc).__name__}"
    log.info("Kite access token accepted for user %s", profile.get("user_id"))
    return None


def _scrub(text: str, kite: KiteSection) -> str:
    for name in CREDENTIALS:
        value = _secret(kite, name)
        if value:
            text = text.replace(value, "**********")
    return text
