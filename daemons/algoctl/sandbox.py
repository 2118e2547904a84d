"""A private systemd as PID 1 of its own PID + mount namespace: how tests prove the units, and
how a newcomer runs the fleet on a machine whose init is not systemd.

What the namespace sees differently from the host:
  /run               a fresh tmpfs (the bus socket, systemd's own runtime state)
  /var/lib/systemd   a fresh tmpfs (the host's timer stamps and random seed stay untouched)
  /var/lib/algo      <root>/state      (StateDirectory= of every unit)
  /var/log/journal   <root>/journal    (readable from the host: journalctl -D <root>/journal)
  /etc/algo          <root>/etc        (fleet.toml)
  /etc/passwd, group with the fleet's user added when the host has none
  /etc/resolv.conf   with ``nameserver`` given: that DNS server only (a test's, naming its stand-in for Kite)
  /etc/systemd/journald.conf   persistent storage, no reading of the host's kernel log
Only a whitelist of stock units is visible (journald and the basic targets): a stock
sysinit.target would run the host's tmpfiles, sysctl and friends, and wipe the host's /tmp.

A simulated host of a multi-host test (``netns``, ``cgroup``, ``hostname``) also has a network namespace
made beforehand, its own UTS namespace, and its own cgroup subtree (``<hierarchy>/<cgroup>``) as the
root of a cgroup namespace: several such sandboxes run at once without sharing a unit's cgroup.
Traps and their reasons: docs/ARCHITECTURE.md#the-sandbox-daemonsalgoctlsandboxpy.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..runtime.config import ConfigError, load_config
from .units import configs_dir, render_units

STOCK_DIR = Path("/lib/systemd/system")
STOCK_UNITS = (
    "systemd-journald.service", "systemd-journald.socket", "systemd-journald-dev-log.socket",
    "systemd-journal-flush.service",
    "sysinit.target", "basic.target", "sockets.target", "timers.target", "paths.target", "slices.target",
    "multi-user.target", "network.target", "network-online.target", "time-sync.target",
    "shutdown.target", "umount.target", "final.target", "exit.target", "systemd-exit.service",
    "-.slice", "system.slice",
)
BOOT_TARGET = "algo-sandbox.target"
ACTIVE = Path("/run/algo-sandbox.json")
# One empty file per sandbox running in a cgroup subtree of its own, named as that subtree: a shared sandbox
# (one that records itself in ACTIVE) may run beside such ones, and must neither count nor remove their cgroups.
OWN_CGROUPS = Path("/run/algo-sandbox-cgroups")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Where the sandbox binds its own directories (MOUNTPOINTS; a bare one BARE_MOUNTPOINTS too). One it finds
# missing it makes, and removes at stop; and removing a directory detaches every other mount namespace's
# mount on it. Sandboxes that run at once (tests/systemd's two streams) need these made beforehand.
MOUNTPOINTS = ("/var/lib/algo", "/var/log/journal", "/etc/algo")
BARE_MOUNTPOINTS = ("/opt/algo", "/etc/systemd/system")


class SandboxError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """Why a sandbox cannot boot here, or None when it can."""
    if os.geteuid() != 0:
        return "the systemd sandbox needs root (a new PID + mount namespace and a private systemd as PID 1)"
    for tool in ("unshare", "nsenter", "systemctl", "journalctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not (STOCK_DIR / "systemd-journald.service").exists() or not Path("/lib/systemd/systemd").exists():
        return "systemd is not installed (apt-get install systemd)"
    return None


class Sandbox:
    """Boot with start(), drive with systemctl()/journalctl(), tear down with stop()."""

    def __init__(self, root: Path, *, venv: str = sys.prefix, user: str = "algo", group: str = "algo",
                 bare: bool = False, nameserver: str | None = None, units: Collection[str] | None = None,
                 netns: str | None = None, cgroup: str | None = None, hostname: str | None = None,
                 binds: Sequence[tuple[Path, str]] = ()) -> None:
        self.root = root.resolve()
        self.venv = venv
        self.nameserver = nameserver  # the one DNS server in the sandbox's /etc/resolv.conf
        # units: only these of the fleet's units are rendered (a host of a multi-host fleet runs its own
        # daemons only; a Wants= naming a unit that is not there is ignored)
        self.only_units = None if units is None else frozenset(units)
        self.netns = netns  # a network namespace made beforehand (ip netns add): the sandbox's network
        self.cgroup = cgroup  # the name of its own cgroup subtree in every hierarchy: PID 1 is that root
        self.hostname = hostname  # with its own UTS namespace
        self.binds = tuple(binds)  # more (host directory, path inside) bind mounts, after the usual ones
        # bare: a host with nothing of the fleet yet (what `ansible-playbook deploy.yml` starts from):
        # /etc/algo, /opt/algo, /var/lib/algo and /etc/systemd/system are empty directories of the
        # sandbox, and systemd loads units from /etc/systemd/system like a real host.
        self.bare = bare
        self.opt = self.root / "opt"
        self.system_units = self.root / "systemd-system"
        self.user = user
        self.group = group
        self.units = self.root / "units"
        self.state = self.root / "state"
        self.journal = self.root / "journal"
        self.etc = self.root / "etc"
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._made_mountpoints: list[Path] = []
        self._cgroups_before: set[Path] = set()

    # ---- setup -------------------------------------------------------------------------
    def prepare(self, config: Path | None = None) -> None:
        """Render units and the file-system view; safe to call again (re-renders units)."""
        for d in (self.units, self.state, self.journal, self.etc, self.opt, self.system_units):
            d.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o755)
        if not self.bare:
            if config is not None:
                shutil.copyfile(config, self.etc / "fleet.toml")
            for unit in render_units(self.units, self.venv, live=_is_live(self.etc / "fleet.toml")):
                if self.only_units is not None and unit.parent == self.units and unit.name not in self.only_units:
                    unit.unlink()
        for name in STOCK_UNITS:
            link = self.units / name
            if not link.is_symlink() and (STOCK_DIR / name).exists():
                link.symlink_to(STOCK_DIR / name)
        (self.units / BOOT_TARGET).write_text(
            "[Unit]\nDescription=algo-fleet sandbox boot target\n"
            "Wants=systemd-journald.service systemd-journal-flush.service\n"
        )
        # The host's kernel log is not the sandbox's: journald neither reads nor writes it.
        self.install_dropin("systemd-journald.service", "sandbox", "[Service]\nEnvironment=SYSTEMD_LOG_TARGET=null\n")
        (self.root / "journald.conf").write_text("[Journal]\nStorage=persistent\nReadKMsg=no\n")
        self._write_identity()
        if self.bare:
            return
        shutil.copytree(configs_dir() / "instruments", self.etc / "instruments", dirs_exist_ok=True)
        self._check_reachable()

    def install_dropin(self, unit: str, name: str, text: str) -> Path:
        """Add a drop-in (e.g. a shorter WatchdogSec= for a test); run daemon_reload() after."""
        d = self.units / f"{unit}.d"
        d.mkdir(exist_ok=True)
        path = d / f"{name}.conf"
        path.write_text(text)
        return path

    def _write_identity(self) -> None:
        """Give the namespace the fleet's user and group without touching the host's /etc."""
        passwd, group = Path("/etc/passwd").read_text(), Path("/etc/group").read_text()
        users = {ln.split(":")[0]: int(ln.split(":")[2]) for ln in passwd.splitlines() if ln}
        groups = {ln.split(":")[0]: int(ln.split(":")[2]) for ln in group.splitlines() if ln}
        taken = {*users.values(), *groups.values()}
        free = (i for i in range(999, 100, -1) if i not in taken)
        gid = groups[self.group] if self.group in groups else next(free)
        if self.group not in groups:
            group += f"{self.group}:x:{gid}:\n"
        if self.user not in users:
            uid = gid if gid not in users.values() else next(free)
            passwd += f"{self.user}:x:{uid}:{gid}:algo-fleet:/nonexistent:/usr/sbin/nologin\n"
        (self.root / "passwd").write_text(passwd)
        (self.root / "group").write_text(group)
        if self.hostname:
            (self.root / "hostname").write_text(self.hostname + "\n")
        if self.nameserver:
            (self.root / "resolv.conf").write_text(f"nameserver {self.nameserver}\noptions timeout:2 attempts:2\n")

    def user_ids(self) -> tuple[int, int]:
        """The fleet user's uid and gid inside the sandbox (prepare() chose them)."""
        for line in (self.root / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == self.user:
                return int(fields[2]), int(fields[3])
        raise SandboxError(f"no user {self.user} in {self.root / 'passwd'}")

    def _check_reachable(self) -> None:
        """The fleet user must reach the venv: a checkout under /root (mode 0700) is not reachable."""
        venv = Path(self.venv).resolve()
        for hidden in (Path("/tmp"), Path("/var/tmp"), Path("/home"), Path("/root")):
            if venv.is_relative_to(hidden):
                raise SandboxError(
                    f"the venv {venv} is under {hidden}, which the units hide (PrivateTmp=, ProtectHome=); "
                    "put the checkout somewhere like /srv or /opt"
                )
        for path in (Path(self.venv), Path(os.path.realpath(Path(self.venv) / "bin" / "python"))):
            p = path
            while p != p.parent:
                if p.exists() and not os.stat(p).st_mode & 0o001:
                    raise SandboxError(
                        f"{p} is not searchable by other users, so the fleet's user cannot run {path}; "
                        "put the checkout somewhere like /srv or /opt, or chmod o+x it"
                    )
                p = p.parent

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        reason = unavailable_reason()
        if reason:
            raise SandboxError(reason)
        other = None if self.cgroup else active_sandbox()  # sandboxes in cgroups of their own do not collide
        if other is not None:
            raise SandboxError(
                f"a sandbox is already running at {other['root']} (pid {other['pid']}); "
                f"stop it first: algoctl sandbox stop --root {other['root']}"
            )
        if not (self.units / BOOT_TARGET).exists():
            self.prepare()
        self._cgroups_before = set() if self.cgroup else set(_cgroup_dirs())  # its own subtree is removed whole
        binds = list(zip((self.state, self.journal, self.etc), MOUNTPOINTS, strict=True))
        unit_path = str(self.units)
        if self.bare:
            binds += zip((self.opt, self.system_units), BARE_MOUNTPOINTS, strict=True)
            unit_path = f"/etc/systemd/system:{self.units}"
        binds += [(src, dst) for src, dst in self.binds]
        for _, target in binds:
            t = Path(target)
            if not t.exists():
                t.mkdir(parents=True)
                self._made_mountpoints.append(t)
        script = [
            "set -e",
            "mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run",
            "mkdir -p /run/systemd /run/lock",
            "mount -t tmpfs -o mode=0755 tmpfs /var/lib/systemd",
            *(f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}" for src, dst in binds),
            f"mount --bind {shlex.quote(str(self.root / 'passwd'))} /etc/passwd",
            f"mount --bind {shlex.quote(str(self.root / 'group'))} /etc/group",
            f"mount --bind {shlex.quote(str(self.root / 'journald.conf'))} /etc/systemd/journald.conf",
            *self._resolver(),
            *self._uts(),
            # Shared within the namespace (the host's mounts stay cut off by --propagation private), as
            # a booted systemd makes / itself; in a container it does not, and a unit's credentials,
            # which PID 1 mounts in a child namespace and moves into place, would never reach it.
            "mount --make-rshared /",
            f"export SYSTEMD_UNIT_PATH={shlex.quote(unit_path)} container=algo-sandbox",
            *self._own_cgroup(f"exec /lib/systemd/systemd --system --unit={BOOT_TARGET} --show-status=no --log-target=journal"),
        ]
        console = open(self.root / "console.log", "ab")  # noqa: SIM115  # the sandbox outlives this call
        # nsenter (not `ip netns exec`, which remounts /sys without the cgroups) joins the network namespace
        network = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        self._proc = subprocess.Popen(
            [*network, "unshare", "--pid", "--fork", "--mount", "--mount-proc", "--propagation", "private",
             *(["--uts"] if self.hostname else []), "sh", "-c", "\n".join(script)],
            stdin=subprocess.DEVNULL, stdout=console, stderr=console, start_new_session=True,
        )
        console.close()
        try:
            self.pid = self._find_init(timeout)
            if not self.cgroup:
                ACTIVE.write_text(json.dumps({"pid": self.pid, "root": str(self.root)}))
            (self.root / "pid").write_text(str(self.pid))
            (self.root / "teardown.json").write_text(json.dumps({
                "mountpoints": [str(p) for p in self._made_mountpoints],
                "cgroups": sorted(str(p) for p in self._cgroups_before),
            }))
            self._wait_booted(timeout)
        except BaseException:
            self.stop()
            raise

    def _resolver(self) -> list[str]:
        """Script lines that put <root>/resolv.conf in place: bound over /etc/resolv.conf, or, where that
        is a link into /run (systemd-resolved's stub), written there on the sandbox's own /run."""
        if not self.nameserver:
            return []
        src, target = shlex.quote(str(self.root / "resolv.conf")), os.path.realpath("/etc/resolv.conf")
        if Path(target).is_relative_to("/run"):
            return [f"install -D -m 0644 {src} {shlex.quote(target)}"]
        return [f"mount --bind {src} {shlex.quote(target)}"]

    def _uts(self) -> list[str]:
        if not self.hostname:
            return []
        return [f"mount --bind {shlex.quote(str(self.root / 'hostname'))} /etc/hostname",
                f"hostname {shlex.quote(self.hostname)}"]

    def _own_cgroup(self, exec_init: str) -> list[str]:
        """Script lines that start PID 1 (``exec_init``) at the root of the sandbox's own cgroup subtree.

        The shell, already PID 1 of the new PID namespace, moves itself into the sandbox's directory in every
        hierarchy (moved from outside, systemd would see itself as pid 0 there), then makes that the root of
        a cgroup namespace and mounts the hierarchies afresh, so systemd manages
        /system.slice/... of its own subtree. Sharing the host's root, two at once merged their units'
        cgroups and could not kill each other's (docs/ARCHITECTURE.md, the sandbox)."""
        if not self.cgroup:
            return [exec_init]
        lines, mounts = [], ["mount -t tmpfs -o mode=0755 cgroup /sys/fs/cgroup"]
        OWN_CGROUPS.mkdir(exist_ok=True)
        (OWN_CGROUPS / self.cgroup).touch()  # before its directories exist: a shared sandbox never sees them
        for h in own_cgroup_dirs(self.cgroup):
            lines.append(_join_cgroup(h))
            mounts += [f"mkdir -p {shlex.quote(str(h.mountpoint))}",
                       f"mount -t {h.fstype} {'-o ' + h.options if h.options else ''} cgroup {shlex.quote(str(h.mountpoint))}"]
        stage2 = "\n".join(["set -e", *mounts, exec_init])
        return [*lines, f"exec unshare --cgroup sh -c {shlex.quote(stage2)}"]

    def _find_init(self, timeout: float) -> int:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children")
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise SandboxError(f"sandbox exited at once: {self._console_tail()}")
            kids = children.read_text().split() if children.exists() else []
            if kids and Path(f"/proc/{kids[0]}/exe").resolve().name == "systemd":
                return int(kids[0])
            time.sleep(0.02)
        raise SandboxError(f"systemd did not start within {timeout:.0f}s: {self._console_tail()}")

    def _wait_booted(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.systemctl("is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.05)
        raise SandboxError(f"sandbox systemd did not finish booting within {timeout:.0f}s (state {state!r})")

    def _console_tail(self) -> str:
        text = (self.root / "console.log").read_text(errors="replace")
        return text[-2000:].strip() or "(no output)"

    def stop(self, grace: float = 30.0) -> None:
        """Stop the fleet's units gracefully, then kill the namespace's init and check nothing is left."""
        pid = self.pid
        if pid is not None and _alive(pid):
            ns = os.readlink(f"/proc/{pid}/ns/pid")
            try:
                self.systemctl("stop", "algo.target", "algo-*", timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            os.kill(pid, signal.SIGKILL)  # SIGTERM would only make PID 1 re-execute itself
            _wait_gone(ns, 10.0)
        if self._proc is not None:
            self._proc.wait(timeout=10)
        self.pid = None
        if self.cgroup:
            _remove_own_cgroups(self.cgroup)
        else:
            for path in sorted(set(_cgroup_dirs()) - self._cgroups_before, key=lambda p: len(p.parts), reverse=True):
                try:
                    path.rmdir()
                except OSError:
                    pass
        for t in reversed(self._made_mountpoints):
            try:
                t.rmdir()
            except OSError:
                pass
        self._made_mountpoints.clear()
        current = active_sandbox()
        if not self.cgroup and (current is None or current["root"] == str(self.root)):
            ACTIVE.unlink(missing_ok=True)

    # ---- driving it --------------------------------------------------------------------
    def run(self, *cmd: str, timeout: float = 60.0, input: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command inside the sandbox (its mount and PID namespace, and its UTS and network ones if it has them)."""
        if self.pid is None:
            raise SandboxError("sandbox is not running")
        own = [*(["-u"] if self.hostname else []), *(["-n"] if self.netns else [])]
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), "-m", "-p", *own, *cmd],
            capture_output=True, text=True, timeout=timeout, input=input, check=check,
        )

    def systemctl(self, *args: str, timeout: float = 60.0, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, timeout=timeout, check=check)

    def journalctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return self.run("journalctl", "--no-pager", *args, timeout=timeout)

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload", check=True)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props), check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def path(self, inside: str) -> Path:
        """A path inside the sandbox as the host sees it (e.g. /run/algo/bus.sock)."""
        return Path(f"/proc/{self.pid}/root") / inside.lstrip("/")

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_live(config: Path) -> bool:
    """Whether the sandbox's fleet.toml trades live, so its Kite units get the live drop-in. A file
    that does not load is left to the daemons, which report it and exit 78."""
    try:
        return config.exists() and load_config(config).fleet.mode == "live"
    except ConfigError:
        return False


def active_sandbox() -> dict[str, object] | None:
    """The sandbox recorded as running, if its init is still alive."""
    try:
        info = json.loads(ACTIVE.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return info if _alive(int(info["pid"])) else None


def attach(root: Path) -> Sandbox:
    """A Sandbox object for one started earlier (by another algoctl invocation)."""
    box = Sandbox(root)
    try:
        box.pid = int((box.root / "pid").read_text())
    except FileNotFoundError:
        raise SandboxError(f"no sandbox was started at {box.root}") from None
    if not _alive(box.pid):
        box.pid = None
    teardown = json.loads((box.root / "teardown.json").read_text())
    box._made_mountpoints = [Path(p) for p in teardown["mountpoints"]]
    box._cgroups_before = {Path(p) for p in teardown["cgroups"]}
    return box


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/exe").resolve().name == "systemd"
    except OSError:
        return False


def _wait_gone(ns: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not list(_processes_in(ns)):
            return
        time.sleep(0.05)
    raise SandboxError(f"processes of the sandbox survived its teardown: {list(_processes_in(ns))}")


def _processes_in(ns: str) -> Iterable[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "pid") == ns:
                    yield int(entry.name)
            except OSError:
                continue


@dataclass(frozen=True)
class OwnCgroup:
    """A sandbox's directory in one cgroup hierarchy, and how that hierarchy is mounted."""
    mountpoint: Path  # e.g. /sys/fs/cgroup/memory
    fstype: str  # cgroup | cgroup2
    options: str  # the hierarchy's controllers as mount options (cpu; name=systemd; '' for cgroup2)
    path: Path  # mountpoint / the sandbox's name


def own_cgroup_dirs(name: str) -> list[OwnCgroup]:
    """Where a sandbox named ``name`` gets its own subtree: ``<hierarchy>/<name>`` in every mounted hierarchy."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, fstype, opts, *_ = line.split()
        if fstype in ("cgroup", "cgroup2") and Path(point).is_relative_to(CGROUP_ROOT):
            controllers = [o for o in opts.split(",") if o not in CGROUP_MOUNT_FLAGS] if fstype == "cgroup" else []
            found.append(OwnCgroup(Path(point), fstype, ",".join(controllers), Path(point) / name))
    return found


def _join_cgroup(h: OwnCgroup, attempts: int = 50) -> str:
    """A script line by which the starting shell makes its directory in one hierarchy and moves itself in,
    again until it is in: an empty cgroup may be removed by anyone between the two (CI saw a directory vanish
    from under the shell: "cannot create .../cgroup.procs"), one with a task in it cannot."""
    d = shlex.quote(str(h.path))
    make = f"mkdir -p {d}"
    if h.options.split(",")[0] == "cpuset":  # a cpuset without cpus and mems takes no task
        parent = shlex.quote(str(h.path.parent))
        make += "".join(f" && cat {parent}/{name} > {d}/{name}" for name in ("cpuset.cpus", "cpuset.mems"))
    failed = shlex.quote(f"cannot move into the sandbox's cgroup {h.path}")
    return (f"n=0; until {{ {make} && echo 0 > {d}/cgroup.procs; }} 2>/dev/null; do n=$((n+1)); "
            f"[ $n -lt {attempts} ] || {{ echo {failed} >&2; exit 1; }}; sleep 0.1; done")


CGROUP_MOUNT_FLAGS = frozenset({"rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec", "clone_children",
                                "nsdelegate", "memory_recursiveprot", "xattr"})


def _remove_own_cgroups(name: str, timeout: float = 10.0) -> None:
    """Remove a sandbox's subtree depth-first once its last task has gone (a killed task leaves its cgroup
    only when reaped, so a directory may be busy for a moment)."""
    deadline = time.monotonic() + timeout
    for h in own_cgroup_dirs(name):
        if not h.path.exists():
            continue
        dirs = [Path(d) for d, _, _ in os.walk(h.path)]
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if time.monotonic() > deadline:
                        raise SandboxError(f"cannot remove the sandbox's cgroup {d}: {e}") from None
                    time.sleep(0.05)
    (OWN_CGROUPS / name).unlink(missing_ok=True)  # only once its directories are gone


def _cgroup_dirs() -> list[Path]:
    """The cgroup directories a shared sandbox compares before and after: all but the subtrees of the
    sandboxes running in cgroups of their own beside it (OWN_CGROUPS), which their own stop removes whole.

    Such a sandbox marks its name before it makes its directories, so the marks are read again once the walk
    is done: one that started during the walk had its directories seen but not its mark, and a shared
    sandbox's stop then removed them from under its starting shell ("cannot create .../cgroup.procs")."""
    if not CGROUP_ROOT.exists():
        return []
    early = _own_cgroup_names()  # not walked into
    found: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir():
        for dirpath, dirnames, _ in os.walk(hierarchy):
            if Path(dirpath) == hierarchy:
                dirnames[:] = [d for d in dirnames if d not in early]
            found += (Path(dirpath) / d for d in dirnames)
    others = _own_cgroup_names()
    return [d for d in found if d.relative_to(CGROUP_ROOT).parts[1] not in others]


def _own_cgroup_names() -> set[str]:
    """The names of the sandboxes that run in cgroups of their own now (their marks in OWN_CGROUPS)."""
    return {p.name for p in OWN_CGROUPS.iterdir()} if OWN_CGROUPS.is_dir() else set()
