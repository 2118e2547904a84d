"""`ansible-playbook deploy.yml` over SSH onto three simulated hosts that start with nothing of the fleet
(tests/systemd/hosts.py: each a private systemd in its own namespaces, sshd its only service; Redis in a
fourth namespace, "an existing Redis used"; the controller in a fifth):

  mdx    market data, risk, execution, journal (+ bus, heartbeat, commander, bridge)
  strat  the engines fno, equity and options (+ bus, heartbeat, commander, bridge)
  mon    Prometheus's targets and rules (algo_monitoring)

The hosts have no route beyond their bridge, so pip installs from the wheelhouse scripts/test.sh keeps beside
the venv (algo_fleet_pip_extra_args: --no-index --find-links), as a host without a package index would.
The fleet then trades across the hosts (the engines' signals reach risk and execution through Redis), each
host has exactly its own units, and a second run changes nothing on any host.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, require_systemd_sandbox
from tests.helpers import unavailable, wait_until
from tests.installed import NOT_SOURCES
from tests.systemd import hosts as mh
from tests.systemd import ssh
from tests.systemd.fleet import today
from tests.systemd.test_ansible_deploy import MONITORING_DIRS, WHEELHOUSE
from tests.test_bridge import PASSWORD

pytestmark = pytest.mark.systemd

GROUPS = {"algo_marketdata": ["mdx"], "algo_risk": ["mdx"], "algo_execution": ["mdx"], "algo_journal": ["mdx"],
          "algo_engines": ["strat"], "algo_monitoring": ["mon"]}
BRIDGES = {  # as the example inventory's (ansible/inventory/multihost), for one execution host and one strategy host
    "mdx": {"daemons": ["marketdata", "risk", "execution"],
            "exports": ["marketdata.*", "risk.*", "execution.*", "health.heartbeat"],
            "imports": ["strategy.*", "health.heartbeat"]},
    "strat": {"daemons": ["fno", "equity", "options"], "exports": ["strategy.*", "health.heartbeat"],
              "imports": ["marketdata.*", "risk.*", "execution.*", "health.heartbeat"]},
}
HEARTBEAT_METRICS = 9471
OWN = {"mdx": ("algo-marketdata", "algo-risk", "algo-execution", "algo-journal"),
       "strat": ("algo-fno", "algo-equity", "algo-options")}
EVERY_FLEET_HOST = ("algo-bus", "algo-heartbeat", "algo-commander", "algo-bridge")


@dataclass
class Deployment:
    hosts: mh.Hosts
    inventory: Path

    def play(self) -> tuple[str, dict[str, dict[str, int]]]:
        """One run of deploy.yml from the controller's namespace: its output and each host's recap."""
        result = self.hosts.control(sys.prefix + "/bin/ansible-playbook", "-i", str(self.inventory),
                                    str(REPO / "ansible" / "deploy.yml"),
                                    env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(WHEELHOUSE),  # the wheel's build
                                         "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.inventory.parent / "cp"),
                                         "ANSIBLE_LOCAL_TEMP": str(self.inventory.parent / "ansible-tmp")})
        out = result.stdout
        assert result.returncode == 0, out[-6000:] + result.stderr[-2000:]
        recaps = {m[1]: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m[2])}
                  for m in re.finditer(r"^(\w+)\s*:\s*(ok=.*)$", out, re.M)}
        assert sorted(recaps) == ["mdx", "mon", "strat"], out[-3000:]
        return out, recaps


def unit_files(host: mh.Host) -> set[str]:
    return {p.name for p in host.box.system_units.iterdir() if p.name.startswith("algo")}


def hears(host: mh.Host, other: str, units: list[str]) -> bool:
    """Whether ``host``'s algo-heartbeat has a healthy, not silent heartbeat of each of ``other``'s ``units``."""
    def sample(metric: str, unit: str) -> float:
        return host.metric(HEARTBEAT_METRICS, f'{metric}{{host="{other}",unit="{unit}"}}')
    return all(sample("algo_heartbeat_daemon_healthy", u) == 1 and sample("algo_heartbeat_silent", u) == 0 for u in units)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    require_systemd_sandbox()
    reason = mh.unavailable_reason() or ssh.unavailable_reason()
    if reason is None and not (WHEELHOUSE / ".algo-stamp").exists():
        reason = f"no wheelhouse at {WHEELHOUSE} (scripts/test.sh makes it)"
    if reason is not None:
        unavailable("deploying simulated hosts over SSH", reason)
    tmp = tmp_path_factory.mktemp("mhdeploy")
    source = tmp / "source"  # a snapshot of the checkout: edits during the run must not look like a new build
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    with mh.Hosts(tmp, {name: mh.HostSpec(bare=True) for name in ("mdx", "strat", "mon")}) as hosts:
        assert hosts.ssh is not None
        fleet_hosts: dict[str, Any] = {
            name: {**hosts.ssh.ansible_vars(hosts.net.address(name)),
                   **({"algo_fleet_host": name, "algo_fleet_bridge": {"redis_url": mh.REDIS_URL, **BRIDGES[name]}}
                      if name in BRIDGES else {})}
            for name in ("mdx", "strat", "mon")}
        inventory = tmp / "hosts.yml"
        inventory.write_text(yaml.safe_dump({"all": {
            "hosts": fleet_hosts,
            "children": {g: {"hosts": {h: None for h in members}} for g, members in GROUPS.items()},
            "vars": {"algo_fleet_assume_systemd": True, "algo_fleet_force_restart": True,
                     "algo_fleet_source_dir": str(source),
                     "algo_fleet_pip_extra_args": ["--no-index", "--find-links", str(WHEELHOUSE)],
                     "algo_fleet_redis_password": PASSWORD,
                     # systemd-creds' "auto" refuses a host key on a tmpfs, the sandbox's /var/lib/systemd
                     # (docs/ARCHITECTURE.md, the sandbox's traps), as test_live's `algoctl login --key host`
                     "algo_fleet_credentials_key": "host",
                     "algo_monitoring_source_dir": str(source), **MONITORING_DIRS},
        }}))
        yield Deployment(hosts, inventory)


def test_hosts_with_nothing_of_the_fleet_are_deployed_over_ssh_and_trade_across_hosts(deployment: Deployment) -> None:
    hosts = deployment.hosts
    assert not any(unit_files(hosts[name]) for name in ("mdx", "strat", "mon"))
    _, recaps = deployment.play()
    assert all(r["failed"] == 0 and r["unreachable"] == 0 and r["changed"] > 0 for r in recaps.values()), recaps

    # each fleet host runs its own daemons only; the monitoring host none
    for name, own in OWN.items():
        services = {u.removesuffix(".service") for u in unit_files(hosts[name]) if u.endswith(".service")}
        assert set(own) | set(EVERY_FLEET_HOST) <= services, (name, services)
        others = {u for other, units in OWN.items() if other != name for u in units}
        assert not services & others, (name, services & others)
        for unit in (*own, *EVERY_FLEET_HOST):
            assert hosts[name].box.show(f"{unit}.service", "ActiveState")["ActiveState"] == "active", (name, unit)
    assert not unit_files(hosts["mon"])

    # the engines on strat trade through risk and execution on mdx: fills land in mdx's journal
    fills = hosts["mdx"].box.state / "journal" / today() / "fills.csv"
    wait_until(lambda: fills.exists() and len(fills.read_text().splitlines()) > 1, 180,
               "a fill on mdx of a signal from strat's engines")

    # each host's algo-heartbeat watches the other's relayed daemons (the role derived [daemons.heartbeat] hosts)
    for name, other in (("mdx", "strat"), ("strat", "mdx")):
        watched = ["algo-heartbeat", "algo-bridge", *(f"algo-{d}" for d in BRIDGES[other]["daemons"])]
        assert f"{other} = {watched}".replace("'", '"') in (hosts[name].box.etc / "fleet.toml").read_text(), name
        wait_until(lambda: hears(hosts[name], other, watched), 60,
                   f"{name}'s algo-heartbeat to hear every daemon {other} relays", interval=1)

    # mon's Prometheus targets name the hosts' addresses
    for name in OWN:
        targets = yaml.safe_load((hosts["mon"].box.opt / "monitoring" / "file_sd" / f"algo-{name}.yml").read_text())
        addresses = [t for entry in targets for t in entry["targets"]]
        assert addresses and all(t.startswith(hosts.net.address(name) + ":") for t in addresses), targets
    assert (hosts["mon"].box.opt / "monitoring" / "rules" / "algo.rules.yml").exists()


def main_pids(hosts: mh.Hosts) -> dict[str, str]:
    """Every fleet host's daemons' MainPIDs: a restart changes one."""
    return {f"{name}/{unit}": hosts[name].box.show(f"{unit}.service", "MainPID")["MainPID"]
            for name, own in OWN.items() for unit in (*own, *EVERY_FLEET_HOST)}


def test_a_second_run_changes_nothing_on_any_host(deployment: Deployment) -> None:
    before = main_pids(deployment.hosts)
    out, recaps = deployment.play()
    assert all(r["changed"] == 0 and r["failed"] == 0 for r in recaps.values()), (recaps, out[-4000:])
    assert main_pids(deployment.hosts) == before
