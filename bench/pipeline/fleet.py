"""The benchmarks' fleet: the universe and fleet.toml of a load, and reading a running fleet (metrics,
CPU and memory per process, the journal's events of a window), wherever its daemons run: under the
sandbox's systemd (run.py) or as plain processes on simulated hosts (bench/multihost)."""

from __future__ import annotations

import csv
import os
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from daemons.journal_format import reader
from daemons.journal_format.layout import is_day
from daemons.marketdata.instruments import COLUMNS
from daemons.runtime.wire import matches
from pipeline.analysis import TICK, Samples, value

REPO = Path(__file__).resolve().parents[2]

# What each tick subscriber subscribes to (the daemons' subscribe() calls): its other topics' events are
# taken off algo_bus_client_received_total to leave the ticks it received.
SUBSCRIPTIONS = {
    **dict.fromkeys(("fno", "equity", "options"), ("marketdata.tick", "execution.fill", "control.*")),
    "risk": ("marketdata.tick", "strategy.signal", "execution.fill", "control.kill_switch", "control.sync"),
    "execution": ("marketdata.tick", "risk.approved", "control.sync"),
    "journal": ("*",),
}
INDEX_UNDERLYINGS = (("NIFTY 50", 75, 50.0), ("NIFTY BANK", 35, 100.0))
# Risk's token bucket passes up to this many at once and as many more within the second: at most 8 in any
# second and 244 in a minute, under execution's governor (10 and 400): the governor never holds an order.
RISK_ORDERS_PER_SECOND = 4.0


def target_services(units: Path = REPO / "units") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The services ``algo.target`` starts (the fleet is ready when all are active) and, of them, the
    daemons (``Type=notify``, not the oneshots), whose CPU and memory the bench reports: read from the unit
    files, so a daemon that joins the fleet is measured and waited for without an edit here."""
    wants = [name for line in (units / "algo.target").read_text().splitlines() if line.startswith("Wants=")
             for name in line.split("=", 1)[1].split()]
    services = tuple(name for name in wants if name.endswith(".service"))
    daemons = tuple(name.removeprefix("algo-").removesuffix(".service") for name in services
                    if "Type=notify" in (units / name).read_text().splitlines())
    return services, daemons


def derivative_strikes(universe: int) -> int:
    """Strikes either side of the money per index: the derivatives are ~5% of the universe (5..50)."""
    return max(5, min(50, round((universe / 40 - 3) / 4)))


def instruments_dump(path: Path, universe: int, seed: int = 7) -> list[str]:
    """A Kite-format dump whose spots plus the derivatives the config adds make ``universe``
    instruments: the shipped paper spots, then synthetic NSE equities. Returns the synthetic symbols."""
    with open(REPO / "configs" / "instruments" / "paper.csv", newline="") as f:
        shipped = list(csv.DictReader(f))
    strikes = derivative_strikes(universe)
    derivs = len(INDEX_UNDERLYINGS) * (1 + 2 * (2 * strikes + 1))
    n = universe - len(shipped) - derivs
    if n < 10:
        raise SystemExit(f"a universe of {universe} is too small (the indices' derivatives alone are {derivs})")
    rng = random.Random(seed)
    symbols = [f"SYN{i:05d}" for i in range(n)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(shipped)
        for i, sym in enumerate(symbols):
            w.writerow({"instrument_token": 5_000_000 + i, "exchange_token": 20_000 + i, "tradingsymbol": sym,
                        "name": f"SYNTHETIC {i}", "last_price": round(rng.uniform(50, 5000), 1), "expiry": "",
                        "strike": 0.0, "tick_size": 0.05, "lot_size": 1, "instrument_type": "EQ", "segment": "NSE",
                        "exchange": "NSE"})
    return symbols


def fleet_toml(universe: int, steps_per_second: float, traded: list[str], spread: bool = False,
               session_minutes: float | None = None) -> str:
    """configs/paper.toml with the bench's universe and pace, loss and position limits out of the way,
    and EMA(2/3) crossovers on ``traded`` (half in algo-fno, half in algo-equity) for a steady flow of signals.
    ``session_minutes``: the simulated session's length, paper.toml's (10) if None; 375 is real time, a minute's
    bars once a minute as in a market, where 10 closes them every 1.6 s."""
    text = (REPO / "configs" / "paper.toml").read_text()
    strikes = derivative_strikes(universe)
    edits = {
        'instruments = "/etc/algo/instruments/paper.csv"': 'instruments = "/etc/algo/instruments/bench.csv"',
        "steps_per_second = 2.0": f"steps_per_second = {steps_per_second!r}",
        "spread_steps = false": f"spread_steps = {str(spread).lower()}",
        "strikes = 5": f"strikes = {strikes}",
        "max_open_positions = 10": "max_open_positions = 100000",
        "orders_per_second = 10.0                         # fleet-wide":
            f"orders_per_second = {RISK_ORDERS_PER_SECOND}                          # fleet-wide",
        "daily_loss_limit = { fno = 20000.0, equity = 10000.0, options = 25000.0 }":
            "daily_loss_limit = { fno = 1e9, equity = 1e9, options = 1e9 }",
        "fleet_daily_loss_limit = 50000.0": "fleet_daily_loss_limit = 1e10",
    }
    if session_minutes is not None:
        edits["session_minutes = 10.0"] = f"session_minutes = {session_minutes!r}"
    for old, new in edits.items():
        count = text.count(old)
        if count == 0:
            raise SystemExit(f"configs/paper.toml changed: {old!r} not found; update bench/pipeline/fleet.py")
        text = text.replace(old, new)
    for n, sym in enumerate(traded):
        engine = "fno" if n % 2 else "equity"
        text += (f'\n[[daemons.{engine}.strategies]]\nname = "bench-ema-{n}"\nkind = "ema_crossover"\n'
                 f'params = {{ symbol = "{sym}", quantity = 1, fast = 2, slow = 3 }}\n')
    return text


# ---- reading the running fleet ------------------------------------------------------------------
def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out




def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for d, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[d] = (int(fields[11]) + int(fields[12])) / hz  # utime, stime
    return out


def rss_mb(pids: dict[str, int]) -> dict[str, float]:
    """VmRSS per daemon, MB: counters the kernel keeps, so cheap enough to sample every second of a window
    (``memory_mb`` walks each daemon's address space under its memory-map lock: once, after the window)."""
    out = {}
    for d, pid in pids.items():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out[d] = int(line.split()[1]) / 1024
    return out


START_UP = ("Id", "InactiveExitTimestampMonotonic", "ActiveEnterTimestampMonotonic", "InactiveEnterTimestampMonotonic")


def start_up(show: str) -> dict[str, tuple[float, float]]:
    """Each service's start and the moment it was up (active; a oneshot: done), in seconds after the first
    start, from ``systemctl show --property=`` ``START_UP`` of the services: the ordered chain that ready waits for."""
    units = []
    for block in show.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        started = int(props["InactiveExitTimestampMonotonic"])
        up = int(props["ActiveEnterTimestampMonotonic"]) or int(props["InactiveEnterTimestampMonotonic"])
        units.append((props["Id"], started, up))
    first = min(started for _, started, _ in units)
    return {unit: ((started - first) / 1e6, (up - first) / 1e6) for unit, started, up in units}


def memory_mb(pids: dict[str, int]) -> dict[str, dict[str, float]]:
    """Per daemon, MB: ``rss`` (VmRSS: the pages of the interpreter and the shared libraries, mapped by every
    daemon, counted in each), ``pss`` (those pages shared out among the processes that map them: the daemons'
    sum is what the fleet takes) and ``uss`` (its own pages alone), from /proc/PID/smaps_rollup."""
    out = {}
    for d, pid in pids.items():
        kb = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, _, value = line.partition(":")
            kb[name] = int(value.split()[0])
        out[d] = {"rss": kb["Rss"] / 1024, "pss": kb["Pss"] / 1024,
                  "uss": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024}
    return out


def machine_jiffies() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies of the whole machine, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, f[7], sum(f)


class Window:
    """What the journal holds of [start_ns, end_ns): events by type, and the span of the ticks' seq."""

    def __init__(self, start_ns: int, end_ns: int) -> None:
        self.start_ns, self.end_ns = start_ns, end_ns
        self.topics: Counter[str] = Counter()
        self.seqs: list[int] = []  # first and last tick seq

    def events(self, journal: Path) -> Iterator[dict[str, Any]]:
        """Every event of the journal (its directory), counting those of the window on the way."""
        for day in sorted(d for d in journal.iterdir() if is_day(d)):
            for e in reader.events(day):
                if self.start_ns <= e["ts"] < self.end_ns:
                    self.topics[e["type"]] += 1
                    if e["type"] == TICK:
                        self.seqs = [min(self.seqs[0], e["seq"]), max(self.seqs[1], e["seq"])] if self.seqs \
                            else [e["seq"], e["seq"]]
                yield e

    @property
    def stamped_ticks(self) -> int:
        return self.seqs[1] - self.seqs[0] + 1 if self.seqs else 0


def other_events(topics: Counter[str], subscriptions: Mapping[str, Sequence[str]] = SUBSCRIPTIONS) -> dict[str, int]:
    """Per tick subscriber, the events of its other topics (those of ``topics`` its patterns match)."""
    return {d: sum(n for t, n in topics.items() if t != TICK and any(matches(p, t) for p in patterns))
            for d, patterns in subscriptions.items()}


def settle(scrape_all: Callable[[], dict[str, Samples]], subscribers: Iterable[str], brokers: Iterable[str] = ("bus",),
           timeout: float = 6.0) -> tuple[dict[str, Samples], bool]:
    """With the feed paused: scrape (``scrape_all``: every daemon but the paused feed) until each broker
    holds nothing for anyone and no tick subscriber took in more than a few events (heartbeats, fills)
    since the last look: every tick is delivered. The paused feed cannot answer a scrape: its ticks are
    counted from the journal's sequence numbers. ``timeout`` stays well inside marketdata's
    WatchdogSec=10s. Returns the scrape and whether it settled."""
    subscribers, brokers = list(subscribers), list(brokers)
    deadline, last = time.monotonic() + timeout, None
    while True:
        now = scrape_all()
        seen = [value(now[d], "algo_bus_client_received_total") for d in subscribers]
        quiet = all(value(now[b], "algo_bus_queue_bytes") == 0 for b in brokers)
        if quiet and last is not None and all(b - a <= 25 for a, b in zip(last, seen, strict=True)):
            return now, True
        if time.monotonic() > deadline:
            return now, False
        last = seen
        time.sleep(0.3)
