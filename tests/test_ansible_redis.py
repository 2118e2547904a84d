"""The algo_redis role without a target: its config and ACL file rendered by the real ansible-playbook
(through the role's own `validate:` check, a throwaway redis-server), then a real redis-server started
with them: AOF on with the documented fsync policy, the bridge's and the lease's users allowed exactly
what their daemons send and refused the rest, the default user off. A bad ACL line fails the check.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from daemons.runtime.config import load_config
from daemons.runtime.redis_login import UNREACHABLE, connect
from tests.helpers import unavailable
from tests.ports import free_port
from tests.test_ansible_static import ANSIBLE, load, run, tool

redis = pytest.importorskip("redis")

ROLE = ANSIBLE / "roles" / "algo_redis"
PASSWORDS = {"algo_redis_bridge_password": "bridge-pw", "algo_redis_lease_password": "lease-pw",
             "algo_redis_admin_password": "admin-pw"}


def render(out: Path, variables: dict[str, Any], acl_source: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The role's two template tasks (with their validate:) into ``out``; ``acl_source`` replaces the ACL template."""
    block = next(task["block"] for task in load(ROLE / "tasks" / "main.yml") if "block" in task)
    # the TLS files (when algo_redis_tls_port is set) and the two templates
    tasks = [task for task in block if {"ansible.builtin.template", "ansible.builtin.copy", "ansible.builtin.file"} & set(task)]
    for task in tasks:
        if "ansible.builtin.template" in task:
            module = task["ansible.builtin.template"]
            module["src"] = str(acl_source if acl_source and module["src"] == "users.acl.j2"
                                else ROLE / "templates" / module["src"])
        task.pop("notify", None)
        task.pop("no_log", None)
    plays = [{"name": "Render algo_redis", "hosts": "localhost", "gather_facts": False,
              "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")], "tasks": tasks}]
    playbook = out / "render.yml"
    playbook.write_text(json.dumps(plays))
    inventory = out / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    return run(tool("ansible-playbook"), "-i", str(inventory), str(playbook), "-e", json.dumps({
        **PASSWORDS, "algo_redis_conf": str(out / "redis.conf"), "algo_redis_acl_file": str(out / "users.acl"),
        "algo_redis_data_dir": str(out), **variables}))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("the Redis role's tests", "redis-server is not installed")
    out = tmp_path_factory.mktemp("redis")
    result = render(out, {})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    with rendered_server(exe, out, "--port", "0") as sock:
        yield sock


@contextmanager
def rendered_server(exe: str, out: Path, *args: str) -> Iterator[Path]:
    """redis-server on the config the role rendered into ``out`` (plus ``args``), once its admin answers on
    the Unix socket it returns; killed on exit."""
    sock = out / "redis.sock"
    proc = subprocess.Popen([exe, str(out / "redis.conf"), *args, "--unixsocket", str(sock),
                             "--pidfile", str(out / "redis.pid")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, "redis-server refused the rendered config"
            try:
                redis.Redis(unix_socket_path=str(sock), username="admin", password="admin-pw").ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)
        yield sock
    finally:
        proc.kill()
        proc.wait()


def client(sock: Path, user: str, password: str) -> Any:
    return redis.Redis(unix_socket_path=str(sock), username=user, password=password, decode_responses=True)


def test_aof_is_on_with_the_default_fsync_policy(server: Path) -> None:
    admin = client(server, "admin", "admin-pw")
    assert admin.config_get("appendonly") == {"appendonly": "yes"}
    assert admin.config_get("appendfsync") == {"appendfsync": "everysec"}
    assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}


def test_the_bridge_user_may_use_its_streams_and_nothing_else(server: Path) -> None:
    bridge = client(server, "algo", "bridge-pw")
    assert bridge.ping()
    bridge.xadd("algo:bus:execution", {"t": "execution.order"})
    bridge.xgroup_create("algo:bus:execution", "hostA", id="0")
    assert bridge.xreadgroup("hostA", "hostA", {"algo:bus:execution": ">"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        bridge.get("algo:bus:execution")
    with pytest.raises(redis.exceptions.NoPermissionError):
        bridge.xadd("algo:lease:execution:acct", {"t": "x"})
    with pytest.raises(redis.exceptions.NoPermissionError):
        bridge.config_get("appendonly")


def test_the_lease_user_may_use_its_two_keys_and_its_script_commands(server: Path) -> None:
    lease = client(server, "algo-execution", "lease-pw")
    assert lease.ping()
    script = "redis.call('SET', KEYS[1], ARGV[1], 'PX', 5000); return redis.call('INCR', KEYS[2])"
    assert lease.eval(script, 2, "algo:lease:execution:acct", "algo:fence:execution:acct", "token") == 1
    assert lease.get("algo:lease:execution:acct") == "token"
    assert lease.pexpire("algo:lease:execution:acct", 5000)
    with pytest.raises(redis.exceptions.NoPermissionError):
        lease.xadd("algo:bus:execution", {"t": "x"})
    with pytest.raises(redis.exceptions.ResponseError, match="can't run this command"):
        lease.eval("return redis.call('DEL', KEYS[1])", 1, "algo:lease:execution:acct")


def test_the_default_user_and_a_wrong_password_get_nothing(server: Path) -> None:
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(server, "algo", "wrong").ping()
    with pytest.raises((redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)):
        redis.Redis(unix_socket_path=str(server)).ping()


def test_the_acl_file_holds_no_password(server: Path) -> None:
    acl = (server.parent / "users.acl").read_text()
    assert not any(pw in acl for pw in PASSWORDS.values())
    assert "user default off" in acl


def test_a_bad_acl_line_fails_the_check_before_it_lands(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        unavailable("the Redis role's tests", "redis-server is not installed")
    bad = tmp_path / "bad.acl.j2"
    bad.write_text("user algo on >pw ~algo:* -@all +client|setinfo\n")  # unknown in Redis 7.0: refuses to start
    result = render(tmp_path, {}, acl_source=bad)
    assert result.returncode != 0
    assert "failed to validate" in result.stdout + result.stderr
    assert not (tmp_path / "users.acl").exists()


def test_without_a_lease_password_there_is_no_lease_user(tmp_path: Path) -> None:
    result = render(tmp_path, {"algo_redis_lease_password": ""})
    assert result.returncode == 0, result.stdout[-3000:]
    assert "algo-execution" not in (tmp_path / "users.acl").read_text()


# ---- TLS: the role's listener and the fleet's rediss:// URLs --------------------------------------------------

FLEET = ANSIBLE / "roles" / "algo_fleet"


def certificates(out: Path) -> Path:
    """A CA and Redis's certificate for 127.0.0.1 signed by it (P-256), as an operator would bring them."""
    out.mkdir(parents=True)
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=out, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=algo-test-ca")
    openssl("req", *ec, "-keyout", "redis.key", "-out", "redis.csr", "-subj", "/CN=redis")
    (out / "san").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "redis.crt",
            "-days", "2", "-extfile", "san")
    return out


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, Path]]:
    """redis-server with the role's files and a TLS listener only (algo_redis_port 0): (its directory, the TLS port,
    the operator's certificates)."""
    exe = shutil.which("redis-server")
    if exe is None:
        unavailable("the Redis role's tests", "redis-server is not installed")
    out = tmp_path_factory.mktemp("redis-tls")
    pki = certificates(out / "pki")
    port = free_port()
    result = render(out, {"algo_redis_port": 0, "algo_redis_tls_port": port, "algo_redis_tls_dir": str(out / "tls"),
                          "algo_redis_tls_cert": str(pki / "redis.crt"), "algo_redis_tls_key": str(pki / "redis.key"),
                          "algo_redis_tls_ca": str(pki / "ca.crt")})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    with rendered_server(exe, out):
        yield out, port, pki


def fleet_config(out: Path, port: int, ca: Path) -> Any:
    """fleet.toml as the algo_fleet role renders it for a host whose bridge and lease use rediss:// with
    algo_fleet_redis_ca, and Redis's CA installed by the role's own task; loaded by runtime/config."""
    tasks = [task for task in load(FLEET / "tasks" / "redis_credentials.yml")
             if task["name"] == "Install Redis's CA certificate (TLS)"]
    for task in tasks:
        task.pop("notify", None)
    tasks.append({"name": "Render fleet.toml", "ansible.builtin.template": {
        "src": str(FLEET / "templates" / "fleet.toml.j2"), "dest": str(out / "fleet.toml"), "mode": "0644"}})
    plays = [{"name": "Render algo_fleet", "hosts": "localhost", "gather_facts": False, "tasks": tasks,
              "vars_files": [str(FLEET / "defaults" / "main.yml"), str(FLEET / "vars" / "main.yml"),
                             str(FLEET / "vars" / "placement.yml")]}]
    (out / "fleet.yml").write_text(json.dumps(plays))
    inventory = out / "fleet-hosts.yml"
    inventory.write_text(json.dumps({"all": {
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}},
        "children": {g: {"hosts": {"localhost": None}} for g in ("algo_engines", "algo_execution", "algo_journal")}}}))
    url = f"rediss://127.0.0.1:{port}"
    (out / "etc").mkdir()  # the role's configure step creates it first
    result = run(tool("ansible-playbook"), "-i", str(inventory), str(out / "fleet.yml"), "-e", json.dumps({
        "algo_fleet_source_dir": str(ANSIBLE.parent), "algo_fleet_etc_dir": str(out / "etc"), "algo_fleet_redis_ca": str(ca),
        "algo_fleet_bridge": {"redis_url": url, "daemons": ["fno"], "exports": ["strategy.*"]},
        "algo_fleet_execution": {"lease": {"redis_url": url, "account": "paper-main"}}}))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return load_config(out / "fleet.toml")


def test_the_tls_listener_is_configured_with_the_operator_s_files(tls_server: tuple[Path, int, Path]) -> None:
    out, port, pki = tls_server
    conf = (out / "redis.conf").read_text()
    assert f"tls-port {port}\n" in conf and "\nport 0\n" in conf and "tls-auth-clients no\n" in conf
    for name, source, mode in (("redis.crt", "redis.crt", 0o644), ("redis.key", "redis.key", 0o640), ("ca.crt", "ca.crt", 0o644)):
        installed = out / "tls" / name
        assert installed.read_bytes() == (pki / source).read_bytes() and installed.stat().st_mode & 0o777 == mode, name


def test_the_fleet_s_bridge_and_lease_reach_it_over_tls_with_the_ca_the_role_installed(tls_server: tuple[Path, int, Path],
                                                                                     tmp_path: Path) -> None:
    """The daemons' own client (daemons/runtime/redis_login.py) with the sections the algo_fleet role rendered: over TLS,
    verified against the CA the role delivered, as each ACL user; a plain redis:// to the same port gets nowhere,
    and a CA that did not sign Redis's certificate is refused."""
    _, port, pki = tls_server
    config = fleet_config(tmp_path, port, pki / "ca.crt")
    bridge, lease = config.daemons.bridge, config.daemons.execution.lease
    assert bridge.tls_ca_file == lease.tls_ca_file == tmp_path / "etc" / "redis-ca.pem"
    assert bridge.tls_ca_file.read_bytes() == (pki / "ca.crt").read_bytes()

    async def talk() -> None:
        client = connect(bridge, "bridge-pw")
        assert await client.ping()
        assert await client.xadd("algo:bus:strategy", {"t": "strategy.signal"})
        await client.aclose()
        client = connect(lease, "lease-pw")
        assert await client.ping()
        await client.aclose()
        plain = connect(bridge.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}", "tls_ca_file": None}), "bridge-pw")
        with pytest.raises(UNREACHABLE):
            await plain.ping()
        await plain.aclose()
        stranger = certificates(tmp_path / "other")
        other = connect(bridge.model_copy(update={"tls_ca_file": stranger / "ca.crt"}), "bridge-pw")
        with pytest.raises(UNREACHABLE, match="certificate verify failed"):
            await other.ping()
        await other.aclose()

    asyncio.run(talk())
