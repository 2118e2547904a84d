"""The algo_redis role without a target: its config and ACL file rendered by the real ansible-playbook
(through the role's own `validate:` check, a throwaway redis-server), then a real redis-server started
with them: AOF on with the documented fsync policy, the bridge's and the lease's users allowed exactly
what their daemons send and refused the rest, the default user off. A bad ACL line fails the check.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import unavailable
from tests.test_ansible_static import ANSIBLE, load, run, tool

redis = pytest.importorskip("redis")

ROLE = ANSIBLE / "roles" / "algo_redis"
PASSWORDS = {"algo_redis_bridge_password": "bridge-pw", "algo_redis_lease_password": "lease-pw",
             "algo_redis_admin_password": "admin-pw"}


def render(out: Path, variables: dict[str, Any], acl_source: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The role's two template tasks (with their validate:) into ``out``; ``acl_source`` replaces the ACL template."""
    tasks = [task for task in load(ROLE / "tasks" / "main.yml")[2]["block"] if "ansible.builtin.template" in task]
    for task in tasks:
        module = task["ansible.builtin.template"]
        module["src"] = str(acl_source if acl_source and module["src"] == "users.acl.j2" else ROLE / "templates" / module["src"])
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
    sock = out / "redis.sock"
    proc = subprocess.Popen([exe, str(out / "redis.conf"), "--port", "0", "--unixsocket", str(sock),
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
