"""bench/journal runs end to end on a small day: the numbers it reports exist and are sane (not timed)."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))  # bench/ is no package; bench/journal is (mypy's name: journal)

from journal.run import measure, render


def test_the_journal_bench_measures_a_small_day(tmp_path: Path) -> None:
    result = measure(3000, 1000, 5, tmp_path)
    bytes_per_tick = result["bytes_per_tick"]
    assert bytes_per_tick["market.zst compacted"] < bytes_per_tick["events.jsonl (before)"] / 5
    assert result["journal_cpu_ms_per_1k_ticks"]["total"] > 0 and result["replay_ticks_s"]["compacted"] > 0
    assert "bytes per tick" in render(result)
