"""The journal on a state disk that fills during a session (a 64 MB tmpfs of its own): below its floor
it sheds market data with one crit line and keeps writing the order path, the alert rules fire on
what it exports, and when space returns it records market data again on its own. The retention
unit then runs in the same sandbox, hardening and all: it compacts a closed day written before
market.zst existed (its ticks moved out of events.jsonl) and leaves today's day alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from daemons.algoctl.sandbox import Sandbox
from daemons.journal_format import reader
from daemons.journal_format.layout import EVENTS, MARKET
from daemons.runtime.envelope import EventFactory
from tests.conftest import REPO
from tests.helpers import wait_until
from tests.systemd.busclient import Listener
from tests.systemd.fleet import session_config, small_state_disk, today

pytestmark = pytest.mark.systemd

JOURNAL_MB = 64
FLOOR_MB = 16  # shed_free_mb here; the journal resumes at 1.5x
CONFIG = session_config(**{"steps_per_second = 2.0": "steps_per_second = 40.0",  # ~2k ticks/s
                           "session_minutes = 10.0": "session_minutes = 10.0",
                           "shed_free_mb = 1024": f"shed_free_mb = {FLOOR_MB}"})
PORT = 9478


def scrape() -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line.startswith("algo_journal_"):
            sample, _, value = line.rpartition(" ")
            out[sample] = float(value)
    return out


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    from tests.conftest import require_systemd_sandbox

    require_systemd_sandbox()
    root = tmp_path_factory.mktemp("journal-disk")
    sandbox = Sandbox(root / "sandbox")
    (root / "fleet.toml").write_text(CONFIG)
    sandbox.prepare(root / "fleet.toml")
    with small_state_disk(sandbox, "journal", JOURNAL_MB) as disk:
        sandbox.start()
        try:
            sandbox.run("mount", "--bind", str(disk), "/var/lib/algo/journal", check=True)
            sandbox.systemctl("start", "algo.target", check=True)
            yield sandbox
        finally:
            sandbox.stop()


def journal_status(box: Sandbox) -> str:
    return box.show("algo-journal.service", "StatusText")["StatusText"]


def alerts_firing(metrics: dict[str, float], tmp: Path) -> None:
    """promtool evaluates the shipped expressions of the disk alerts over the journal's own scrape."""
    wanted = {"JournalDiskNearFloor", "JournalSheddingMarketData"}
    groups = yaml.safe_load((REPO / "grafana/alerts/algo.rules.yml").read_text())["groups"]
    rules = [{"alert": r["alert"], "expr": r["expr"], "for": r.get("for", "0s")}
             for g in groups for r in g["rules"] if r.get("alert") in wanted]
    (tmp / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "disk", "rules": rules}]}))
    labels = 'job="algo",instance="127.0.0.1:9478",daemon="journal"'
    series = [{"series": f"{name}{{{labels}}}", "values": f"{metrics[name]:.0f}x40"}
              for name in ("algo_journal_disk_free_bytes", "algo_journal_shed_floor_bytes", "algo_journal_shedding")]
    exp = {"job": "algo", "instance": "127.0.0.1:9478", "daemon": "journal"}
    test: dict[str, Any] = {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": [{
        "interval": "15s", "input_series": series,
        "alert_rule_test": [{"eval_time": "5m", "alertname": a, "exp_alerts": [{"exp_labels": exp}]} for a in sorted(wanted)],
    }]}
    (tmp / "test.yml").write_text(yaml.safe_dump(test))
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian: prometheus) is needed"
    out = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_filling_disk_sheds_market_data_keeps_the_order_path_alerts_and_recovers(box: Sandbox, tmp_path: Path) -> None:
    day = box.state / "journal" / today()
    wait_until(lambda: (day / MARKET).is_file() and (day / MARKET).stat().st_size > 0, 60, "ticks journaled")
    st = os.statvfs(box.state / "journal")
    leave = (FLOOR_MB // 2) << 20  # free space left: under the floor, plenty for the order path
    filler = box.state / "journal" / ".filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, st.f_bavail * st.f_frsize - leave)
    finally:
        os.close(fd)
    try:
        wait_until(lambda: scrape()["algo_journal_shedding"] == 1, 20, "the journal shedding market data")
        market_size = (day / MARKET).stat().st_size
        with Listener(box, "test.none", source="disk-test") as bus:
            sent = {bus.publish("test.order_path", {"n": n}).id for n in range(20)}  # order path: not market data
            wait_until(lambda: sent <= {e["id"] for e in reader.events(day, ("orders",), needle="test.order_path")}, 20,
                       f"the order path still journaled while shedding ({journal_status(box)})")
        assert (day / MARKET).stat().st_size == market_size, "market data was written below the floor"
        metrics = scrape()
        assert metrics["algo_journal_shed_events_total"] > 0
        assert metrics["algo_journal_disk_free_bytes"] < FLOOR_MB << 20
        alerts_firing(metrics, tmp_path)
        wait_until(lambda: "SHEDDING market data" in journal_status(box), 15, "the unit's status to say it sheds")
    finally:
        filler.unlink()
    wait_until(lambda: scrape()["algo_journal_shedding"] == 0, 20, "the journal recording market data again")
    wait_until(lambda: (day / MARKET).stat().st_size > market_size, 20, "market data written again")
    crit = box.journalctl("-u", "algo-journal.service", "-p", "crit", "-o", "cat").stdout.splitlines()
    assert len(crit) == 1 and "market data is no longer journaled" in crit[0], crit
    warnings = box.journalctl("-u", "algo-journal.service", "-p", "warning", "-o", "cat").stdout
    assert re.search(r"room again .* market data is journaled again", warnings), warnings
    events = list(reader.events(day))  # every line and frame whole: nothing torn by the full disk
    assert {"marketdata.tick", "health.heartbeat", "test.order_path"} <= {e["type"] for e in events}
    assert (day / EVENTS).read_bytes().endswith(b"\n")


def plant_legacy_day(box: Sandbox, day: str) -> list[dict[str, Any]]:
    """A closed day as today's main wrote it (ticks inside events.jsonl), owned by the fleet's user."""
    stamp = EventFactory("marketdata").stamp
    events = [stamp("marketdata.tick", {"symbol": "INFY", "last_price": 1500.0 + n})[0] for n in range(3)]
    events.append(EventFactory("fno").stamp("strategy.signal", {"symbol": "INFY"})[0])
    lines = [{"id": e.id, "ts": e.ts, "type": e.type, "source": e.source, "seq": e.seq, "trace": e.trace, "key": e.key,
              "payload": e.payload} for e in events]
    folder = box.state / "journal" / day
    folder.mkdir()
    (folder / EVENTS).write_bytes(b"".join(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE) for line in lines))
    owner = (box.state / "journal").stat()
    for path in (folder, folder / EVENTS):
        os.chown(path, owner.st_uid, owner.st_gid)
    return lines


def test_the_retention_unit_runs_in_the_fleet_compacts_a_closed_day_and_leaves_today_alone(box: Sandbox) -> None:
    day = box.state / "journal" / today()
    yesterday = (date.fromisoformat(today()) - timedelta(days=1)).isoformat()
    planted = plant_legacy_day(box, yesterday)
    before = sorted(p.name for p in day.iterdir())
    out = box.systemctl("start", "algo-journal-retention.service", timeout=120)
    log = box.journalctl("-u", "algo-journal-retention.service", "-o", "cat").stdout
    assert out.returncode == 0, out.stderr + log
    assert "1 days compacted, 0 files removed" in log, log
    assert sorted(p.name for p in day.iterdir()) == before  # today's day: untouched
    closed = box.state / "journal" / yesterday
    assert list(reader.events(closed)) == planted  # the same events ...
    assert [e["type"] for e in reader.events(closed, ("orders",))] == ["strategy.signal"]  # ... ticks out of events.jsonl
    assert (closed / MARKET).is_file() and not list((box.state / "journal").glob("*.compacting"))
    timers = box.systemctl("list-timers", "--all", "algo-journal-retention.timer").stdout
    assert "algo-journal-retention.timer" in timers, timers
