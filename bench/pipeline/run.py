"""Tick -> order latency through the real fleet under systemd, at several tick rates.

For each rate: a fresh sandbox (daemons/algoctl/sandbox.py: a private systemd as PID 1) with a
synthetic Kite instruments dump of up to ``--universe`` instruments and a fleet.toml whose paper
simulator steps ``rate / universe`` times a second; ``systemctl start algo.target`` timed until every
service is active; a warm-up; a measured window between two scrapes of every daemon's metrics and
CPU; then the journal's events.jsonl is joined hop by hop (analysis.py). Needs root.

    sudo .venv/bin/python bench/pipeline/run.py --rates 1000,5000,10000,20000 --universe 9000 --seconds 20

``--spread`` spreads each step's ticks over the step (``spread_steps``): a steady feed of ``rate``
ticks/s, as a real market delivers them, instead of one burst of the whole universe per step.
``--sched`` also records the scheduler (``perf sched``) for up to 8 s of each window and reports each
daemon's scheduling delay, the run-queue wait that bus hops pay on a busy host (sched.py).
``--gateway N`` also starts algo-gateway with N WebSocket clients streaming everything it streams
(orders, fills, decisions, heartbeats): compare tick -> order with and without it.
``--cpu-split FLEET:FRONT`` pins the fleet's services to CPUs FLEET and algo-gateway with its WebSocket
clients to CPUs FRONT (``CPUAffinity=`` drop-ins, ``taskset``): a host whose front door has cores of its own.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# Run from anywhere: the checkout (daemons/) and bench/ (mypy names this package `pipeline`: bench/ is no package)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemons.algoctl.sandbox import Sandbox, unavailable_reason
from daemons.journal_format import reader
from daemons.journal_format.layout import is_day
from daemons.marketdata.instruments import COLUMNS
from daemons.runtime.wire import matches
from pipeline import sched
from pipeline.analysis import (
    HOPS,
    TICK,
    Samples,
    counts,
    cpu_per_kticks,
    hop_samples,
    join,
    latency_table,
    resource_table,
    summary,
    tick_losses,
    value,
)

REPO = Path(__file__).resolve().parents[2]
PORTS = {"bus": 9470, "heartbeat": 9471, "marketdata": 9472, "fno": 9473, "equity": 9474, "options": 9475,
         "risk": 9476, "execution": 9477, "journal": 9478}  # configs/paper.toml's, which the bench keeps
DAEMONS = tuple(PORTS)
# What each tick subscriber subscribes to (the daemons' subscribe() calls): its other topics' events are
# taken off algo_bus_client_received_total to leave the ticks it received.
SUBSCRIPTIONS = {
    **dict.fromkeys(("fno", "equity", "options"), ("marketdata.tick", "execution.fill", "control.*")),
    "risk": ("marketdata.tick", "strategy.signal", "execution.fill", "control.kill_switch", "control.sync"),
    "execution": ("marketdata.tick", "risk.approved", "control.sync"),
    "journal": ("*",),
}
SERVICES = tuple(f"algo-{d}.service" for d in DAEMONS) + ("algo-premarket.service",)
ALGOCTL = sys.prefix + "/bin/algoctl"
WS_CLIENTS = REPO / "bench" / "gateway" / "run.py"  # its --client subscribe mode
INDEX_UNDERLYINGS = (("NIFTY 50", 75, 50.0), ("NIFTY BANK", 35, 100.0))
RISK_ORDERS_PER_SECOND = 6.0  # x 60 s stays under execution's 400 orders/minute: the governor never holds an order


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


def fleet_toml(universe: int, steps_per_second: float, traded: list[str], spread: bool = False) -> str:
    """configs/paper.toml with the bench's universe and pace, loss and position limits out of the way,
    and EMA(2/3) crossovers on ``traded`` (half in algo-fno, half in algo-equity) for a steady flow of signals."""
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
    for old, new in edits.items():
        count = text.count(old)
        if count == 0:
            raise SystemExit(f"configs/paper.toml changed: {old!r} not found; update bench/pipeline/run.py")
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


def host_pids(box: Sandbox, daemons: tuple[str, ...] = DAEMONS) -> dict[str, int]:
    """Host pid of each daemon's main process (systemctl reports the namespace's pids)."""
    assert box.pid is not None
    ns = os.readlink(f"/proc/{box.pid}/ns/pid")
    inner_to_host: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") != ns:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("NSpid:"):
                    inner_to_host[int(line.split()[-1])] = int(entry.name)
        except OSError:
            continue
    out = {}
    for d in daemons:
        main = int(box.show(f"algo-{d}.service", "MainPID")["MainPID"])
        if main in inner_to_host:
            out[d] = inner_to_host[main]
    return out


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    for d, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[d] = (int(fields[11]) + int(fields[12])) / hz  # utime, stime
    return out


def rss_mb(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for d, pid in pids.items():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out[d] = int(line.split()[1]) / 1024
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

    def events(self, box: Sandbox) -> Iterator[dict[str, Any]]:
        """Every event of the journal, counting those of the window on the way."""
        for day in sorted(d for d in box.state.glob("journal/*") if is_day(d)):
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


def other_events(topics: Counter[str]) -> dict[str, int]:
    """Per tick subscriber, the events of its other topics (those of ``topics`` its patterns match)."""
    return {d: sum(n for t, n in topics.items() if t != TICK and any(matches(p, t) for p in patterns))
            for d, patterns in SUBSCRIPTIONS.items()}


def settle(timeout: float = 6.0) -> tuple[dict[str, Samples], bool]:
    """With the feed paused: scrape until the broker holds nothing for anyone and no tick subscriber
    took in more than a few events (heartbeats, fills) since the last look: every tick is delivered.
    The paused feed cannot answer a scrape: its ticks are counted from the journal's sequence numbers.
    ``timeout`` stays well inside marketdata's WatchdogSec=10s. Returns the scrape and whether it settled."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        now = {d: scrape(p) for d, p in PORTS.items() if d != "marketdata"}
        seen = [value(now[d], "algo_bus_client_received_total") for d in SUBSCRIPTIONS]
        quiet = value(now["bus"], "algo_bus_queue_bytes") == 0
        if quiet and last is not None and all(b - a <= 25 for a, b in zip(last, seen, strict=True)):
            return now, True
        if time.monotonic() > deadline:
            return now, False
        last = seen
        time.sleep(0.3)


def wait_ready(box: Sandbox, timeout: float = 60.0) -> float:
    """Seconds from `systemctl start algo.target` until every service of the fleet is active."""
    started = time.monotonic()
    box.systemctl("start", "--no-block", "algo.target", check=True)
    while time.monotonic() - started < timeout:
        out = box.systemctl("show", *SERVICES, "--property=ActiveState").stdout
        states = [line.split("=", 1)[1] for line in out.splitlines() if line.startswith("ActiveState=")]
        if len(states) == len(SERVICES) and all(s == "active" for s in states):
            return time.monotonic() - started
        if "failed" in states:
            break
        time.sleep(0.02)
    status = box.systemctl("status", "algo-*", "--lines=5").stdout
    raise SystemExit(f"the fleet did not come up within {timeout:g}s:\n{status}")


def pin_cpus(box: Sandbox, split: str) -> list[str]:
    """``CPUAffinity=`` drop-ins: the fleet's services on the CPUs before the colon, algo-gateway on those
    after it; returns ``taskset`` for the WebSocket clients (on the gateway's CPUs)."""
    fleet, front = split.split(":")
    for service in SERVICES:
        box.install_dropin(service, "bench-cpus", f"[Service]\nCPUAffinity={fleet.replace(',', ' ')}\n")
    box.install_dropin("algo-gateway.service", "bench-cpus", f"[Service]\nCPUAffinity={front.replace(',', ' ')}\n")
    return ["taskset", "-c", front]


def start_gateway(box: Sandbox, root: Path, clients: int, pin: list[str]) -> subprocess.Popen[str]:
    """algo-gateway under its unit, and ``clients`` WebSocket clients inside the sandbox (its socket is
    in the sandbox's /run) streaming everything it streams until ``root/ws-stop`` exists."""
    out = box.run(ALGOCTL, "gateway", "token", "add", "bench", "--role", "viewer", check=True)
    box.systemctl("start", "algo-gateway.service", check=True)
    assert box.pid is not None
    # The browsers stand-in runs at nice 19: in production browsers are not on the fleet's host, and on
    # 2 vCPUs 100 decoding WebSocket clients would otherwise compete with the fleet for the CPU.
    return subprocess.Popen(["nsenter", "-t", str(box.pid), "-m", "-p", *pin, "nice", "-n", "19", sys.executable,
                             str(WS_CLIENTS), "--client",
                             "subscribe", "--target", "unix:/run/algo-gateway/api.sock", "--token",
                             out.stdout.splitlines()[0], "--ws-clients", str(clients), "--until-file",
                             str(root / "ws-stop")], stdout=subprocess.PIPE, text=True)


def stop_ws_clients(clients: subprocess.Popen[str], root: Path) -> dict[str, Any]:
    (root / "ws-stop").touch()
    out, _ = clients.communicate(timeout=60)
    result: dict[str, Any] = json.loads(out)
    return result


# ---- one load -----------------------------------------------------------------------------------
def run_load(root: Path, rate: int, args: argparse.Namespace) -> dict[str, Any]:
    universe = max(10, min(args.universe, int(rate / args.min_steps)))
    steps = rate / universe
    root.mkdir(parents=True)
    box = Sandbox(root / "sandbox")
    config = root / "fleet.toml"
    (box.etc / "instruments").mkdir(parents=True)
    synthetic = instruments_dump(box.etc / "instruments" / "bench.csv", universe)
    traded = [synthetic[(i * len(synthetic)) // args.strategies] for i in range(args.strategies)]
    config.write_text(fleet_toml(universe, steps, traded, args.spread))
    box.prepare(config)
    pin = pin_cpus(box, args.cpu_split) if args.cpu_split else []
    print(f"[{rate:,} ticks/s] universe {universe:,} at {steps:.3f} steps/s{' spread' if args.spread else ''}, "
          f"{args.strategies} bench strategies",
          file=sys.stderr)
    box.start()
    try:
        ready = wait_ready(box)
        ws_clients = start_gateway(box, root, args.gateway, pin) if args.gateway else None
        pids = host_pids(box, DAEMONS + (("gateway",) if args.gateway else ()))
        time.sleep(args.warmup)
        # Tick counts are compared with the feed paused (SIGSTOP, well inside its watchdog) and every
        # queue drained at both ends of the window, so no tick is in flight when the counters are read.
        feed = pids["marketdata"]
        outbox0 = value(scrape(PORTS["marketdata"]), "algo_bus_client_dropped_total", reason="outbox_full")
        os.kill(feed, signal.SIGSTOP)
        before, settled0 = settle()
        cpu0, mach0, before_ns = cpu_seconds(pids), machine_jiffies(), time.time_ns()
        os.kill(feed, signal.SIGCONT)
        time.sleep(1.0)  # the simulator catches up the steps it missed: not part of the latency window
        start_ns, t0 = time.time_ns(), time.monotonic()
        perf = sched.record(root / "perf-sched.data", min(8.0, args.seconds)) if args.sched else None
        rss_peak: dict[str, float] = {}
        while time.monotonic() - t0 < args.seconds:
            time.sleep(min(1.0, args.seconds - (time.monotonic() - t0)))
            for d, mb in rss_mb(pids).items():
                rss_peak[d] = max(rss_peak.get(d, 0.0), mb)
        os.kill(feed, signal.SIGSTOP)
        end_ns, window = time.time_ns(), time.monotonic() - t0
        after, settled1 = settle()
        cpu1, mach1, after_ns = cpu_seconds(pids), machine_jiffies(), time.time_ns()
        counted_s = (after_ns - before_ns) / 1e9
        rss_end = rss_mb(pids)
        os.kill(feed, signal.SIGCONT)
        gateway = stop_ws_clients(ws_clients, root) if ws_clients is not None else None
        outbox1 = value(scrape(PORTS["marketdata"]), "algo_bus_client_dropped_total", reason="outbox_full")
        box.systemctl("stop", "algo.target", "algo-*", timeout=60)  # the journal writes out what it holds
        counted = Window(before_ns, after_ns)
        delays = None
        if perf is not None:
            perf.wait(timeout=60)
            delays = sched.delays(sched.timehist(root / "perf-sched.data"), {pid: d for d, pid in pids.items()})
        joined = join(counted.events(box), start_ns, end_ns)
    finally:
        box.stop()
    ticks = tick_losses(before, after, counted.stamped_ticks, outbox1 - outbox0, other_events(counted.topics),
                        counted.topics[TICK])
    fleet_cpu = sum(cpu1[d] - cpu0[d] for d in cpu1)
    hz = os.sysconf("SC_CLK_TCK")
    busy, steal, total = (b - a for a, b in zip(mach0, mach1, strict=True))
    samples = hop_samples(joined.chains)
    return {
        "rate": rate, "universe": universe, "steps_per_second": steps, "spread": args.spread, "cpu_split": args.cpu_split,
        "window_s": window,
        "counted_s": counted_s,
        "achieved": (joined.last_seq - joined.first_seq + 1) / window, "ready_s": ready,  # ticks stamped in the window
        "latency_ms": {h: summary(samples[h]) for h in HOPS},
        "counts": counts(joined.chains), "signals_without_journal_tick": joined.ticks_missing,
        "ticks": ticks,
        "settled": settled0 and settled1,
        "throttled": after["execution"].get(("algo_execution_throttled_total", ()), 0.0)
        - before["execution"].get(("algo_execution_throttled_total", ()), 0.0),
        "cpu_ms_per_kticks": cpu_per_kticks(cpu0, cpu1, ticks["published"]),
        "cpu_s": {d: cpu1[d] - cpu0[d] for d in cpu1},
        "rss_mb": rss_end, "rss_peak_mb": rss_peak, "gateway_ws": gateway, "sched": delays,
        "machine": {"cpus_busy": busy / hz / counted_s, "steal_pct": 100 * steal / total if total else 0.0,
                    "other_processes_cpus": max(0.0, busy / hz - fleet_cpu) / counted_s},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="1000,5000,10000,20000", help="ticks/s to feed, comma-separated")
    p.add_argument("--universe", type=int, default=9000, help="most instruments in the universe")
    p.add_argument("--min-steps", type=float, default=2.0,
                   help="simulator steps/s at least: a rate below universe x this uses a smaller universe (0: never)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured window per load")
    p.add_argument("--warmup", type=float, default=8.0, help="seconds after ready before the window opens")
    p.add_argument("--spread", action="store_true", help="spread each step's ticks over the step (a steady feed)")
    p.add_argument("--sched", action="store_true", help="record perf sched in the window: each daemon's scheduling delay")
    p.add_argument("--strategies", type=int, default=8, help="EMA(2/3) crossovers on synthetic symbols, added to the defaults")
    p.add_argument("--gateway", type=int, default=0, metavar="N",
                   help="also run algo-gateway with N WebSocket clients streaming everything it streams")
    p.add_argument("--cpu-split", default=None, metavar="FLEET:FRONT",
                   help="pin the fleet's services to CPUs FLEET and the gateway and its clients to FRONT, e.g. 1:0")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "pipeline.json")
    p.add_argument("--workdir", type=Path, default=None, help="keep each load's sandbox here (default: a temporary directory)")
    args = p.parse_args()
    if args.min_steps <= 0:
        args.min_steps = 1e-9
    reason = unavailable_reason()
    if reason:
        raise SystemExit(reason)
    if args.sched and shutil.which("perf") is None:
        raise SystemExit("--sched needs perf (Debian: apt-get install linux-perf)")
    rates = [int(r) for r in args.rates.split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="algo-bench-pipeline-", dir="/var/tmp"))
    loads = []
    try:
        for rate in rates:
            loads.append(run_load(work / str(rate), rate, args))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "daemons"], capture_output=True, text=True).stdout
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit.strip(),
              "daemons_dirty": dirty.split("\n") if dirty else [], "args": {k: str(v) for k, v in vars(args).items()},
              "cpus": os.cpu_count(), "loads": loads}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(latency_table(loads))
    print()
    print(resource_table(loads, DAEMONS))
    print()
    if args.sched:
        print(sched.table(loads))
        print()
    for load in loads:
        if load["gateway_ws"]:
            ws = load["gateway_ws"]
            print(f"{load['rate']:,} ticks/s: algo-gateway CPU {load['cpu_s']['gateway']:.2f} s in the window, RSS "
                  f"{load['rss_mb']['gateway']:.0f} MB (peak {load['rss_peak_mb']['gateway']:.0f}); {ws['clients']} "
                  f"WebSocket clients got {ws['messages']:,} messages ({ws['min_per_client']:,}-{ws['max_per_client']:,} "
                  f"each), {ws['closed']} closed early")
        m = load["machine"]
        print(f"{load['rate']:,} ticks/s: window {load['window_s']:.1f} s, machine busy {m['cpus_busy']:.2f} of "
              f"{os.cpu_count()} CPUs (other processes {m['other_processes_cpus']:.2f}), steal {m['steal_pct']:.1f}%")
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
