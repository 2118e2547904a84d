"""algo-premarket: run every check once and exit 0 only when all pass, so the engines may start.

Each failure is one `err` journal line, ``premarket FAILED: <check>: <reason>``, so
``journalctl -u algo-premarket -p err`` tells the operator everything to fix at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..runtime.config import resolve_path
from ..runtime.logs import setup_logging
from . import checks

log = logging.getLogger("algo.premarket")


class Report:
    """Runs checks, logs each failure as one line and counts what ran and what failed."""

    def __init__(self) -> None:
        self.ran = 0
        self.failed = 0

    def record(self, name: str, reason: str | None) -> bool:
        self.ran += 1
        if reason is None:
            return True
        self.failed += 1
        log.error("premarket FAILED: %s: %s", name, reason.replace("\n", " "))
        return False

    def run(self, name: str, check: Callable[[], str | None]) -> bool:
        try:
            reason = check()
        except Exception as exc:  # a bug in one check must still be a readable line, and not hide the others
            reason = f"the check itself failed: {type(exc).__name__}: {exc}"
        return self.record(name, reason)


def run(config_path: Path, state_root: Path = checks.STATE_ROOT) -> int:
    """Every check in order; returns the exit status."""
    report = Report()
    config, reason = checks.check_config(config_path)
    if not report.record("config", reason) or config is None:
        log.warning("the other checks were skipped: they need a valid config")
        return 1
    report.run("clock", lambda: checks.check_clock(config.premarket.max_clock_offset_sec))
    report.run("state directories", lambda: checks.check_state_directories(config, state_root))
    report.run("disk", lambda: checks.check_free_disk(config, state_root))
    report.run("ports", lambda: checks.check_ports(config, state_root=state_root))
    if config.fleet.mode == "live" and report.run("credentials", lambda: checks.check_credentials(config.kite)):
        report.run("broker token", lambda: checks.check_broker_token(config.kite))
    if report.failed:
        return 1
    log.info("premarket passed: %d checks", report.ran)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="algo-premarket",
                                     description="Checks that must pass before any engine starts.")
    parser.add_argument("--config", help="fleet config (default: $ALGO_CONFIG, else /etc/algo/fleet.toml)")
    parser.add_argument("--state-root", type=Path, default=checks.STATE_ROOT,
                        help=f"where the daemons keep their state (default: {checks.STATE_ROOT})")
    args = parser.parse_args(argv)
    setup_logging("algo-premarket", "INFO")
    sys.exit(run(resolve_path(args.config), args.state_root))
