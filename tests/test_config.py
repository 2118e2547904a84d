"""The fleet config: every problem reported with its dotted path; env, credentials, redaction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemons.runtime.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def algoctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemons.algoctl", *args], capture_output=True, text=True, env=env, cwd=REPO
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["paper.toml", "live.example.toml"])
def test_shipped_configs_are_valid(name: str, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "kite_api_key").write_text("k")
    (creds / "kite_api_secret").write_text("s")
    result = algoctl("config", "validate", "--credentials", str(creds), str(REPO / "configs" / name))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_validate_reports_every_problem_with_its_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[fleet]\nmode = "papr"\n[bus]\nsocket = "bus.sock"\nmax_frame_bytes = 10\ncolour = "blue"\n'
        "[metrics]\nbind = \"0.0.0.0\"\n[daemons.heartbeat]\ninterval_sec = 0\n[nope]\nx = 1\n",
    )
    result = algoctl("config", "validate", str(path))
    assert result.returncode == 78
    lines = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert [line.split(":")[0] for line in lines] == [
        "fleet.mode", "bus.socket", "bus.max_frame_bytes", "bus.colour", "metrics.bind",
        "daemons.heartbeat.interval_sec", "nope",
    ]
    assert "bus.colour: unknown key" in lines
    assert "bus.socket: must be an absolute path (got 'bus.sock')" in lines


def test_duplicate_metrics_ports_are_caught(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemons.heartbeat]\nmetrics_port = 9470\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [str(p) for p in err.value.problems] == [
        "daemons.heartbeat.metrics_port: port 9470 is already used by daemons.bus.metrics_port"
    ]


def test_ports_of_the_commander_and_of_nginx_in_front_of_the_gateway_must_not_collide(tmp_path: Path) -> None:
    """nginx's TLS listener (gateway.listen) and its metrics listener, and the commander's, are ports of the
    fleet like the daemons': one used twice is refused with both dotted paths."""
    path = write(tmp_path, '[gateway]\nlisten = "0.0.0.0:9476"\n[commander]\nmetrics_port = 9479\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [str(p) for p in err.value.problems] == [
        "commander.metrics_port: port 9479 is already used by gateway.metrics_port",
        "gateway.listen: port 9476 is already used by daemons.risk.metrics_port",
    ]
    assert load_config(write(tmp_path, '[gateway]\nlisten = "[::]:443"\n')).gateway.listen == "[::]:443"


@pytest.mark.parametrize("listen", ["443", "localhost:443", "0.0.0.0:0", "0.0.0.0:https", "1.2.3.4:70000"])
def test_gateway_listen_is_an_ip_address_and_a_port(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f'[gateway]\nlisten = "{listen}"\n'))
    assert [p.path for p in err.value.problems] == ["gateway.listen"]


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    assert algoctl("config", "validate", str(write(tmp_path, "[bus\n"))).returncode == 78
    missing = algoctl("config", "validate", str(tmp_path / "absent.toml"))
    assert missing.returncode == 78 and "no such file" in missing.stderr


def test_live_mode_needs_credentials(tmp_path: Path) -> None:
    path = write(tmp_path, '[fleet]\nmode = "live"\n')
    result = algoctl("config", "validate", str(path), env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 78
    assert "kite.api_key: Kite needs it: install the systemd credential kite_api_key" in result.stderr
    assert "kite.api_secret: Kite needs it" in result.stderr


def test_env_overrides_file_and_credentials_are_read_but_never_shown(tmp_path: Path) -> None:
    path = write(tmp_path, '[fleet]\nmode = "live"\n[daemons.heartbeat]\ninterval_sec = 2.0\n')
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "kite_api_key").write_text("key-123\n")
    (creds / "kite_api_secret").write_text("very-secret-value\n")
    env = {"PATH": "/usr/bin:/bin", "ALGO_CONFIG": str(path), "CREDENTIALS_DIRECTORY": str(creds),
           "ALGO_DAEMONS__HEARTBEAT__INTERVAL_SEC": "0.25"}
    shown = algoctl("config", "show", env=env)
    assert shown.returncode == 0, shown.stderr
    assert '"interval_sec": 0.25' in shown.stdout
    assert "very-secret-value" not in shown.stdout and "key-123" not in shown.stdout
    assert '"api_secret": "**********"' in shown.stdout

    config = load_config(path, credentials_dir=creds)
    assert config.kite.api_secret is not None
    assert config.kite.api_secret.get_secret_value() == "very-secret-value"
    assert "very-secret-value" not in repr(config)


def test_bad_environment_override_names_the_key(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "ALGO_BUS__MAX_FRAME_BYTES": "lots", "ALGO_BUS__TYPO": "1"}
    result = algoctl("config", "show", "--config", str(write(tmp_path, "")), env=env)
    assert result.returncode == 78
    assert "bus.max_frame_bytes:" in result.stderr and "bus.typo: unknown key" in result.stderr


def test_strategy_parameters_are_judged_by_the_strategies(tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([
        "[[daemons.fno.strategies]]", 'name = "ema"', 'kind = "ema_crossover"',
        "params = { symbol = 'X', quantity = 1, fast = 30 }",
        "[[daemons.equity.strategies]]", 'name = "ema"', 'kind = "rsi_reversion"', "params = { symbol = 'Y', quantity = 5 }",
        "[[daemons.options.strategies]]", 'name = "odd"', 'kind = "martingale"', "",
    ]))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [str(p) for p in err.value.problems] == [
        "daemons.fno.strategies.0: need 0 < fast < slow, got fast=30 slow=21",
        "daemons.equity.strategies.0.name: 'ema' is already used by daemons.fno.strategies.0",
        "daemons.options.strategies.0: unknown strategy kind 'martingale' "
        "(known: ema_crossover, model, rsi_reversion, short_straddle)",
    ]


def test_live_orders_need_live_mode_and_a_spare_ticker_connection(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemons.execution]\nbroker = "kite"\n[kite]\nmax_connections = 1\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [p.path for p in err.value.problems] == ["daemons.execution.broker", "kite.max_connections"]


def test_a_daemon_of_a_live_fleet_loads_its_config_without_any_credential(tmp_path: Path) -> None:
    """Least privilege: only the units that talk to Kite get credentials, and they check their own."""
    from daemons.runtime.config import missing_credentials

    config = load_config(write(tmp_path, '[fleet]\nmode = "live"\n'), credentials_dir=tmp_path)
    assert [p.path for p in missing_credentials(config, "api_key", "access_token")] == [
        "kite.api_key", "kite.access_token"]
