"""A disk that stalls a sync is seen: every sync of durable state is in ``algo_disk_sync_seconds``, and a slow one
is a warning naming the file, at most one line per ``LINE_EVERY_SEC`` counting the rest."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from daemons.runtime import checkpoint, disk_sync
from daemons.runtime.metrics import DaemonMetrics
from daemons.runtime.wal import RecordLog


@pytest.fixture
def stalls(monkeypatch: pytest.MonkeyPatch) -> disk_sync._Stalls:
    fresh = disk_sync._Stalls()
    monkeypatch.setattr(disk_sync, "STALLS", fresh)
    return fresh


def disk(monkeypatch: pytest.MonkeyPatch, fdatasync_sec: float, fsync_sec: float) -> None:
    """os.fdatasync and os.fsync that take these long and do nothing else, so what the test sees is what it
    set, not this VM's disk, which itself stalls a sync past 50 ms about once a minute."""
    monkeypatch.setattr(os, "fdatasync", lambda fd: time.sleep(fdatasync_sec))
    monkeypatch.setattr(os, "fsync", lambda fd: time.sleep(fsync_sec))


def samples(metrics: DaemonMetrics) -> tuple[float, float]:
    """(syncs, syncs of 50 ms or less) so far in this process."""
    count = metrics.registry.get_sample_value("algo_disk_sync_seconds_count")
    fast = metrics.registry.get_sample_value("algo_disk_sync_seconds_bucket", {"le": "0.05"})
    assert count is not None and fast is not None
    return count, fast


def test_a_slow_sync_of_the_write_ahead_log_is_one_warning_naming_the_file_and_in_the_histogram(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        stalls: disk_sync._Stalls) -> None:
    metrics = DaemonMetrics("execution")
    log = RecordLog(tmp_path / "orders.wal")
    caplog.set_level(logging.WARNING, "algo.disk")
    count, fast = samples(metrics)
    disk(monkeypatch, 0.0, 0.0)
    log.append({"op": "new", "client_id": "a"})  # a healthy disk: counted, no line
    assert samples(metrics) == (count + 1, fast + 1) and not caplog.records
    disk(monkeypatch, disk_sync.SLOW_SEC + 0.01, disk_sync.SLOW_SEC + 0.15)  # a checkpoint's syncs the slowest
    log.append({"op": "new", "client_id": "b"})
    assert samples(metrics) == (count + 2, fast + 1)
    [line] = caplog.records
    assert "orders.wal took" in line.getMessage() and str(tmp_path / "orders.wal") == line.STATE_FILE  # type: ignore[attr-defined]
    log.append({"op": "new", "client_id": "c"})  # within LINE_EVERY_SEC of the line: counted into the next one
    assert len(caplog.records) == 1 and stalls.count == 1
    stalls.last_line -= disk_sync.LINE_EVERY_SEC
    checkpoint.write(tmp_path / "checkpoint.json", {"generation": 1})  # a checkpoint's two syncs: the file, the folder
    assert samples(metrics)[0] == count + 5
    last = caplog.records[-1].getMessage()  # the file's sync made the line, the folder's waits for the next
    assert "2 syncs took 50 ms or more since the last such line, the slowest" in last, last
    assert "checkpoint.json)" in last, last
    assert stalls.count == 1
    log.close()


def test_the_line_s_throttle_counts_every_stall_and_names_the_worst() -> None:
    stalls = disk_sync._Stalls()
    a, b = Path("/s/a.wal"), Path("/s/b.wal")
    stalls.note(a, 0.06, now=100.0)  # reported at once
    assert stalls.count == 0
    stalls.note(b, 0.4, now=101.0)
    stalls.note(a, 0.07, now=105.0)
    assert (stalls.count, stalls.worst, stalls.worst_path) == (2, 0.4, b)
    stalls.note(a, 0.05, now=110.5)  # past LINE_EVERY_SEC: one line for the three, then nothing pending
    assert (stalls.count, stalls.worst_path, stalls.last_line) == (0, None, 110.5)
