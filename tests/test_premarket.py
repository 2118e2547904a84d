"""algo-premarket: each check passes on a good host and fails with a reason that names the fix."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from daemons.algoctl.units import render_units, source_dir
from daemons.premarket import checks
from daemons.runtime.config import FleetConfig, KiteSection, PremarketSection
from tests.ports import free_ports, refused_port

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
PROFILE_PATH = "/user/profile"
TOKEN_REJECTED = {"status": "error", "error_type": "TokenException", "message": "Incorrect api_key or access_token."}
PROFILE_OK = {"status": "success", "data": {"user_id": "AB1234"}}


def paper(**premarket: Any) -> FleetConfig:
    return FleetConfig(premarket=PremarketSection(**premarket))


@pytest.fixture
def state_root() -> Iterator[Path]:
    """A state root anyone may traverse (pytest's tmp_path is private to root), with every directory."""
    root = Path(tempfile.mkdtemp(prefix="algo-premarket-", dir="/tmp"))
    root.chmod(0o755)
    for name in checks.STATE_DIRS:
        (root / name).mkdir(mode=0o700)
    yield root
    shutil.rmtree(root)


def as_nobody(check: Callable[[], str | None]) -> str | None:
    """Run a check as an unprivileged uid: root may write anywhere, so a mode alone proves nothing."""
    if os.geteuid() != 0:
        return check()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, run, report through the pipe, never return into pytest
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = {"reason": check()}
        except BaseException:
            out = {"crash": traceback.format_exc()}
        finally:
            os.write(write_end, json.dumps(out).encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert "crash" not in out, out.get("crash")
    reason: str | None = out["reason"]
    return reason


def private_ports() -> dict[str, Any]:
    """Config sections giving every port of the fleet a distinct free one: the defaults (9470-9481) are taken
    by any sandbox running on this machine, which the port check would rightly name."""
    names = [name for name, _ in FleetConfig().daemons.items()]
    ports = free_ports(len(names) + 2)
    return {"daemons": {name: {"metrics_port": port} for name, port in zip(names, ports, strict=False)},
            "commander": {"metrics_port": ports[-2]}, "gateway": {"metrics_port": ports[-1]}}


def ports_toml() -> str:
    data = private_ports()
    sections = {**{f"daemons.{name}": v for name, v in data["daemons"].items()},
                "commander": data["commander"], "gateway": data["gateway"]}
    return "".join(f"[{name}]\nmetrics_port = {v['metrics_port']}\n" for name, v in sections.items())


def with_ports(**sections: dict[str, Any]) -> FleetConfig:
    """A config on private ports, with ``sections`` merged over them."""
    data = private_ports()
    for name, section in sections.items():
        if name == "daemons":
            for daemon, values in section.items():
                data["daemons"][daemon].update(values)
        else:
            data.setdefault(name, {}).update(section)
    return FleetConfig.model_validate(data)


def whoami() -> str:
    """The user as_nobody runs checks as, in the words of the checks' reasons."""
    return "user nobody" if os.geteuid() == 0 else checks._whoami()


def chown_tree(root: Path, uid: int) -> None:
    if os.geteuid() == 0:
        for path in root.iterdir():
            os.chown(path, uid, uid)


# --- config -----------------------------------------------------------------------------------


def test_config_valid(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[fleet]\nmode = "paper"\n')
    config, reason = checks.check_config(path)
    assert reason is None and config is not None and config.fleet.mode == "paper"


def test_config_invalid_lists_the_first_problems_with_their_paths(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(
        '[fleet]\nmode = "papr"\ncolour = 1\n[bus]\nsocket = "bus.sock"\nmax_frame_bytes = 10\n'
        '[metrics]\nbind = "0.0.0.0"\n[premarket]\nmin_free_mb = -1\nmax_clock_offset_sec = 0\n'
    )
    config, reason = checks.check_config(path)
    assert config is None and reason is not None
    assert reason.startswith(f"{path} is invalid: fleet.mode: ")
    assert "fleet.colour: unknown key" in reason and "bus.socket: must be an absolute path" in reason
    assert "premarket.min_free_mb" not in reason  # the sixth and seventh problems are only counted
    assert reason.endswith(f"; and 2 more (algoctl config validate {path})")
    assert "\n" not in reason


def test_missing_config_file(tmp_path: Path) -> None:
    _, reason = checks.check_config(tmp_path / "nope.toml")
    assert reason == f"{tmp_path / 'nope.toml'} is invalid: <file>: no such file (set --config or ALGO_CONFIG)"


# --- clock ------------------------------------------------------------------------------------


def test_clock_synchronised_within_bounds() -> None:
    assert checks.check_clock(1.0, ntp=checks.NtpState(True, 0.002, 0.3)) is None


def test_clock_error_too_large() -> None:
    reason = checks.check_clock(1.0, ntp=checks.NtpState(True, 2.5, 4.0))
    assert reason is not None
    assert "2.500 s (at most 4.000 s), above premarket.max_clock_offset_sec = 1 s" in reason


def test_clock_unsynchronised_is_only_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", "algo.premarket"):
        assert checks.check_clock(1.0, ntp=checks.NtpState(False, 16.0, 16.0)) is None
    assert "not NTP-synchronised" in caplog.text


def test_clock_state_unreadable_is_only_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused() -> checks.NtpState:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(checks, "read_ntp_state", refused)
    with caplog.at_level("WARNING", "algo.premarket"):
        assert checks.check_clock(1.0) is None
    assert "cannot read the kernel's NTP state (adjtimex: Operation not permitted)" in caplog.text


def test_dead_rtc_fails_even_without_ntp_state() -> None:
    reason = checks.check_clock(1.0, now=datetime(2000, 1, 1, tzinfo=UTC))
    assert reason is not None and reason.startswith("wall clock reads 2000-01-01 00:00 UTC, before this build")


def test_kernel_ntp_state_is_readable_without_privileges() -> None:
    state = as_nobody(lambda: repr(checks.read_ntp_state()))
    assert state is not None and state.startswith("NtpState(synchronised=")


# --- state directories ------------------------------------------------------------------------


def test_state_directories_good(state_root: Path) -> None:
    chown_tree(state_root, NOBODY)
    assert as_nobody(lambda: checks.check_state_directories(paper(), state_root)) is None
    assert sorted(p.name for p in state_root.iterdir()) == sorted(checks.STATE_DIRS)  # probes cleaned up


def test_missing_state_directories_are_fine(state_root: Path) -> None:
    # StateDirectory= of each unit creates them at start.
    for name in checks.STATE_DIRS:
        (state_root / name).rmdir()
    assert checks.check_state_directories(paper(), state_root / "not-yet") is None
    assert checks.check_state_directories(paper(), state_root) is None


def test_unwritable_state_directory(state_root: Path) -> None:
    chown_tree(state_root, NOBODY)
    (state_root / "risk").chmod(0o500)
    reason = as_nobody(lambda: checks.check_state_directories(paper(), state_root))
    assert reason == f"{state_root / 'risk'} is not writable by {whoami()}: Permission denied"


def test_file_where_a_directory_should_be(state_root: Path) -> None:
    (state_root / "fno").rmdir()
    (state_root / "fno").write_text("")
    assert checks.check_state_directories(paper(), state_root) == (
        f"{state_root / 'fno'} is not a directory: remove or move it"
    )


def test_state_root_is_a_file(tmp_path: Path) -> None:
    root = tmp_path / "algo"
    root.write_text("")
    reason = checks.check_state_directories(paper(), root)
    assert reason is not None
    assert reason.startswith(f"{root} is not a directory, so {root / 'fno'} cannot be created")
    assert reason.count(";") == len(checks.STATE_DIRS) - 1


def test_journal_directory_from_the_config(state_root: Path, tmp_path: Path) -> None:
    config = FleetConfig.model_validate({"daemons": {"journal": {"directory": str(tmp_path / "journal")}}})
    assert checks.journal_directory(config, state_root) == tmp_path / "journal"
    assert checks.journal_directory(paper(), state_root) == state_root / "journal"
    (tmp_path / "journal").write_text("")
    assert checks.check_state_directories(config, state_root) == (
        f"{tmp_path / 'journal'} is not a directory: remove or move it"
    )


def test_missing_journal_outside_the_state_root_needs_a_writable_parent(state_root: Path) -> None:
    chown_tree(state_root, NOBODY)
    parent = state_root / "fno" / "elsewhere"  # outside the state root as far as the check is concerned
    parent.mkdir(mode=0o555)
    config = FleetConfig.model_validate({"daemons": {"journal": {"directory": str(parent / "journal")}}})
    reason = as_nobody(lambda: checks.check_state_directories(config, state_root / "fno" / "root"))
    assert reason == (
        f"{parent / 'journal'} does not exist and {parent} is not writable by {whoami()}: Permission denied"
    )


# --- disk -------------------------------------------------------------------------------------


def test_free_disk_enough(state_root: Path) -> None:
    assert checks.check_free_disk(paper(min_free_mb=1), state_root) is None


def test_free_disk_too_little_names_the_numbers(state_root: Path) -> None:
    vfs = os.statvfs(state_root)
    reason = checks.check_free_disk(paper(min_free_mb=1 << 40), state_root)
    assert reason is not None
    free_mb = int(reason.split(" MB free")[0])
    assert abs(free_mb - vfs.f_bavail * vfs.f_frsize // (1 << 20)) < 1024
    assert reason.endswith(f"on the filesystem of {state_root}, premarket.min_free_mb needs {1 << 40} MB")


def test_free_disk_judges_the_journal_filesystem_too(state_root: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(state_root).st_dev:
        pytest.skip("no second filesystem at /dev/shm")
    config = FleetConfig.model_validate(
        {"premarket": {"min_free_mb": 1 << 40}, "daemons": {"journal": {"directory": str(other / "algo-journal")}}}
    )
    reason = checks.check_free_disk(config, state_root)
    assert reason is not None and reason.count("MB free") == 2 and f"filesystem of {other / 'algo-journal'}" in reason


# --- credentials and the broker token ---------------------------------------------------------


def test_live_mode_without_credentials_names_them() -> None:
    config = FleetConfig.model_validate({"fleet": {"mode": "live"}, "kite": {"api_key": "the-key-value"}})
    reason = checks.check_credentials(config.kite)
    assert reason is not None
    assert "kite_access_token" in reason and "kite_api_key" not in reason and "kite_api_secret" not in reason
    assert "the-key-value" not in reason


def test_credentials_present() -> None:
    kite = KiteSection(api_key=SecretStr("k"), api_secret=SecretStr("s"), access_token=SecretStr("t"))
    assert checks.check_credentials(kite) is None


class KiteStub:
    """A loopback stand-in for api.kite.trade that answers /user/profile with queued responses."""

    def __init__(self) -> None:
        self.responses: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[tuple[str, str | None]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append((self.path, self.headers.get("Authorization")))
                status, body = stub.responses.pop(0) if self.path == PROFILE_PATH else (404, {})
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def kite(monkeypatch: pytest.MonkeyPatch) -> Iterator[KiteStub]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    stub = KiteStub()
    thread = threading.Thread(target=stub.server.serve_forever, daemon=True)
    thread.start()
    yield stub
    stub.server.shutdown()
    stub.server.server_close()


def live_kite(root: str) -> KiteSection:
    return KiteSection(
        api_key=SecretStr("key-123"), api_secret=SecretStr("secret-456"), access_token=SecretStr("token-789"), root=root
    )


def test_broker_token_rejected(kite: KiteStub) -> None:
    kite.responses.append((403, TOKEN_REJECTED))
    reason = checks.check_broker_token(live_kite(kite.root))
    assert reason == "Kite access token rejected (expired or revoked): run `algoctl login`"
    assert kite.requests == [(PROFILE_PATH, "token key-123:token-789")]


def test_broker_token_accepted(kite: KiteStub, caplog: pytest.LogCaptureFixture) -> None:
    kite.responses.append((200, PROFILE_OK))
    with caplog.at_level("INFO", "algo.premarket"):
        assert checks.check_broker_token(live_kite(kite.root)) is None
    assert "Kite access token accepted for user AB1234" in caplog.text


def test_broker_other_errors_name_their_type_without_secrets(kite: KiteStub) -> None:
    kite.responses.append((500, {"status": "error", "error_type": "GeneralException", "message": "key-123 broke"}))
    reason = checks.check_broker_token(live_kite(kite.root))
    assert reason == "Kite refused the profile request: GeneralException (HTTP 500): ********** broke"


def test_broker_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with refused_port() as port:
        root = f"http://127.0.0.1:{port}"
        reason = checks.check_broker_token(live_kite(root))
    assert reason == f"cannot reach Kite at {root}: ConnectionError"


def test_checks_survive_memory_deny_write_execute(kite: KiteStub) -> None:
    """The unit sets MemoryDenyWriteExecute=yes: ctypes (adjtimex) and kiteconnect must work under it."""
    kite.responses.append((200, PROFILE_OK))
    code = (
        "import ctypes, sys\n"
        "if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0: sys.exit(77)\n"  # PR_SET_MDWE, REFUSE_EXEC_GAIN
        "from daemons.premarket import checks\n"
        "from daemons.runtime.config import KiteSection\n"
        "checks.read_ntp_state()\n"
        f"sys.exit(checks.check_broker_token(KiteSection(api_key='k', access_token='t', root={kite.root!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if result.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE")
    assert result.returncode == 0, result.stderr


# --- the program ------------------------------------------------------------------------------


def premarket(config: Path, state_root: Path, creds: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ALGO_") and k not in ("JOURNAL_STREAM", "CREDENTIALS_DIRECTORY")}
    env["NO_PROXY"] = "127.0.0.1"
    if creds is not None:
        env["CREDENTIALS_DIRECTORY"] = str(creds)
    script = Path(sys.executable).with_name("algo-premarket")
    return subprocess.run([str(script), "--config", str(config), "--state-root", str(state_root)],
                          capture_output=True, text=True, env=env, timeout=60)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ERROR")]


def test_main_passes(tmp_path: Path, state_root: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text('[fleet]\nmode = "paper"\n[premarket]\nmin_free_mb = 1\n' + ports_toml())
    result = premarket(config, state_root)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == "INFO    algo.premarket: premarket passed: 5 checks"


def test_main_reports_each_failure_on_one_line(tmp_path: Path, state_root: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text('[fleet]\nmode = "paper"\n[premarket]\nmin_free_mb = 1099511627776\n' + ports_toml())
    (state_root / "equity").rmdir()
    (state_root / "equity").write_text("")
    result = premarket(config, state_root)
    assert result.returncode == 1
    directories, disk = errors(result.stderr)
    assert directories == (f"ERROR   algo.premarket: premarket FAILED: state directories: {state_root / 'equity'} "
                           "is not a directory: remove or move it")
    assert re.fullmatch(f"ERROR   algo.premarket: premarket FAILED: disk: [0-9]+ MB free on the filesystem of "
                        f"{re.escape(str(state_root))}, premarket.min_free_mb needs 1099511627776 MB", disk)
    assert "premarket passed" not in result.stderr


def test_main_invalid_config_skips_the_rest(tmp_path: Path, state_root: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text('[fleet]\nmode = "papr"\n')
    result = premarket(config, state_root)
    assert result.returncode == 1
    assert errors(result.stderr) == [
        f"ERROR   algo.premarket: premarket FAILED: config: {config} is invalid: fleet.mode: "
        "Input should be 'paper' or 'live' (got 'papr')"
    ]
    assert "the other checks were skipped" in result.stderr


def test_main_live_with_an_expired_token(tmp_path: Path, state_root: Path, kite: KiteStub) -> None:
    kite.responses.append((403, TOKEN_REJECTED))
    creds = tmp_path / "creds"
    creds.mkdir()
    for name, value in (("kite_api_key", "key-123"), ("kite_api_secret", "secret-456"),
                        ("kite_access_token", "token-789")):
        (creds / name).write_text(value)
    config = tmp_path / "fleet.toml"
    config.write_text(f'[fleet]\nmode = "live"\n[premarket]\nmin_free_mb = 1\n[kite]\nroot = "{kite.root}"\n' + ports_toml())
    result = premarket(config, state_root, creds)
    assert result.returncode == 1, result.stderr
    assert errors(result.stderr) == [
        "ERROR   algo.premarket: premarket FAILED: broker token: "
        "Kite access token rejected (expired or revoked): run `algoctl login`"
    ]
    assert not any(secret in result.stderr for secret in ("key-123", "secret-456", "token-789"))


def test_main_live_without_an_access_token(tmp_path: Path, state_root: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "kite_api_key").write_text("key-123")
    (creds / "kite_api_secret").write_text("secret-456")
    config = tmp_path / "fleet.toml"
    config.write_text('[fleet]\nmode = "live"\n[premarket]\nmin_free_mb = 1\n' + ports_toml())
    result = premarket(config, state_root, creds)
    assert result.returncode == 1
    (line,) = errors(result.stderr)
    assert line.startswith("ERROR   algo.premarket: premarket FAILED: credentials: live mode is missing the "
                           "systemd credential(s) kite_access_token ")
    assert "broker token" not in result.stderr  # nothing to try without a token


def test_a_port_the_fleet_needs_taken_by_someone_else_is_named_with_its_owner() -> None:
    """A listener of another user on a daemon's metrics port (here this test's own, seen as a stranger's)
    fails premarket naming the port, its config path and the process; the fleet's own user's is fine."""
    with socket.create_server(("127.0.0.1", 0)) as taken, socket.create_server(("::", 0), family=socket.AF_INET6) as six:
        port, port6 = taken.getsockname()[1], six.getsockname()[1]
        config = with_ports(daemons={"risk": {"metrics_port": port}, "journal": {"metrics_port": port6}})
        me = os.geteuid()
        reason = checks.check_ports(config, fleet_uid=me + 1)
        owner = me_as_owner()
        assert reason == (f"port {port} (daemons.risk.metrics_port) is taken by {owner}; "
                          f"port {port6} (daemons.journal.metrics_port) is taken by {owner}: "
                          "stop that process or choose another port in fleet.toml")
        assert checks.check_ports(config, fleet_uid=me) is None  # a daemon of the fleet already running
    assert checks.check_ports(config, fleet_uid=me + 1) is None  # closed: free again


def port_problems(reason: str | None) -> dict[str, str]:
    """The port check's problems by config path (other ports of the default config may be taken by
    whatever else runs on this machine, so a test looks only at its own)."""
    found = re.findall(r"port \d+ \(([a-z0-9_.]+)\) is taken by ([^;:]+)", reason or "")
    return dict(found)


def me_as_owner() -> str:
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    return f"{checks._user(os.geteuid())}, pid {os.getpid()} ({comm})"


def test_the_commanders_and_nginxs_ports_are_checked_and_a_running_nginx_holds_its_own(tmp_path: Path) -> None:
    """algo-commander's metrics port, and where the gateway is deployed nginx's TLS listener and its metrics
    listener, are named with their owner when someone else holds them; while the fleet's nginx runs (its
    pid file names a live process) those two are its own (its master binds them as root), as a daemon's
    are the fleet user's."""
    pid_file = tmp_path / checks.NGINX_PID_FILE
    pid_file.parent.mkdir(parents=True)
    with (socket.create_server(("127.0.0.1", 0)) as commander, socket.create_server(("127.0.0.1", 0)) as tls,
          socket.create_server(("127.0.0.1", 0)) as metrics):
        c, t, m = (s.getsockname()[1] for s in (commander, tls, metrics))
        config = with_ports(commander={"metrics_port": c}, gateway={"metrics_port": m, "listen": f"127.0.0.1:{t}",
                                                                    "socket": f"/tmp/algo-premarket-absent-{os.getpid()}.sock"})
        stranger, owner = os.geteuid() + 1, me_as_owner()
        everything = (f"port {c} (commander.metrics_port) is taken by {owner}; port {t} (gateway.listen) is taken by "
                      f"{owner}; port {m} (gateway.metrics_port) is taken by {owner}: stop that process or choose "
                      "another port in fleet.toml")
        assert checks.check_ports(config, fleet_uid=stranger, state_root=tmp_path) == everything  # no nginx
        pid_file.write_text(f"{os.getpid()}\n")  # nginx runs
        assert checks.check_ports(config, fleet_uid=stranger, state_root=tmp_path) == (
            f"port {c} (commander.metrics_port) is taken by {owner}: stop that process or choose another port in fleet.toml")
        gone = subprocess.Popen(["true"])
        gone.wait()
        pid_file.write_text(f"{gone.pid}\n")  # nginx died, its pid file left behind
        assert checks.check_ports(config, fleet_uid=stranger, state_root=tmp_path) == everything
        assert checks.check_ports(config, fleet_uid=os.geteuid(), state_root=tmp_path) is None  # the fleet's own
        undeployed = config.model_copy(update={"gateway": config.gateway.model_copy(update={"listen": None})})
        assert port_problems(checks.check_ports(undeployed, fleet_uid=stranger, state_root=tmp_path)) == {
            "commander.metrics_port": owner}


def test_the_gateways_socket_is_refused_only_to_a_live_listener_that_is_not_the_fleets() -> None:
    """Nothing there or a stale socket (the gateway replaces it) pass; a listener of another user is named
    with its pid and command, the fleet user's (the gateway running) passes; a file that is no socket fails."""
    directory = Path(tempfile.mkdtemp(prefix="algo-premarket-gw-", dir="/tmp"))
    path = directory / "api.sock"
    me, stranger = os.geteuid(), os.geteuid() + 1
    try:
        assert checks.check_gateway_socket(path, stranger) is None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
            live.bind(str(path))
            live.listen(8)
            assert checks.check_gateway_socket(path, stranger) == (
                f"gateway.socket: {path} is listened on by {me_as_owner()}: stop that process or choose another "
                "gateway.socket in fleet.toml")
            assert checks.check_gateway_socket(path, me) is None
            config = with_ports(gateway={"listen": "127.0.0.1:1", "socket": str(path)})
            assert checks.check_ports(config, fleet_uid=stranger, state_root=directory) == (
                f"gateway.socket: {path} is listened on by {me_as_owner()}: stop that process or choose another "
                "gateway.socket in fleet.toml")
        assert path.is_socket()  # closed without unlinking: a stale socket
        assert checks.check_gateway_socket(path, stranger) is None
        path.unlink()
        path.write_text("someone's file")
        reason = checks.check_gateway_socket(path, stranger)
        assert reason is not None and reason.startswith(f"gateway.socket: {path} is a regular file, not a socket")
    finally:
        shutil.rmtree(directory)


# --- the unit ---------------------------------------------------------------------------------


def test_unit_is_a_oneshot_that_sees_state_as_it_is(tmp_path: Path) -> None:
    text = (source_dir() / "algo-premarket.service").read_text()
    lines = set(text.splitlines())
    assert {"Type=oneshot", "RemainAfterExit=yes", "ReadWritePaths=-/var/lib/algo", "User=algo"} <= lines
    assert not any(line.startswith("StateDirectory") for line in lines) and "[Install]" not in lines
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing")
    render_units(tmp_path, sys.prefix)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "algo-premarket.service")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
