"""`ansible-playbook deploy.yml` for real, into a private systemd on a bare filesystem view (nothing
of the fleet in /etc/algo, /opt/algo, /var/lib/algo or /etc/systemd/system): the fleet comes up in
paper mode and trades, a second run changes nothing, a strategy parameter restarts only its engine,
a bad variable fails in preflight having changed nothing, and the hardening systemd applies is what
the unit files say."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from daemons.algoctl.sandbox import Sandbox
from tests.conftest import REPO, require_systemd_sandbox
from tests.helpers import unavailable, wait_until
from tests.installed import NOT_SOURCES
from tests.systemd.netns import loopback_only
from tests.test_units import directives

pytestmark = pytest.mark.systemd

NETNS = "algo-deploy"  # its network namespace, and the name of its cgroup subtree
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"  # scripts/bootstrap.sh's make_wheelhouse
PLAYBOOK = REPO / "ansible" / "deploy.yml"  # run from the checkout; the role builds from algo_fleet_source_dir
SERVICES = sorted(p.name for p in (REPO / "units").glob("*.service") if "@" not in p.name)
# Where the monitoring role writes on a sandbox (its defaults are Prometheus's and Grafana's own directories)
MONITORING_DIRS = {"algo_monitoring_file_sd_dir": "/opt/algo/monitoring/file_sd",
                   "algo_monitoring_rules_dir": "/opt/algo/monitoring/rules",
                   "algo_monitoring_grafana_provisioning_dir": "/opt/algo/monitoring/grafana",
                   "algo_monitoring_grafana_dashboards_dir": "/opt/algo/monitoring/dashboards"}
HARDENING = ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateUsers",
             "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups", "RestrictRealtime",
             "LockPersonality", "MemoryDenyWriteExecute", "RestrictSUIDSGID", "UMask", "User")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sandbox, Path]]:
    require_systemd_sandbox()
    if not (WHEELHOUSE / ".algo-stamp").exists():
        unavailable("deploying into a bare host", f"no wheelhouse at {WHEELHOUSE} (scripts/test.sh makes it)")
    root = tmp_path_factory.mktemp("ansible")
    # A snapshot of the checkout: edits to the working tree during the run must not look like a new build.
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    # A network and cgroups of its own: nothing beyond its loopback (pip installs from the wheelhouse), and
    # it runs beside the shared sandboxes of the other systemd tests (scripts/test.sh's two streams).
    box = Sandbox(root / "sandbox", bare=True, netns=NETNS, cgroup=NETNS)
    inventory = root / "hosts.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}
    inventory.write_text(yaml.safe_dump({"all": {
        "hosts": {"sandbox": host},
        "children": {g: {"hosts": {"sandbox": None}} for g in
                     ("algo_engines", "algo_execution", "algo_journal", "algo_monitoring")},
        "vars": {"algo_fleet_assume_systemd": True, "algo_fleet_force_restart": True,
                 "algo_fleet_source_dir": str(source),
                 "algo_fleet_pip_extra_args": ["--no-index", "--find-links", str(WHEELHOUSE)], **MONITORING_DIRS},
    }}))
    with loopback_only(NETNS):
        box.prepare()
        try:
            box.start()
            yield box, inventory
        finally:
            box.stop()


def play(box: Sandbox, inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return box.run("env", "PIP_NO_INDEX=1", f"PIP_FIND_LINKS={WHEELHOUSE}",  # the wheel's build, on the controller
                   sys.prefix + "/bin/ansible-playbook", "-i", str(inventory), str(PLAYBOOK), *extra, timeout=900)


def recap(out: str) -> dict[str, int]:
    m = re.search(r"^sandbox\s*:\s*(.*)$", out, re.M)
    assert m, out[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m[1])}


def pids(box: Sandbox) -> dict[str, str]:
    return {s: box.show(s, "MainPID")["MainPID"] for s in SERVICES if "Type=notify" in (REPO / "units" / s).read_text()}


def tree_digest(*roots: Path) -> str:
    h = hashlib.sha256()
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(str(p).encode() + p.read_bytes())
    return h.hexdigest()


def test_a_bare_host_gets_a_trading_fleet_and_a_second_run_changes_nothing(deployed: tuple[Sandbox, Path]) -> None:
    box, inventory = deployed
    assert not any(box.etc.iterdir()) and not any(box.opt.iterdir()) and not any(box.system_units.iterdir())
    first = play(box, inventory)
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
    assert recap(first.stdout)["failed"] == 0 and recap(first.stdout)["changed"] > 0
    assert (box.opt / "venv" / "bin" / "algo-fno").exists() and (box.etc / "fleet.toml").exists()
    assert (box.system_units / "algo-fno.service").exists()
    assert (box.opt / "monitoring" / "file_sd").is_dir()
    day = subprocess.run(["date", "+%F"], env={"TZ": "Asia/Kolkata"}, capture_output=True, text=True).stdout.strip()
    fills = box.state / "journal" / day / "fills.csv"
    wait_until(lambda: fills.exists() and len(fills.read_text().splitlines()) > 1, 120, "the deployed fleet to trade")

    # the strategy registry was seeded as the fleet's user (who owns the database) and matches fleet.toml
    assert box.run("stat", "-c", "%U", "/var/lib/algo/control/control.db", check=True).stdout.strip() == "algo"
    diff = box.run("/opt/algo/venv/bin/algoctl", "config", "diff", "--config", "/etc/algo/fleet.toml")
    assert (diff.returncode, diff.stdout) == (0, "no drift: the database's 4 strategies match fleet.toml\n"), diff.stderr

    second = play(box, inventory)
    assert second.returncode == 0, second.stdout[-5000:]
    assert recap(second.stdout)["changed"] == 0, second.stdout[-5000:]


def test_changing_one_strategy_parameter_restarts_exactly_its_engine(deployed: tuple[Sandbox, Path]) -> None:
    box, inventory = deployed
    before = pids(box)
    engines = yaml.safe_load((REPO / "ansible" / "roles" / "algo_fleet" / "defaults" / "main.yml").read_text())[
        "algo_fleet_engines"]
    engines["equity"]["strategies"][0]["params"]["quantity"] = 20
    override = inventory.parent / "equity.yml"
    override.write_text(yaml.safe_dump({"algo_fleet_engines": engines}))
    result = play(box, inventory, "-e", f"@{override}")
    assert result.returncode == 0, result.stdout[-5000:]
    after = pids(box)
    changed = sorted(s for s in before if before[s] != after[s])
    assert changed == ["algo-equity.service"], (changed, result.stdout[-3000:])
    assert "quantity = 20" in (box.etc / "fleet.toml").read_text()
    listed = box.run("/opt/algo/venv/bin/algoctl", "strategy", "--config", "/etc/algo/fleet.toml", "list", check=True).stdout
    assert '"quantity":20' in next(line for line in listed.splitlines() if line.startswith("rsi-infy"))  # the edit is taken


def test_a_bad_variable_fails_in_preflight_naming_it_and_changes_nothing(deployed: tuple[Sandbox, Path]) -> None:
    box, inventory = deployed
    digest = tree_digest(box.etc, box.system_units)
    result = play(box, inventory, "-e", "algo_fleet_mode=demo")
    assert result.returncode != 0
    assert "algo_fleet_mode" in result.stdout
    assert recap(result.stdout)["changed"] == 0
    assert tree_digest(box.etc, box.system_units) == digest


def test_hardening_is_applied_and_every_service_scores_at_most_2(deployed: tuple[Sandbox, Path]) -> None:
    box, _ = deployed
    for service in SERVICES:
        written = directives(box.system_units / service)
        shown = box.show(service, *HARDENING)
        for prop in HARDENING:
            if prop in written:
                want = written[prop][-1]
                got = shown[prop]
                assert got == want or {got, want} <= {"yes", "true"} or (prop == "UMask" and int(got, 8) == int(want, 8)), (
                    service, prop, got, want)
        out = box.run("systemd-analyze", "security", "--no-pager", service).stdout
        exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
        assert exposure and float(exposure[1]) <= 2.0, (service, out[-500:])


def test_the_gateway_is_opt_in_behind_nginx_and_the_front_door_stops_first(deployed: tuple[Sandbox, Path]) -> None:
    box, inventory = deployed
    # What Debian's nginx package provides: its unit (the bare sandbox loads units from its own
    # directories only) and www-data, here already in the fleet's group (usermod cannot replace the
    # sandbox's bind-mounted /etc/group).
    (box.units / "nginx.service").symlink_to("/lib/systemd/system/nginx.service")
    group = box.root / "group"
    group.write_text(re.sub(r"^(algo:x:\d+:)(.*)$", lambda m: m[1] + ",".join(filter(None, [m[2], "www-data"])),
                            group.read_text(), flags=re.M))
    box.daemon_reload()
    assert not (box.system_units / "nginx.service.d").exists()  # off by default: the fleet above had none
    port = 18443
    result = play(box, inventory, "-e", "algo_fleet_gateway_enabled=true",
                  "-e", f"algo_fleet_gateway_listen=127.0.0.1:{port}")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert box.show("nginx.service", "ActiveState")["ActiveState"] == "active"
    assert box.show("algo-gateway.service", "ActiveState")["ActiveState"] == "active"
    conf = (box.etc / "nginx.conf").read_text()
    assert f"listen 127.0.0.1:{port} ssl" in conf and "X-Real-IP" in conf
    assert (box.etc / "tls" / "key.pem").stat().st_mode & 0o777 == 0o600
    out = box.run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", "/etc/algo/tls/cert.pem",
                  f"https://localhost:{port}/api/v1/fleet")
    assert out.stdout == "401", out.stdout + out.stderr  # nginx -> the gateway's socket -> deny by default
    console = box.run("curl", "-sS", "--cacert", "/etc/algo/tls/cert.pem", f"https://localhost:{port}/")
    assert "<title>algo-fleet console</title>" in console.stdout, console.stdout + console.stderr  # shipped, at /
    # The hardened unit reads and writes the control plane's database (ReadWritePaths= its directory)
    added = box.run("/opt/algo/venv/bin/algoctl", "gateway", "token", "add", "ops-1", "--role", "operator",
                    "--config", "/etc/algo/fleet.toml", check=True)
    auth = ["-H", f"Authorization: Bearer {added.stdout.split()[0]}", "--cacert", "/etc/algo/tls/cert.pem"]
    queued = box.run("curl", "-sS", *auth, "-H", "Content-Type: application/json", "-d", '{"verb": "pause", "id": "deploy-1"}',
                     f"https://localhost:{port}/api/v1/strategies/ema-nifty/commands")
    assert '"status":"pending"' in queued.stdout and '"actor":"ops-1"' in queued.stdout, queued.stdout + queued.stderr
    listed = box.run("curl", "-sS", *auth, f"https://localhost:{port}/api/v1/commands/deploy-1")
    assert '"id":"deploy-1"' in listed.stdout, listed.stdout + listed.stderr

    again = play(box, inventory, "-e", "algo_fleet_gateway_enabled=true", "-e", f"algo_fleet_gateway_listen=127.0.0.1:{port}")
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout[-5000:]
    # Premarket again with the fleet and its front door up: nginx's ports (held by root) and the gateway's
    # live socket are the fleet's own, not conflicts.
    checked = box.systemctl("restart", "algo-premarket.service", timeout=90)
    assert checked.returncode == 0, box.journalctl("-u", "algo-premarket", "-o", "cat").stdout[-3000:]
    assert "(gateway.listen)" not in box.journalctl("-u", "algo-premarket", "-o", "cat").stdout

    box.systemctl("stop", "algo-gateway.service", check=True)  # takes the front door down with it, first
    shown = {u: box.show(u, "ActiveState", "InactiveEnterTimestampMonotonic")
             for u in ("nginx.service", "algo-gateway.service")}
    assert shown["nginx.service"]["ActiveState"] == "inactive"
    assert int(shown["nginx.service"]["InactiveEnterTimestampMonotonic"]) <= int(
        shown["algo-gateway.service"]["InactiveEnterTimestampMonotonic"])
