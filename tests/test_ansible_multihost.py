"""Ansible for many hosts without a target: the example multi-host inventory parses, its play passes the
syntax check and every fleet host's fleet.toml validates; preflight checks the topology across the
inventory (hosts standing in for remote ones all run on this machine, check mode, preflight only),
failing with the problem named: a partial host without a bridge, two executions of one account
without the lease, engines whose signals never leave, bridges on different Redis, a Redis that does
not answer, a metrics port another user holds. The Redis role itself: tests/test_ansible_redis.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.test_ansible_static import ANSIBLE, REPO, ROLE, load, preflight, recap, run, tool

MULTIHOST = ANSIBLE / "inventory" / "multihost"
VAULT = ["--vault-password-file", str(MULTIHOST / ".vault-pass.example")]
LEASE = {"redis_url": "redis://127.0.0.1:6379", "account": "paper-main"}
BRIDGE = {"redis_url": "redis://127.0.0.1:6379", "daemons": ["fno"], "exports": ["strategy.*"], "imports": ["risk.*"]}
EXEC_BRIDGE = {"redis_url": "redis://127.0.0.1:6379", "daemons": ["execution"], "exports": ["execution.*"],
               "imports": ["strategy.*"]}
PASSWORDS = {"algo_fleet_redis_password": "pw", "algo_fleet_redis_lease_password": "pw",
             "algo_fleet_assume_systemd": True}


def test_the_example_inventory_has_every_group() -> None:
    result = run(tool("ansible-inventory"), "-i", str(MULTIHOST / "hosts.yml"), "--graph", *VAULT)
    assert result.returncode == 0, result.stderr
    for group in ("algo_execution", "algo_journal", "algo_engines", "algo_redis", "algo_monitoring"):
        assert f"@{group}:" in result.stdout


def test_the_example_inventory_passes_the_syntax_check() -> None:
    result = run(tool("ansible-playbook"), "--syntax-check", "ansible/deploy.yml", "-i", str(MULTIHOST / "hosts.yml"), *VAULT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_example_fleet_host_renders_a_valid_fleet_toml_and_passes_the_topology(tmp_path: Path) -> None:
    """The example's variables, per host, through the role's fleet.toml template and topology checks."""
    tasks: list[dict[str, Any]] = [
        {"name": "Groups", "ansible.builtin.set_fact": {"_algo_fleet_roles_here": (
            "{{ ['algo_engines', 'algo_execution', 'algo_journal'] | select('in', group_names) | list }}")}},
        {"name": "Topology", "ansible.builtin.set_fact": {"_problems": (
            "{{ (lookup('ansible.builtin.template', 'topology_problems.j2') or '').splitlines()"
            " | map('trim') | select | list }}")}},
        {"name": "Report", "delegate_to": "localhost", "ansible.builtin.copy": {
            "dest": f"{tmp_path}/{{{{ inventory_hostname }}}}.json", "mode": "0644", "content": "{{ _problems | to_json }}"}},
        {"name": "Render fleet.toml", "delegate_to": "localhost", "ansible.builtin.template": {
            "src": "fleet.toml.j2", "dest": f"{tmp_path}/{{{{ inventory_hostname }}}}.toml",
            "mode": "0644"}},
    ]
    # A role of these tasks with algo_fleet's defaults, vars and templates: the defaults then rank below the
    # inventory's variables, as in the real role.
    probe = tmp_path / "probe"
    (probe / "tasks").mkdir(parents=True)
    for part in ("defaults", "vars", "templates"):
        (probe / part).symlink_to(ROLE / part)
    (probe / "tasks" / "main.yml").write_text(json.dumps(tasks))
    plays = [{"name": "Render per host", "hosts": "algo_engines:algo_execution:algo_journal", "gather_facts": False,
              "roles": [{"role": str(probe)}]}]
    playbook = tmp_path / "render.yml"
    playbook.write_text(json.dumps(plays))
    result = run(tool("ansible-playbook"), "-i", str(MULTIHOST / "hosts.yml"), str(playbook), *VAULT,
                 "-e", json.dumps({"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                                   "algo_fleet_source_dir": str(REPO)}))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for host in ("md-exec-1", "md-exec-2", "strat-1", "strat-2"):
        assert json.loads((tmp_path / f"{host}.json").read_text()) == [], host
        check = subprocess.run([sys.executable, "-m", "daemons.algoctl", "config", "validate", str(tmp_path / f"{host}.toml")],
                               capture_output=True, text=True)
        assert check.returncode == 0, host + check.stdout + check.stderr
        assert "[daemons.bridge]" in (tmp_path / f"{host}.toml").read_text()


def inventory(path: Path, hosts: dict[str, dict[str, Any]], groups: dict[str, list[str]]) -> Path:
    """Stand-ins for remote hosts: each runs on this machine (local connection) with its own variables."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    out = path / "hosts.yml"
    out.write_text(json.dumps({"all": {
        "hosts": {name: {**local, **variables} for name, variables in hosts.items()},
        "children": {g: {"hosts": {h: None for h in members}} for g, members in groups.items()}}}))
    return out


TWO_HOSTS = {"algo_engines": ["strat"], "algo_execution": ["exec"], "algo_journal": ["exec"]}


@pytest.mark.parametrize(("hosts", "groups", "named"), [
    ({"strat": {}, "exec": {}}, TWO_HOSTS, "strat is in algo_engines only"),
    ({"strat": {"algo_fleet_bridge": BRIDGE}, "exec": {"algo_fleet_bridge": EXEC_BRIDGE}}, TWO_HOSTS,
     "algo_fleet_execution.lease: not set on strat, exec"),
    ({"strat": {"algo_fleet_bridge": {**BRIDGE, "exports": ["health.heartbeat"]}, "algo_fleet_execution": {"lease": LEASE}},
      "exec": {"algo_fleet_bridge": EXEC_BRIDGE, "algo_fleet_execution": {"lease": LEASE}}}, TWO_HOSTS,
     "algo_fleet_bridge.exports: strat runs engines but no execution"),
    ({"strat": {"algo_fleet_bridge": {**BRIDGE, "redis_url": "redis://127.0.0.2:6379"}, "algo_fleet_execution": {"lease": LEASE}},
      "exec": {"algo_fleet_bridge": EXEC_BRIDGE, "algo_fleet_execution": {"lease": LEASE}}}, TWO_HOSTS,
     "algo_fleet_bridge.redis_url: the bridges use different Redis"),
    ({"strat": {"algo_fleet_bridge": BRIDGE, "algo_fleet_execution": {"lease": {**LEASE, "redis_url": "redis://127.0.0.2:1"}}},
      "exec": {"algo_fleet_bridge": EXEC_BRIDGE, "algo_fleet_execution": {"lease": LEASE}}}, TWO_HOSTS,
     'the executions of account "paper-main" use different Redis'),
    ({"strat": {"algo_fleet_bridge": {**BRIDGE, "redis_url": "redis://redis.example:6379"}}}, {"algo_engines": ["strat"]},
     'algo_fleet_bridge.redis_url: "redis://redis.example:6379" must name Redis by IP address'),
], ids=["partial-host-without-bridge", "two-executions-without-lease", "signals-never-leave", "two-redis-for-bridges",
        "two-redis-for-one-lease", "redis-by-name"])
def test_a_bad_topology_fails_preflight_naming_it(tmp_path: Path, hosts: dict[str, dict[str, Any]],
                                                  groups: dict[str, list[str]], named: str) -> None:
    result = preflight(inventory(tmp_path, hosts, groups), "-e", json.dumps(PASSWORDS))
    assert result.returncode != 0, result.stdout[-3000:]
    assert "topology problem(s)" in result.stdout and named in result.stdout, result.stdout[-3000:]
    for host in hosts:
        assert recap(result.stdout, host)["changed"] == 0


def test_a_missing_redis_password_fails_preflight_naming_it(tmp_path: Path) -> None:
    hosts = {"strat": {"algo_fleet_bridge": BRIDGE}}
    result = preflight(inventory(tmp_path, hosts, {"algo_engines": ["strat"]}), "-e", "algo_fleet_assume_systemd=true")
    assert result.returncode != 0
    assert "algo_fleet_redis_password: empty on strat" in result.stdout, result.stdout[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_good_topology_passes_and_a_redis_that_does_not_answer_fails_naming_it(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{free_port()}"
    lease = {"lease": {**LEASE, "redis_url": closed}}
    hosts = {"strat": {"algo_fleet_bridge": {**BRIDGE, "redis_url": closed}, "algo_fleet_execution": lease},
             "exec": {"algo_fleet_bridge": {**EXEC_BRIDGE, "redis_url": closed}, "algo_fleet_execution": lease}}
    result = preflight(inventory(tmp_path, hosts, TWO_HOSTS), "-e", json.dumps({**PASSWORDS, "algo_fleet_redis_wait_sec": 1}))
    assert result.returncode != 0
    assert "topology problem(s)" not in result.stdout, result.stdout[-3000:]
    assert f"Redis at {closed} (algo_fleet_bridge.redis_url) did not answer" in result.stdout, result.stdout[-3000:]


def test_a_metrics_port_held_by_another_user_fails_preflight_naming_it(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = preflight(inventory(tmp_path, {"solo": {}}, {g: ["solo"] for g in TWO_HOSTS}),
                           "-e", json.dumps({"algo_fleet_assume_systemd": True, "algo_fleet_user": "algo-test-nobody",
                                             "algo_fleet_heartbeat": {"metrics_port": port}}))
    assert result.returncode != 0
    assert f"algo_fleet_heartbeat.metrics_port: port {port} is taken by uid 0" in result.stdout, result.stdout[-3000:]


def test_the_drop_ins_allow_redis_s_address_and_load_the_lease_s_credential(tmp_path: Path) -> None:
    tasks = [{"name": "Render the Redis drop-ins", "ansible.builtin.template": {
        "src": str(ROLE / "templates" / "redis.conf.j2"), "dest": f"{tmp_path}/{{{{ item.path | basename }}}}", "mode": "0644"},
        "loop": "{{ _algo_fleet_dropins | selectattr('src', 'equalto', 'redis.conf.j2') | selectattr('present') | list }}"}]
    plays = [{"name": "Render", "hosts": "localhost", "gather_facts": False,
              "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")], "tasks": tasks}]
    (tmp_path / "play.yml").write_text(json.dumps(plays))
    result = run(tool("ansible-playbook"), "-i", str(inventory(tmp_path, {"localhost": {}}, {})), str(tmp_path / "play.yml"),
                 "-e", json.dumps({"algo_fleet_bridge": {**BRIDGE, "redis_url": "redis://10.0.0.5:6379"},
                                   "algo_fleet_execution": {"lease": {**LEASE, "redis_url": "redis://[fd00::5]:6380"}},
                                   "algo_fleet_credentials_dir": "/etc/algo/credentials"}))
    assert result.returncode == 0, result.stdout[-3000:]
    bridge = (tmp_path / "redis.conf").read_text()
    lease = (tmp_path / "lease.conf").read_text()
    assert "IPAddressAllow=10.0.0.5\n" in bridge and "LoadCredential" not in bridge  # the unit file loads it
    assert "IPAddressAllow=fd00::5\n" in lease
    assert "LoadCredential=algo_execution_redis_password:/etc/algo/credentials/algo_execution_redis_password\n" in lease
    assert load(ROLE / "defaults" / "main.yml")["algo_fleet_bridge"] is None
