"""The Ansible deployment without a target: syntax, ansible-lint's production profile, preflight on
bad variables (check mode, preflight only: nothing on this machine changes), the argument spec as
the documented contract (every default documented, every fleet.toml section in step with the config
model, the preflight bounds equal to runtime/config's), and what the role renders: fleet.toml from the
defaults is configs/paper.toml, units are what `algoctl units` makes, restarts are decided per unit,
file_sd targets match grafana's example.

ansible-core and ansible-lint come from the venv (`pip install ansible-core ansible-lint`); without
them these tests skip, except under CI=true where they fail. The real deployment into a private
systemd is tests/systemd/test_ansible_deploy.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel

from daemons.algoctl.units import KITE_UNITS, render_units
from daemons.runtime import config as cfg
from daemons.runtime.config import load_config
from tests.helpers import unavailable

try:
    import yaml  # PyYAML, installed with ansible-core
except ImportError:  # pragma: no cover
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("PyYAML is not installed (pip install ansible-core ansible-lint)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
ANSIBLE = REPO / "ansible"
ROLE = ANSIBLE / "roles" / "algo_fleet"
MONITORING = ANSIBLE / "roles" / "algo_monitoring"
VAULT_PASS = ANSIBLE / "inventory" / "example" / ".vault-pass.example"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path:
        return path
    unavailable("Ansible tests", f"{name} is not installed (pip install ansible-core ansible-lint)")


def run(*cmd: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0", "ANSIBLE_VAULT_PASSWORD_FILE": str(VAULT_PASS),
           "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def recap(out: str, host: str = "localhost") -> dict[str, int]:
    m = re.search(rf"^{host}\s*:\s*(.*)$", out, re.M)
    assert m, out[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m[1])}


# ---- the playbook as Ansible and ansible-lint see it -------------------------------------------------

def test_syntax_check() -> None:
    result = run(tool("ansible-playbook"), "--syntax-check", "ansible/deploy.yml",
                 "-i", "ansible/inventory/example/hosts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile_is_clean() -> None:
    result = run(tool("ansible-lint"), "--profile", "production", "ansible/")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]


@pytest.fixture(scope="module")
def localhost_inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inventory") / "hosts.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    path.write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": host},
        "children": {g: {"hosts": {"localhost": None}} for g in ("algo_engines", "algo_execution", "algo_journal")},
    }}))
    return path


def preflight(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """deploy.yml against this machine, check mode, preflight only: read-only by construction."""
    return run(tool("ansible-playbook"), "ansible/deploy.yml", "-i", str(inventory), "--check", "--tags", "preflight",
               *extra)


@pytest.mark.parametrize(("variables", "named"), [
    ({"algo_fleet_mode": "demo"}, "algo_fleet_mode"),
    ({"algo_fleet_risk": {"max_quantity": -5}}, "algo_fleet_risk.max_quantity"),
    ({"algo_fleet_risk": {"daily_loss_limit": {"fno": -1000.0}}}, "algo_fleet_risk.daily_loss_limit.fno"),
    ({"algo_fleet_market": {"close": 55800}}, "algo_fleet_market.close"),
    ({"algo_fleet_risk": {"max_quantiy": 5}}, "algo_fleet_risk.max_quantiy"),
    ({"algo_fleet_engines": {"fno": {"strategies": [
        {"name": "ema-nifty", "kind": "ema_crossover", "process": "own"}]}}},
     "algo_fleet_engines.fno.strategies[0].metrics_port"),
    ({"algo_fleet_execution": {"metrics_port": 9470}}, "algo_fleet_execution.metrics_port"),
    ({"algo_fleet_commander": {"metrics_port": 9471}},
     "algo_fleet_commander.metrics_port: port 9471 is already used by algo_fleet_heartbeat"),
    ({"algo_fleet_commander": {"lease_sec": 0}}, "algo_fleet_commander.lease_sec"),
    ({"algo_fleet_mode": "live"}, "algo_fleet_kite_api_key"),
    ({"algo_fleet_cpu_affinity": {"fleet": "1-3", "front": "first"}}, "algo_fleet_cpu_affinity.front"),
    ({"algo_fleet_redis_ca": "/nonexistent/ca.pem"}, 'algo_fleet_redis_ca: "/nonexistent/ca.pem" is not a file'),
], ids=["mode", "negative-limit", "negative-loss-limit", "unquoted-time", "typo", "own-without-port",
        "port-clash", "commander-port-clash", "commander-lease", "live-without-key", "cpu-list", "redis-ca-missing"])
def test_a_bad_variable_fails_preflight_naming_it(localhost_inventory: Path, variables: dict[str, Any],
                                                  named: str) -> None:
    result = preflight(localhost_inventory, "-e", json.dumps(variables))
    assert result.returncode != 0, result.stdout[-3000:]
    assert named in result.stdout, result.stdout[-3000:]
    assert recap(result.stdout)["changed"] == 0


def test_the_defaults_pass_the_variable_checks(localhost_inventory: Path) -> None:
    # The host checks (systemd, OS, Python, disk) depend on this machine; the variable checks must pass.
    result = preflight(localhost_inventory, "-e", "algo_fleet_assume_systemd=true")
    assert re.search(r"TASK \[algo_fleet : Fail on bad variables, each named\][^\n]*\nok: \[localhost\]",
                     result.stdout), result.stdout[-3000:]
    assert recap(result.stdout)["changed"] == 0


# ---- the argument spec: the documented contract --------------------------------------------------

@pytest.mark.parametrize("role", [ROLE, MONITORING], ids=lambda p: p.name)
def test_the_argument_spec_documents_every_default(role: Path) -> None:
    defaults = load(role / "defaults" / "main.yml")
    options = load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(options)
    for name, spec in options.items():
        assert spec.get("description"), name
        if "default" in spec:
            assert spec["default"] == defaults[name], name


def test_public_and_internal_variable_names() -> None:
    internal = load(ROLE / "vars" / "main.yml")
    assert all(k.startswith("_algo_fleet_") for k in internal)
    assert all(k.startswith("_algo_monitoring_") for k in load(MONITORING / "vars" / "main.yml"))


# variable -> the runtime/config section it renders (engines, strategies and derivatives are nested in it)
SECTIONS: dict[str, type[BaseModel]] = {
    "algo_fleet_bus": cfg.BusSection,
    "algo_fleet_bus_daemon": cfg.BusDaemonSection,
    "algo_fleet_heartbeat": cfg.HeartbeatSection,
    "algo_fleet_market": cfg.MarketSection,
    "algo_fleet_marketdata": cfg.MarketdataSection,
    "algo_fleet_risk": cfg.RiskSection,
    "algo_fleet_execution": cfg.ExecutionSection,
    "algo_fleet_journal": cfg.JournalSection,
    "algo_fleet_premarket": cfg.PremarketSection,
    "algo_fleet_eod": cfg.EodSection,
    "algo_fleet_control_plane": cfg.ControlPlaneSection,
    "algo_fleet_kite": cfg.KiteSection,
    "algo_fleet_bridge": cfg.BridgeSection,
    "algo_fleet_commander": cfg.CommanderSection,
}
SECRETS = {"api_key", "api_secret", "access_token"}  # systemd credentials, never in fleet.toml


def spec_pairs() -> Iterator[tuple[str, dict[str, Any], type[BaseModel]]]:
    options = load(ROLE / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    for var, model in SECTIONS.items():
        yield var, options[var]["options"], model
    yield "algo_fleet_marketdata.derivatives", options["algo_fleet_marketdata"]["options"]["derivatives"]["options"], \
        cfg.DerivativesSection
    yield "algo_fleet_execution.margin", options["algo_fleet_execution"]["options"]["margin"]["options"], cfg.MarginSection
    engines = options["algo_fleet_engines"]["options"]
    assert sorted(engines) == sorted(name for name, _ in cfg.FleetConfig().daemons.engines())
    for engine, spec in engines.items():
        model = type(getattr(cfg.FleetConfig().daemons, engine))
        yield f"algo_fleet_engines.{engine}", spec["options"], model
        yield f"algo_fleet_engines.{engine}.strategies", spec["options"]["strategies"]["options"], cfg.StrategySection


@pytest.mark.parametrize(("var", "spec", "model"), list(spec_pairs()), ids=lambda x: x if isinstance(x, str) else "")
def test_the_argument_spec_follows_the_config_model(var: str, spec: dict[str, Any], model: type[BaseModel]) -> None:
    """A key runtime/config gains or loses must be documented (and allowed) by the role too; choices are its Literals."""
    fields = {n for n in model.model_fields if not (model is cfg.KiteSection and n in SECRETS)}
    assert sorted(spec) == sorted(fields), f"{var}: argument spec options differ from {model.__name__}"
    for name, info in model.model_fields.items():
        if name not in spec:
            continue
        ann = info.annotation
        if typing.get_origin(ann) is typing.Literal:
            assert sorted(spec[name].get("choices", [])) == sorted(typing.get_args(ann)), f"{var}.{name}"


def bounds_of(info: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in info.metadata:
        for cls, key in ((Ge, "ge"), (Gt, "gt"), (Le, "le"), (Lt, "lt")):
            if isinstance(m, cls):
                out[key] = getattr(m, key)
    return out


def test_the_preflight_bounds_are_config_py_s() -> None:
    """vars/main.yml _algo_fleet_bounds: the same numbers as the Field() constraints, and none missing."""
    table = load(ROLE / "vars" / "main.yml")["_algo_fleet_bounds"]
    models: set[type[BaseModel]] = {*SECTIONS.values(), cfg.DaemonSection, cfg.EngineSection, cfg.StrategySection,
                                    cfg.DerivativesSection}
    for model in models:
        # the fields every daemon section shares are checked under DaemonSection
        inherits = issubclass(model, cfg.DaemonSection) and model is not cfg.DaemonSection
        shared = set(cfg.DaemonSection.model_fields) if inherits else set()
        want = {n: bounds_of(i) for n, i in model.model_fields.items() if bounds_of(i) and n not in shared}
        assert table.get(model.__name__, {}) == want, model.__name__


# ---- what the role renders -------------------------------------------------------------------------

UNITS_VENV = "/srv/algo-test/venv"

RESTART_SCENARIOS: dict[str, dict[str, Any]] = {
    "one engine's config": {
        "_algo_fleet_running_before": ["algo-bus.service", "algo-equity.service", "algo-fno.service"],
        "__algo_fleet_fingerprint_files": {"changed": True, "written": ["algo-equity.service"], "removed": ["algo-old.service"]},
    },
    "new code": {
        "_algo_fleet_running_before": ["algo-bus.service", "algo-fno.service", "algo-strategy@ema-nifty.service"],
        "__algo_fleet_pip": {"changed": True},
        "_algo_fleet_own_strategies": [{"name": "ema-nifty", "engine": "fno"}],
    },
    "socket unit": {
        "_algo_fleet_running_before": ["algo-bus.service", "algo-fno.service"],
        "__algo_fleet_unit_files": {"changed": True, "written": ["algo-bus.socket", "algo-premarket.service", "algo.target"],
                                    "removed": []},
    },
    "template unit": {
        "_algo_fleet_running_before": ["algo-strategy@a.service", "algo-risk.service"],
        "_algo_fleet_own_strategies": [{"name": "a", "engine": "fno"}],
        "__algo_fleet_unit_files": {"changed": True, "written": ["algo-strategy@.service"], "removed": []},
    },
    "nothing running": {
        "_algo_fleet_running_before": [],
        "__algo_fleet_pip": {"changed": True},
        "__algo_fleet_fingerprint_files": {"changed": True, "written": ["algo-fno.service"], "removed": []},
    },
    "strategy back in its engine": {
        "_algo_fleet_running_before": ["algo-fno.service", "algo-strategy@old.service"],
        "__algo_fleet_fingerprint_files": {"changed": True, "written": ["algo-fno.service"], "removed": []},
    },
    "drop-ins": {
        "_algo_fleet_running_before": ["algo-fno.service", "algo-risk.service", "algo-equity.service"],
        "__algo_fleet_unit_files": {"changed": True, "written": ["algo-fno.service.d/algo-cpus.conf"],
                                    "removed": ["algo-options.service", "algo-risk.service.d/algo-cpus.conf"]},
    },
    "kite credentials": {
        "_algo_fleet_running_before": ["algo-marketdata.service", "algo-fno.service", "algo-execution.service"],
        "_algo_fleet_kite_written": ["kite_access_token"],
    },
    "a redis password": {
        "_algo_fleet_running_before": ["algo-bridge.service", "algo-execution.service", "algo-fno.service"],
        "_algo_fleet_redis_written": ["algo_execution_redis_password"],
    },
    "redis ca": {
        "_algo_fleet_running_before": ["algo-bridge.service", "algo-execution.service"],
        "algo_fleet_bridge": {"redis_url": "rediss://10.0.0.5:6380", "daemons": ["fno"]},
        "__algo_fleet_redis_ca": {"changed": True},
    },
    "held back earlier": {
        "_algo_fleet_running_before": ["algo-risk.service"],
        "_algo_fleet_pending": ["algo-risk.service: its config in fleet.toml changed",
                                "algo-journal.service: new code installed"],
    },
}
RESTART_EXPECTED: dict[str, list[str]] = {
    "one engine's config": ["algo-equity.service: its config in fleet.toml changed"],
    "new code": ["algo-bus.service: new code installed", "algo-fno.service: new code installed",
                 "algo-strategy@ema-nifty.service: new code installed"],
    "socket unit": ["algo-bus.socket: unit file changed", "algo-bus.service: unit file changed (its socket is replaced)"],
    "template unit": ["algo-strategy@a.service: unit file changed"],
    "nothing running": [],
    "strategy back in its engine": ["algo-fno.service: its config in fleet.toml changed",
                                    'algo-strategy@old.service: stop: no longer configured with process = "own"'],
    "drop-ins": ["algo-fno.service: drop-in algo-cpus.conf changed", "algo-risk.service: drop-in algo-cpus.conf changed"],
    "kite credentials": ["algo-marketdata.service: Kite credentials changed", "algo-execution.service: Kite credentials changed"],
    "a redis password": ["algo-execution.service: its Redis password changed"],
    "redis ca": ["algo-bridge.service: Redis's CA certificate changed"],
    "held back earlier": ["algo-risk.service: its config in fleet.toml changed"],
}
MARKET_CLOCK = {  # IST -> market open? (2026-11-23 is a Monday; 2026-12-25 is in the default holidays)
    "2026-11-23 10:00": True, "2026-11-23 09:00": True, "2026-11-23 08:59": False, "2026-11-23 15:44": True,
    "2026-11-23 15:45": False, "2026-11-22 10:00": False, "2026-12-25 10:00": False,
}
RESET: dict[str, Any] = {"_algo_fleet_running_before": [], "_algo_fleet_pending": [], "_algo_fleet_own_strategies": [],
         "__algo_fleet_pip": {}, "__algo_fleet_unit_files": {}, "_algo_fleet_kite_written": [],
         "__algo_fleet_fingerprint_files": {}, "__algo_fleet_instruments": {}, "_algo_fleet_redis_written": [],
         "__algo_fleet_redis_ca": {}, "algo_fleet_bridge": None}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ansible-playbook run on localhost that renders everything into a temporary directory."""
    playbook_exe = tool("ansible-playbook")
    out = tmp_path_factory.mktemp("rendered")
    placement = str(ROLE / "vars" / "placement.yml")  # which host runs which daemon (both roles load it)
    role_vars = [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml"), placement]
    tasks: list[dict[str, Any]] = [
        {"name": "Render fleet.toml from the defaults", "ansible.builtin.template": {
            "src": str(ROLE / "templates" / "fleet.toml.j2"), "dest": str(out / "fleet.toml"), "mode": "0644"}},
        {"name": "Render the units", "ansible.builtin.template": {
            "src": str(ROLE / "templates" / "unit.j2"), "dest": f"{out}/units/{{{{ item | basename }}}}", "mode": "0644"},
         "loop": "{{ _algo_fleet_unit_sources }}", "vars": {"_algo_fleet_unit_src": "{{ item }}",
                                                            "algo_fleet_venv": UNITS_VENV}},
        {"name": "Render the live drop-ins that come from units/", "ansible.builtin.template": {
            "src": str(ROLE / "templates" / "unit.j2"), "dest": f"{out}/live/{{{{ item.path }}}}", "mode": "0644"},
         "loop": "{{ _algo_fleet_dropins | selectattr('present') | selectattr('source', 'defined') | list }}",
         "vars": {"_algo_fleet_unit_src": "{{ item.source }}", "algo_fleet_mode": "live"}},
    ]
    for i, (name, scenario) in enumerate(RESTART_SCENARIOS.items()):
        tasks += [
            {"name": f"Scenario {name}", "ansible.builtin.set_fact": {**RESET, **scenario}},
            {"name": f"Restart reasons for {name}", "ansible.builtin.copy": {
                "dest": str(out / f"restart-{i}.json"), "mode": "0644",
                "content": "{{ (lookup('ansible.builtin.template', '" + str(ROLE / "templates" / "restart_reasons.j2")
                           + "') or '').splitlines() | map('trim') | select | list | to_json }}"}},
        ]
    for i, clock in enumerate(MARKET_CLOCK):
        tasks.append({"name": f"Market at {clock}", "ansible.builtin.copy": {
            "dest": str(out / f"market-{i}.json"), "mode": "0644", "content": "{{ _algo_fleet_market_open | to_json }}"},
            "vars": {"algo_fleet_now_ist": clock}})
    for name, affinity in (("cpus-none", {}), ("cpus", {"fleet": "1-3", "front": "0"})):
        tasks += [
            {"name": f"CPU drop-ins ({name})", "ansible.builtin.copy": {
                "dest": str(out / f"{name}.json"), "mode": "0644",
                "content": "{{ _algo_fleet_dropins | selectattr('src', 'eq', 'cpus.conf.j2') | selectattr('present') "
                           "| map(attribute='path') | list | to_json }}"},
             "vars": {"algo_fleet_cpu_affinity": affinity, "algo_fleet_gateway_enabled": True}},
            {"name": f"nginx's drop-in ({name})", "ansible.builtin.template": {
                "src": str(ROLE / "templates" / "nginx-gateway.conf.j2"), "dest": str(out / f"{name}-nginx.conf"),
                "mode": "0644"},
             "vars": {"algo_fleet_cpu_affinity": affinity, "_algo_fleet_nginx_prefix": "/p", "_algo_fleet_nginx_conf": "/c"}},
        ]
    tasks.append({"name": "One CPU drop-in", "ansible.builtin.template": {
        "src": str(ROLE / "templates" / "cpus.conf.j2"), "dest": str(out / "algo-cpus.conf"), "mode": "0644"},
        "vars": {"item": {"cpus": "1-3"}}})
    monitoring_tasks = [{"name": "File_sd targets", "ansible.builtin.copy": {
        "dest": str(out / "targets.json"), "mode": "0644", "content": "{{ _algo_monitoring_targets | to_json }}"}}]
    plays = [
        {"name": "Render the fleet role", "hosts": "localhost", "gather_facts": False,
         "vars_files": role_vars, "tasks": tasks},
        {"name": "Render the monitoring role", "hosts": "localhost", "gather_facts": False,
         "vars_files": [str(MONITORING / "defaults" / "main.yml"), str(MONITORING / "vars" / "main.yml"), placement],
         "tasks": monitoring_tasks},
    ]
    (out / "units").mkdir()
    for unit in KITE_UNITS:
        (out / "live" / f"{unit}.d").mkdir(parents=True)
    playbook = out / "render.yml"
    playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
    inventory = out / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                  "trader-2": {"ansible_host": "192.0.2.20", "algo_fleet_gateway_enabled": True}},
        "children": {g: {"hosts": {"localhost": None, "trader-2": None}}
                     for g in ("algo_engines", "algo_execution", "algo_journal")}}}))
    result = run(playbook_exe, "-i", str(inventory), str(playbook), "--limit", "localhost",
                 "-e", json.dumps({"algo_fleet_source_dir": str(REPO)}))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    return out


def test_the_defaults_render_configs_paper_toml(rendered: Path) -> None:
    ours, paper = load_config(rendered / "fleet.toml"), load_config(REPO / "configs" / "paper.toml")
    assert ours.model_dump() == paper.model_dump()
    check = subprocess.run([sys.executable, "-m", "daemons.algoctl", "config", "validate", str(rendered / "fleet.toml")],
                           capture_output=True, text=True, cwd=REPO)
    assert check.returncode == 0, check.stderr
    text = (rendered / "fleet.toml").read_text()
    assert "open = 09:15:00" in text and "holidays = [2026-12-25]" in text  # TOML times and dates, not strings


def test_the_units_are_what_algoctl_units_renders(rendered: Path, tmp_path: Path) -> None:
    expected = render_units(tmp_path, UNITS_VENV)
    ours = sorted((rendered / "units").iterdir())
    assert [p.name for p in ours] == [p.name for p in expected]
    checkout_docs = str(REPO / "docs")
    for mine, theirs in zip(ours, expected, strict=True):
        header, body = mine.read_text().split("\n", 1)
        assert header.startswith("# ") and mine.name in header
        assert body == theirs.read_text().replace(checkout_docs, "/opt/algo/docs"), mine.name


def test_live_mode_adds_the_drop_ins_algoctl_units_live_adds(rendered: Path, tmp_path: Path) -> None:
    """The Kite units' network drop-in: the same units, the same text, from the same file of units/."""
    expected = sorted(p for p in render_units(tmp_path, UNITS_VENV, live=True) if p.parent != tmp_path)
    ours = sorted((rendered / "live").glob("*.d/*"))
    assert [p.relative_to(rendered / "live") for p in ours] == [p.relative_to(tmp_path) for p in expected]
    assert tuple(load(ROLE / "defaults" / "main.yml")["algo_fleet_credential_units"]) == KITE_UNITS
    for mine, theirs in zip(ours, expected, strict=True):
        header, body = mine.read_text().split("\n", 1)
        assert header.startswith("# ") and mine.name in header and body == theirs.read_text()


@pytest.mark.parametrize("index,scenario", list(enumerate(RESTART_SCENARIOS)), ids=list(RESTART_SCENARIOS))
def test_restarts_are_decided_per_unit(rendered: Path, index: int, scenario: str) -> None:
    got = json.loads((rendered / f"restart-{index}.json").read_text())
    assert sorted(got) == sorted(RESTART_EXPECTED[scenario])


def test_the_market_hours_window(rendered: Path) -> None:
    got = {clock: json.loads((rendered / f"market-{i}.json").read_text()) for i, clock in enumerate(MARKET_CLOCK)}
    assert got == MARKET_CLOCK


def test_file_sd_targets_match_grafana_s_example(rendered: Path) -> None:
    targets = json.loads((rendered / "targets.json").read_text())
    assert sorted(targets) == ["localhost", "trader-2"]
    local = [(t["targets"], t["labels"]["__algo_unit"], t["labels"]["daemon"]) for t in targets["localhost"]]
    assert [port for (addr,), *_ in local for port in [addr.rsplit(":", 1)[1]]] == [*map(str, range(9470, 9479)), "9481"]
    assert all(addr.startswith("127.0.0.1:") and unit == f"algo-{daemon}" for (addr,), unit, daemon in local)
    assert local[-1][1:] == ("algo-commander", "commander")
    assert all(t["targets"][0].startswith("192.0.2.20:") for t in targets["trader-2"])
    # algo-gateway only where it is deployed, through nginx's loopback listener on gateway.metrics_port
    gateway = [t for t in targets["trader-2"] if t["labels"]["__algo_unit"] == "algo-gateway"]
    assert [(t["targets"], t["labels"]["daemon"]) for t in gateway] == [(["192.0.2.20:9479"], "gateway")]
    assert "algo-gateway" not in [unit for _, unit, _ in local]
    example = REPO / "grafana" / "prometheus" / "file_sd" / "algo-local.yml"
    if example.exists():
        want = [(e["targets"], e["labels"]["__algo_unit"]) for e in load(example)]
        assert [(t, u) for t, u, _ in local] == want


def test_cpu_affinity_pins_every_fleet_service_and_the_front_door_apart(rendered: Path) -> None:
    """algo_fleet_cpu_affinity: a drop-in per long-running service of the host (fleet CPUs) and for
    algo-gateway and nginx (front CPUs); none without it."""
    assert json.loads((rendered / "cpus-none.json").read_text()) == []
    assert "CPUAffinity" not in (rendered / "cpus-none-nginx.conf").read_text()
    pinned = json.loads((rendered / "cpus.json").read_text())
    services = sorted(p.name for p in (REPO / "units").glob("algo-*.service") if "@" not in p.name)
    long_running = [s for s in services if s.removeprefix("algo-").removesuffix(".service")
                    in load(ROLE / "vars" / "main.yml")["_algo_fleet_daemons"]]
    assert sorted(pinned) == sorted(f"{s}.d/algo-cpus.conf" for s in [*long_running, "algo-gateway.service"])
    assert "\nCPUAffinity=0\n" in (rendered / "cpus-nginx.conf").read_text()
    assert (rendered / "algo-cpus.conf").read_text().endswith("[Service]\nCPUAffinity=1-3\n")


# ---- the example inventory and its vault --------------------------------------------------------------

def test_the_example_vault_is_encrypted_and_the_example_password_opens_it() -> None:
    vault = ANSIBLE / "inventory" / "example" / "group_vars" / "all" / "vault.yml"
    assert vault.read_text().startswith("$ANSIBLE_VAULT;")
    result = run(tool("ansible-vault"), "view", str(vault))
    assert result.returncode == 0, result.stderr
    secrets = yaml.safe_load(result.stdout)
    assert set(secrets) == {"vault_algo_fleet_kite_api_key", "vault_algo_fleet_kite_api_secret"}
    assert "example" in VAULT_PASS.read_text()
    inventory = run(tool("ansible-inventory"), "-i", "ansible/inventory/example/hosts.yml", "--list")
    assert inventory.returncode == 0, inventory.stderr
    groups = json.loads(inventory.stdout)
    for group in ("algo_engines", "algo_execution", "algo_journal", "algo_monitoring"):
        assert groups[group]["hosts"] == ["trader-1"], group
