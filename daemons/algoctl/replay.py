"""`algoctl replay DAY`: feed a recorded journal day back through the running fleet.

algo-marketdata reads its replay settings from /run/algo/marketdata.env (an EnvironmentFile= of
its unit: ALGO_* variables override fleet.toml), so a replay needs no edit of the config and is
gone after a reboot or `algoctl replay --stop`.
"""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

from ..journal_format.layout import day_dir, is_day

ENV_FILE = Path("/run/algo/marketdata.env")
UNIT = "algo-marketdata.service"


def start(journal: Path, day: date, speed: float, env_file: Path = ENV_FILE) -> str:
    folder = day_dir(journal, day)
    if not is_day(folder):
        raise FileNotFoundError(f"no recorded day at {folder}")
    if speed <= 0:
        raise ValueError("--speed must be positive")
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(
        "# written by `algoctl replay`; remove with `algoctl replay --stop`\n"
        "ALGO_DAEMONS__MARKETDATA__FEED=replay\n"
        f"ALGO_DAEMONS__MARKETDATA__REPLAY_FROM={folder}\n"
        f"ALGO_DAEMONS__MARKETDATA__REPLAY_SPEED={speed:g}\n")
    _restart()
    return f"replaying {folder} at {speed:g}x through the fleet ({UNIT} restarted)"


def stop(env_file: Path = ENV_FILE) -> str:
    existed = env_file.exists()
    env_file.unlink(missing_ok=True)
    _restart()
    return f"{UNIT} back on its configured feed" + ("" if existed else " (no replay was set)")


def _restart() -> None:
    subprocess.run(["systemctl", "restart", UNIT], check=True, capture_output=True, text=True)
