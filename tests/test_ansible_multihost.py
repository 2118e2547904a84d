"""Ansible for many hosts without a target: the example multi-host inventory parses, its play passes the
syntax check and every fleet host's fleet.toml validates; preflight checks the topology across the
inventory (hosts standing in for remote ones all run on this machine, check mode, preflight only),
failing with the problem named: a partial host without a bridge, two executions of one account
without the lease, engines whose signals never leave, bridges on different Redis, a Redis that does
not answer, a metrics port another user holds. The Redis role itself: tests/test_ansible_redis.py.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemons.runtime.config import load_config
from tests.ports import refused_port
from tests.test_ansible_static import ANSIBLE, REPO, ROLE, load, preflight, recap, run, tool

MULTIHOST = ANSIBLE / "inventory" / "multihost"
VAULT = ["--vault-password-file", str(MULTIHOST / ".vault-pass.example")]
LEASE = {"redis_url": "redis://127.0.0.1:6379", "account": "paper-main"}
BRIDGE = {"redis_url": "redis://127.0.0.1:6379", "daemons": ["fno"], "exports": ["strategy.*"],
          "imports": ["marketdata.*", "execution.*"]}
EXEC_BRIDGE = {"redis_url": "redis://127.0.0.1:6379", "daemons": ["marketdata", "risk", "execution"],
               "exports": ["marketdata.*", "execution.*"], "imports": ["strategy.*"]}
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


# What each fleet host of the example runs besides algo-bus and algo-heartbeat (its groups), and its address.
EXAMPLE_DAEMONS = {"md-exec-1": ["marketdata", "risk", "execution", "journal"], "md-exec-2": ["execution", "journal"],
                   "strat-1": ["fno"], "strat-2": ["equity", "options"]}
# The units each example host's bridge relays heartbeats of: its own two and the daemons of algo_fleet_bridge.daemons.
EXAMPLE_HEARTBEATS = {"md-exec-1": ["algo-heartbeat", "algo-bridge", "algo-marketdata", "algo-risk", "algo-execution"],
                      "md-exec-2": ["algo-heartbeat", "algo-bridge", "algo-execution"],
                      "strat-1": ["algo-heartbeat", "algo-bridge", "algo-fno"],
                      "strat-2": ["algo-heartbeat", "algo-bridge", "algo-equity", "algo-options"]}
EXAMPLE_ADDRESSES = {"md-exec-1": "192.0.2.11", "md-exec-2": "192.0.2.12", "strat-1": "192.0.2.21", "strat-2": "192.0.2.22"}


def test_each_example_fleet_host_renders_a_valid_fleet_toml_and_passes_the_topology(tmp_path: Path) -> None:
    """The example's variables, per host, through the role's fleet.toml template and topology checks."""
    tasks: list[dict[str, Any]] = [
        {"name": "Placement", "ansible.builtin.include_vars": {"file": "placement.yml"}},
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
                                   "algo_fleet_source_dir": str(REPO), "algo_fleet_commander": {"lease_sec": 20}}))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    for host, daemons in EXAMPLE_DAEMONS.items():
        assert json.loads((tmp_path / f"{host}.json").read_text()) == [], host
        check = subprocess.run([sys.executable, "-m", "daemons.algoctl", "config", "validate", str(tmp_path / f"{host}.toml")],
                               capture_output=True, text=True)
        assert check.returncode == 0, host + check.stdout + check.stderr
        assert "[daemons.bridge]" in (tmp_path / f"{host}.toml").read_text()
        config = load_config(tmp_path / f"{host}.toml")
        assert config.fleet.daemons == ["bus", "heartbeat", *daemons], host
        assert config.commander.lease_sec == 20  # [commander] from algo_fleet_commander
        # every bridge relays heartbeats: each host expects the others' relayed daemons (derived by the role)
        assert config.daemons.heartbeat.hosts == {other: EXAMPLE_HEARTBEATS[other] for other in EXAMPLE_DAEMONS
                                                  if other != host}, host


def test_the_example_s_prometheus_targets_follow_each_host_s_daemons(tmp_path: Path) -> None:
    """mon-1's file_sd targets: per fleet host, the daemons its groups give it (with the bus, heartbeat,
    commander and its bridge), and the own-process strategies of its engines only."""
    monitoring = ANSIBLE / "roles" / "algo_monitoring"
    tasks = [{"name": "Targets", "ansible.builtin.copy": {"dest": f"{tmp_path}/targets.json", "mode": "0644",
                                                         "content": "{{ _algo_monitoring_targets | to_json }}"}}]
    plays = [{"name": "Render", "hosts": "algo_monitoring", "gather_facts": False, "tasks": tasks,
              "vars_files": [str(monitoring / "defaults" / "main.yml"), str(monitoring / "vars" / "main.yml"),
                             str(ROLE / "vars" / "placement.yml")]}]
    (tmp_path / "play.yml").write_text(json.dumps(plays))
    own = {"algo_fleet_engines": {"equity": {"strategies": [
        {"name": "rsi-infy", "kind": "rsi_reversion", "process": "own", "metrics_port": 9490}]}}}
    result = run(tool("ansible-playbook"), "-i", str(MULTIHOST / "hosts.yml"), str(tmp_path / "play.yml"), *VAULT,
                 "-e", json.dumps({"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **own}))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    targets = json.loads((tmp_path / "targets.json").read_text())
    assert sorted(targets) == sorted(EXAMPLE_DAEMONS)
    for host, daemons in EXAMPLE_DAEMONS.items():
        units = [t["labels"]["__algo_unit"] for t in targets[host]]
        want = [f"algo-{d}" for d in ["bus", "heartbeat", *daemons]] + ["algo-commander", "algo-bridge"]
        assert units == want + (["algo-strategy@rsi-infy"] if "equity" in daemons else []), host
        assert all(t["targets"][0].startswith(EXAMPLE_ADDRESSES[host] + ":") for t in targets[host]), host


def inventory(path: Path, hosts: dict[str, dict[str, Any]], groups: dict[str, list[str]]) -> Path:
    """Stand-ins for remote hosts: each runs on this machine (local connection) with its own variables."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    out = path / "hosts.yml"
    out.write_text(json.dumps({"all": {
        "hosts": {name: {**local, **variables} for name, variables in hosts.items()},
        "children": {g: {"hosts": {h: None for h in members}} for g, members in groups.items()}}}))
    return out


TWO_HOSTS = {"algo_engines": ["strat"], "algo_execution": ["exec"], "algo_journal": ["exec"]}
# A standby execution beside the active one, on a host of its own (market data and risk stay on exec).
STANDBY = {"algo_engines": ["strat"], "algo_marketdata": ["exec"], "algo_risk": ["exec"], "algo_execution": ["exec", "standby"],
           "algo_journal": ["exec"]}
STANDBY_BRIDGE = {"redis_url": "redis://127.0.0.1:6379", "daemons": ["execution"], "exports": ["execution.*"],
                  "imports": ["marketdata.*", "risk.*"]}
EXEC_BRIDGE_TO_STANDBY = {**EXEC_BRIDGE, "exports": ["marketdata.*", "risk.*", "execution.*"],
                          "imports": ["strategy.*", "execution.*"]}


@pytest.mark.parametrize(("hosts", "groups", "named"), [
    ({"strat": {}, "exec": {}}, TWO_HOSTS, "strat is in algo_engines only (it runs fno, equity, options)"),
    ({"strat": {"algo_fleet_bridge": BRIDGE}, "exec": {"algo_fleet_bridge": EXEC_BRIDGE_TO_STANDBY},
      "standby": {"algo_fleet_bridge": STANDBY_BRIDGE}}, STANDBY,
     "algo_fleet_execution.lease: not set on exec, standby, but 2 hosts run algo-execution (exec, standby)"),
    ({"strat": {"algo_fleet_bridge": {**BRIDGE, "exports": ["health.heartbeat"]}},
      "exec": {"algo_fleet_bridge": EXEC_BRIDGE}}, TWO_HOSTS,
     'algo_fleet_bridge.exports: strat runs algo-fno, whose "strategy.*" exec reads: add it'),
    ({"strat": {"algo_fleet_bridge": BRIDGE},
      "exec": {"algo_fleet_bridge": EXEC_BRIDGE_TO_STANDBY, "algo_fleet_execution": {"lease": LEASE}},
      "standby": {"algo_fleet_bridge": {**STANDBY_BRIDGE, "imports": ["marketdata.*"]},
                  "algo_fleet_execution": {"lease": LEASE}}},
     STANDBY, 'algo_fleet_bridge.imports: standby runs algo-execution, which reads "risk.*", published on exec: add it'),
    ({"strat": {"algo_fleet_bridge": BRIDGE},
      "exec": {"algo_fleet_bridge": {**EXEC_BRIDGE_TO_STANDBY, "imports": ["strategy.*"]},
               "algo_fleet_execution": {"lease": LEASE}},
      "standby": {"algo_fleet_bridge": STANDBY_BRIDGE, "algo_fleet_execution": {"lease": LEASE}}},
     STANDBY, 'algo_fleet_bridge.imports: exec runs algo-risk, which reads "execution.*", published on standby: add it'),
    ({"strat": {"algo_fleet_bridge": {**BRIDGE, "daemons": ["fno", "risk"]}}, "exec": {"algo_fleet_bridge": EXEC_BRIDGE}},
     TWO_HOSTS, "algo_fleet_bridge.daemons: strat does not run algo-risk"),
    ({"strat": {"algo_fleet_bridge": BRIDGE}}, {"algo_engines": ["strat"]},
     "algo_marketdata / algo_execution: no host runs algo-marketdata: no ticks reach the engines"),
    ({"strat": {"algo_fleet_bridge": BRIDGE}}, {"algo_engines": ["strat"], "algo_marketdata": ["strat"]},
     "algo_execution: no host runs algo-execution: no approval becomes an order"),
    ({"strat": {"algo_fleet_bridge": {**BRIDGE, "redis_url": "redis://127.0.0.2:6379"}},
      "exec": {"algo_fleet_bridge": EXEC_BRIDGE}}, TWO_HOSTS,
     "algo_fleet_bridge.redis_url: the bridges use different Redis"),
    ({"strat": {"algo_fleet_bridge": BRIDGE},
      "exec": {"algo_fleet_bridge": EXEC_BRIDGE_TO_STANDBY, "algo_fleet_execution": {"lease": LEASE}},
      "standby": {"algo_fleet_bridge": STANDBY_BRIDGE,
                  "algo_fleet_execution": {"lease": {**LEASE, "redis_url": "redis://127.0.0.2:1"}}}}, STANDBY,
     'the executions of account "paper-main" use different Redis'),
    ({"strat": {"algo_fleet_bridge": {**BRIDGE, "redis_url": "redis://redis.example:6379"}}}, {"algo_engines": ["strat"]},
     'algo_fleet_bridge.redis_url: "redis://redis.example:6379" must name Redis by IP address'),
], ids=["partial-host-without-bridge", "two-executions-without-lease", "signals-never-leave", "approvals-never-come-in",
        "standby-fills-never-reach-risk",
        "bridge-relays-a-daemon-elsewhere", "no-market-data", "engines-without-execution", "two-redis-for-bridges",
        "two-redis-for-one-lease", "redis-by-name"])
def test_a_bad_topology_fails_preflight_naming_it(tmp_path: Path, hosts: dict[str, dict[str, Any]],
                                                  groups: dict[str, list[str]], named: str) -> None:
    result = preflight(inventory(tmp_path, hosts, groups), "-e", json.dumps(PASSWORDS))
    assert result.returncode != 0, result.stdout[-3000:]
    assert "topology problem(s)" in result.stdout and named in result.stdout, result.stdout[-3000:]
    for host in hosts:
        assert recap(result.stdout, host)["changed"] == 0


def test_one_execution_host_needs_no_lease_when_the_strategy_hosts_run_none(tmp_path: Path) -> None:
    """A strategy host runs only its engines (and the bus, heartbeat, bridge), so one execution in the fleet is
    one execution: no lease needed. Before hosts ran only their groups' daemons, every host ran algo-execution."""
    hosts = {"strat": {"algo_fleet_bridge": BRIDGE}, "exec": {"algo_fleet_bridge": EXEC_BRIDGE}}
    result = preflight(inventory(tmp_path, hosts, TWO_HOSTS), "-e", json.dumps({**PASSWORDS, "algo_fleet_redis_wait_sec": 1}))
    assert "topology problem(s)" not in result.stdout, result.stdout[-3000:]
    task = re.search(r"TASK \[algo_fleet : Fail on a bad topology, each problem named\][^\n]*\n((?:ok: \[\w+\]\n)+)",
                     result.stdout)
    assert task and sorted(task[1].split("\n")[:-1]) == ["ok: [exec]", "ok: [strat]"], result.stdout[-3000:]


def test_a_missing_redis_password_fails_preflight_naming_it(tmp_path: Path) -> None:
    hosts = {"strat": {"algo_fleet_bridge": BRIDGE}}
    result = preflight(inventory(tmp_path, hosts, {"algo_engines": ["strat"]}), "-e", "algo_fleet_assume_systemd=true")
    assert result.returncode != 0
    assert "algo_fleet_redis_password: empty on strat" in result.stdout, result.stdout[-3000:]


def test_a_good_topology_passes_and_a_redis_that_does_not_answer_fails_naming_it(tmp_path: Path) -> None:
    with refused_port() as port:
        closed = f"redis://127.0.0.1:{port}"
        lease = {"lease": {**LEASE, "redis_url": closed}}
        hosts = {"strat": {"algo_fleet_bridge": {**BRIDGE, "redis_url": closed}, "algo_fleet_execution": lease},
                 "exec": {"algo_fleet_bridge": {**EXEC_BRIDGE, "redis_url": closed}, "algo_fleet_execution": lease}}
        result = preflight(inventory(tmp_path, hosts, TWO_HOSTS), "-e",
                           json.dumps({**PASSWORDS, "algo_fleet_redis_wait_sec": 1}))
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


@pytest.mark.parametrize("encrypted", [False, True], ids=["files", "systemd-creds"])
def test_the_drop_ins_allow_redis_s_address_and_load_the_credentials(tmp_path: Path, encrypted: bool) -> None:
    tasks = [{"name": "Render the Redis drop-ins", "ansible.builtin.template": {
        "src": str(ROLE / "templates" / "redis.conf.j2"), "dest": f"{tmp_path}/{{{{ item.path | basename }}}}", "mode": "0644"},
        "loop": "{{ _algo_fleet_dropins | selectattr('src', 'equalto', 'redis.conf.j2') | selectattr('present') | list }}"}]
    plays = [{"name": "Render", "hosts": "localhost", "gather_facts": False,
              "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml"),
                             str(ROLE / "vars" / "placement.yml")], "tasks": tasks}]
    (tmp_path / "play.yml").write_text(json.dumps(plays))
    hosts = inventory(tmp_path, {"localhost": {}}, {g: ["localhost"] for g in TWO_HOSTS})
    result = run(tool("ansible-playbook"), "-i", str(hosts), str(tmp_path / "play.yml"),
                 "-e", json.dumps({"algo_fleet_bridge": {**BRIDGE, "redis_url": "redis://10.0.0.5:6379"},
                                   "algo_fleet_execution": {"lease": {**LEASE, "redis_url": "redis://[fd00::5]:6380"}},
                                   "algo_fleet_credentials_dir": "/etc/algo/credentials",
                                   "_algo_fleet_encrypt_credentials": encrypted}))
    assert result.returncode == 0, result.stdout[-3000:]
    bridge = (tmp_path / "redis.conf").read_text()
    lease = (tmp_path / "lease.conf").read_text()
    assert "IPAddressAllow=10.0.0.5\n" in bridge
    assert "IPAddressAllow=fd00::5\n" in lease
    line = "LoadCredentialEncrypted={0}:/etc/algo/credentials/{0}.cred\n" if encrypted else \
        "LoadCredential={0}:/etc/algo/credentials/{0}\n"
    # the bridge's unit file loads a plain algo_redis_password itself: its drop-in resets that first
    assert "\nLoadCredential=\n" + line.format("algo_redis_password") in bridge
    assert "\nLoadCredential=\n" not in lease and line.format("algo_execution_redis_password") in lease
    assert load(ROLE / "defaults" / "main.yml")["algo_fleet_bridge"] is None


SYSTEMCTL = """#!/bin/sh
# systemctl for the role's unit tasks without a systemd: logs each call; every unit it is asked about is loaded,
# running and (its timers) enabled.
echo "$*" >> "$ALGO_TEST_SYSTEMCTL_LOG"
case "$1" in
  show) printf 'Id=%s\\nNames=%s\\nLoadState=loaded\\nActiveState=active\\nSubState=running\\n' "$2" "$2"
        echo UnitFileState=enabled ;;
  is-enabled) echo enabled ;;
  is-active) echo active ;;
esac
exit 0
"""


def run_role_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tasks: str, hosts: dict[str, dict[str, Any]],
                   groups: dict[str, list[str]], host: str = "strat", **variables: Any) -> tuple[str, list[str]]:
    """One task file of the role (with its handlers) for ``host``, into tmp_path/root, with a logging systemctl
    and systemd-creds' host key in tmp_path (SYSTEMD_CREDENTIAL_SECRET); returns ansible-playbook's output and
    the systemctl calls."""
    probe = tmp_path / "probe"
    if not probe.exists():
        (probe / "tasks").mkdir(parents=True)
        for part in ("defaults", "vars", "templates", "handlers", "library"):
            (probe / part).symlink_to(ROLE / part)
        for task_file in (ROLE / "tasks").iterdir():
            (probe / "tasks" / task_file.name).symlink_to(task_file)
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "systemctl").write_text(SYSTEMCTL)
        (tmp_path / "bin" / "systemctl").chmod(0o755)
    main = probe / "tasks" / "main.yml"
    main.unlink()
    main.write_text(json.dumps([
        {"name": "Placement", "ansible.builtin.include_vars": {"file": "placement.yml"}},
        {"name": "Nothing ran before", "ansible.builtin.set_fact": {"_algo_fleet_running_before": []}},
        {"name": "The tasks", "ansible.builtin.include_tasks": {"file": tasks}}]))
    (tmp_path / "play.yml").write_text(json.dumps([{"name": "Tasks", "hosts": host, "gather_facts": False,
                                                     "roles": [{"role": str(probe)}]}]))
    log = tmp_path / "systemctl.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("ALGO_TEST_SYSTEMCTL_LOG", str(log))
    monkeypatch.setenv("SYSTEMD_CREDENTIAL_SECRET", str(tmp_path / "credentials.secret"))
    root = tmp_path / "root"
    result = run(tool("ansible-playbook"), "-i", str(inventory(tmp_path, hosts, groups)), str(tmp_path / "play.yml"),
                 "-e", json.dumps({
                     "algo_fleet_source_dir": str(REPO), "algo_fleet_venv": str(Path(sys.executable).parent.parent),
                     "algo_fleet_install_dir": str(root / "opt"), "algo_fleet_unit_dir": str(root / "units"),
                     "algo_fleet_credentials_dir": str(root / "credentials"), "algo_fleet_etc_dir": str(root / "etc"),
                     "algo_fleet_force_restart": True,
                     **variables}))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    return result.stdout, log.read_text().splitlines()


def run_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, groups: dict[str, list[str]]) -> tuple[str, list[str]]:
    """tasks/units.yml for host "strat" (real systemd-analyze verify)."""
    return run_role_tasks(tmp_path, monkeypatch, "units.yml", {"strat": {}, "exec": {}}, groups)


def test_a_host_installs_only_its_groups_units_and_drops_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """strat ran the whole fleet (in every group); now it is in algo_engines only: the units of market data, risk,
    execution and the journal (with the end-of-day and retention timers) are stopped, the timers disabled, their
    files removed, algo.target no longer wants them, and the rest passes systemd-analyze verify. A second run
    changes nothing."""
    everything = {g: ["strat"] for g in ("algo_engines", "algo_execution", "algo_journal")}
    _, calls = run_units(tmp_path, monkeypatch, everything)
    units = tmp_path / "root" / "units"
    assert (units / "algo-risk.service").exists() and (units / "algo-eod.timer").exists()
    assert not [c for c in calls if c.startswith(("stop", "disable"))]

    out, calls = run_units(tmp_path, monkeypatch, TWO_HOSTS)
    gone = ["algo-marketdata.service", "algo-risk.service", "algo-execution.service", "algo-journal.service",
            "algo-eod.service", "algo-eod.timer", "algo-journal-retention.service", "algo-journal-retention.timer"]
    assert sorted(c for c in calls if c.startswith("stop")) == sorted(f"stop {u}" for u in gone)
    assert sorted(c for c in calls if c.startswith("disable")) == [f"disable {t}" for t in gone if t.endswith(".timer")]
    assert not [u for u in gone if (units / u).exists() or (tmp_path / "root" / "opt" / "units" / u).exists()]
    for kept in ("algo-bus.service", "algo-bus.socket", "algo-heartbeat.service", "algo-fno.service", "algo-equity.service",
                 "algo-options.service", "algo-commander.service", "algo-premarket.service", "algo.target"):
        assert (units / kept).exists(), kept
    wants = re.search(r"^Wants=(.*)$", (units / "algo.target").read_text(), re.M)
    assert wants and not set(wants[1].split()) & set(gone) and "algo-fno.service" in wants[1].split()
    fno = re.search(r"^Wants=(.*)$", (units / "algo-fno.service").read_text(), re.M)
    assert fno and fno[1].split() == ["algo-bus.socket"]
    assert re.search(r"TASK \[[^]]*: Verify the staged units with systemd-analyze\][^\n]*\nok: \[strat\]", out), out[-3000:]

    out, calls = run_units(tmp_path, monkeypatch, TWO_HOSTS)
    assert recap(out, "strat")["changed"] == 0, out[-3000:]
    assert not [c for c in calls if c.startswith(("stop", "disable", "daemon-reload"))]


def test_the_redis_passwords_are_encrypted_with_systemd_creds_or_fall_back_to_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bridge's and the lease's passwords, as the Kite credentials are: encrypted with systemd-creds (the
    host key in tmp_path here), decrypting to the vault's value, re-encrypted only when it changes (a second
    run changes nothing); without systemd-creds root-only files, the encrypted form removed. Redis's CA
    certificate is installed while a login uses rediss://, removed after."""
    hosts: dict[str, dict[str, Any]] = {"strat": {"algo_fleet_bridge": BRIDGE},
                                        "exec": {"algo_fleet_bridge": EXEC_BRIDGE, "algo_fleet_execution": {"lease": LEASE}}}
    creds = tmp_path / "root" / "credentials"
    secret = {"SYSTEMD_CREDENTIAL_SECRET": str(tmp_path / "credentials.secret")}

    def decrypt(name: str) -> str:
        out = subprocess.run(["systemd-creds", "decrypt", f"--name={name}", str(creds / f"{name}.cred"), "-"],
                             capture_output=True, text=True, env={**os.environ, **secret})
        assert out.returncode == 0, out.stderr
        return out.stdout

    def deploy(encrypt: bool, lease_password: str, **tls: Any) -> str:
        out, _ = run_role_tasks(tmp_path, monkeypatch, "redis_credentials.yml", hosts, TWO_HOSTS, host="exec",
                                _algo_fleet_encrypt_credentials=encrypt, algo_fleet_redis_password="bridge-pw",
                                algo_fleet_redis_lease_password=lease_password, **tls)
        assert "bridge-pw" not in out and lease_password not in out
        return out

    deploy(True, "lease-pw")
    assert sorted(p.name for p in creds.iterdir()) == ["algo_execution_redis_password.cred", "algo_redis_password.cred"]
    assert decrypt("algo_redis_password") == "bridge-pw" and decrypt("algo_execution_redis_password") == "lease-pw"
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in creds.iterdir())
    before = (creds / "algo_redis_password.cred").read_bytes()
    assert recap(deploy(True, "lease-pw"), "exec")["changed"] == 0
    deploy(True, "new-lease-pw")
    assert decrypt("algo_execution_redis_password") == "new-lease-pw"
    assert (creds / "algo_redis_password.cred").read_bytes() == before  # unchanged: not re-encrypted

    # TLS: with a rediss:// URL the CA certificate comes along, for tls_ca_file; without one it goes
    (tmp_path / "root" / "etc").mkdir()
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nexample\n-----END CERTIFICATE-----\n")
    hosts["exec"]["algo_fleet_bridge"] = {**EXEC_BRIDGE, "redis_url": "rediss://127.0.0.1:6380"}
    deploy(True, "new-lease-pw", algo_fleet_redis_ca=str(ca))
    assert (tmp_path / "root" / "etc" / "redis-ca.pem").read_text() == ca.read_text()
    hosts["exec"]["algo_fleet_bridge"] = EXEC_BRIDGE

    deploy(False, "new-lease-pw", algo_fleet_redis_ca=str(ca))
    assert sorted(p.name for p in creds.iterdir()) == ["algo_execution_redis_password", "algo_redis_password"]
    assert (creds / "algo_redis_password").read_text() == "bridge-pw"
    assert not (tmp_path / "root" / "etc" / "redis-ca.pem").exists()
