"""Where in its burst each signal's tick sat, and what that cost it: tick -> signal by the tick's place.

    sudo .venv/bin/python bench/pipeline/run.py --rates 1000 --universe 9000 --seconds 20 --workdir /var/tmp/pl
    .venv/bin/python bench/pipeline/burst.py /var/tmp/pl/1000/sandbox/state/journal/<day> [--slice 256]

A step is a burst: the feed stamps its ticks back to back, a slice of ``STEP_SLICE`` per turn of its loop
(README, "Method"). A tick early in the burst that still waits long waits for its own slice to leave the feed,
or for the CPUs the rest of the burst keeps busy; a late one waits behind the slices before it. The table
gives, per slice of the burst, how many signals' ticks sat there, when in the burst they were stamped and
their tick -> signal; below it, how long the feed took to stamp a whole burst.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from daemons.journal_format.reader import events  # noqa: E402
from pipeline.analysis import TICK, burst_places, fmt_ms, join, summary  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("day", type=Path, help="a journal day directory (events.jsonl and market.zst)")
    ap.add_argument("--slice", type=int, default=256, help="ticks per row (the feed's STEP_SLICE)")
    args = ap.parse_args()
    if not args.day.is_dir():
        sys.exit(f"{args.day}: not a journal day directory")
    evs = list(events(args.day, ("orders", "market")))
    ticks = {e["id"]: (e["ts"], e["seq"]) for e in evs if e["type"] == TICK}
    places = burst_places(ticks.values())
    rows: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for chain in join(evs).chains:
        tick = ticks.get(chain.trace)
        if tick is None:
            continue
        _, place, offset = places[tick[1]]
        rows[place // args.slice].append((offset / 1e6, (chain.signal - chain.tick) / 1e6))
    print("| ticks of the burst | signals | stamped after the burst's first, p50 ms | tick -> signal p50 / p99 ms |")
    print("|---|---:|---:|---|")
    for row in sorted(rows):
        stamped, waited = summary(o for o, _ in rows[row]), summary(w for _, w in rows[row])
        print(f"| {row * args.slice}-{(row + 1) * args.slice - 1} | {len(rows[row])} | {fmt_ms(stamped['p50'])} "
              f"| {fmt_ms(waited['p50'])} / {fmt_ms(waited['p99'])} |")
    ends: dict[int, int] = {}
    for burst, _, offset in places.values():
        ends[burst] = max(ends.get(burst, 0), offset)
    spans = summary(span / 1e6 for span in ends.values())
    print(f"\n{len(ends)} bursts; the feed stamped each in p50 {fmt_ms(spans['p50'])} ms, max {fmt_ms(spans['max'])} ms")


if __name__ == "__main__":
    main()
