"""Tick -> order latency through the real fleet under systemd, at several tick rates.

For each rate: a fresh sandbox (daemons/algoctl/sandbox.py: a private systemd as PID 1) with a
synthetic Kite instruments dump of up to ``--universe`` instruments and a fleet.toml whose paper
simulator steps ``rate / universe`` times a second; ``systemctl start algo.target`` timed until every
service is active; a warm-up; a measured window between two scrapes of every daemon's metrics and
CPU; then the journal's events.jsonl is joined hop by hop (analysis.py). Needs root.

    sudo .venv/bin/python bench/pipeline/run.py --rates 1000,5000,10000,20000 --universe 9000 --seconds 20

``--spread`` spreads each step's ticks over the step (``spread_steps``): a steady feed of ``rate``
ticks/s, as a real market delivers them, instead of one burst of the whole universe per step.
``--session-minutes`` is the simulated session's length: 375 (the default) runs it at real time, so a minute's bars
close once a minute as in a market; paper.toml's 10 closes them every 1.6 s, a stress of the minute's close.
``--sched`` also records the scheduler (``perf sched``) for up to 8 s of each window and reports each
daemon's scheduling delay, the run-queue wait that bus hops pay on a busy host (sched.py).
``--canary`` also runs two bare processes ping-ponging a byte every 5 ms beside the fleet (canary.py): how
slow the host alone made a round trip while each of the slowest chains was on its way.
``--gateway N`` also starts algo-gateway with N WebSocket clients streaming everything it streams
(orders, fills, decisions, heartbeats): compare tick -> order with and without it.
``--cpu-split FLEET:FRONT`` pins the fleet's services to CPUs FLEET and algo-gateway with its WebSocket
clients to CPUs FRONT (``CPUAffinity=`` drop-ins, ``taskset``): a host whose front door has cores of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run from anywhere: the checkout (daemons/) and bench/ (mypy names this package `pipeline`: bench/ is no package)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemons.algoctl.sandbox import Sandbox, unavailable_reason
from pipeline import canary, sched
from pipeline.analysis import (
    HOPS,
    TICK,
    Samples,
    counts,
    cpu_per_kticks,
    hop_samples,
    join,
    latency_table,
    memory_table,
    resource_table,
    startup_table,
    summary,
    tick_losses,
    value,
)
from pipeline.fleet import (
    START_UP,
    SUBSCRIPTIONS,
    Window,
    cpu_seconds,
    fleet_toml,
    instruments_dump,
    machine_jiffies,
    memory_mb,
    other_events,
    rss_mb,
    scrape,
    settle,
    start_up,
    target_services,
)

PORTS = {"bus": 9470, "heartbeat": 9471, "marketdata": 9472, "fno": 9473, "equity": 9474, "options": 9475,
         "risk": 9476, "execution": 9477, "journal": 9478}  # configs/paper.toml's, which the bench keeps
REPO = Path(__file__).resolve().parents[2]
SERVICES, DAEMONS = target_services(REPO / "units")  # every one of algo.target's: algo-commander's too
ALGOCTL = sys.prefix + "/bin/algoctl"
WS_CLIENTS = REPO / "bench" / "gateway" / "run.py"  # its --client subscribe mode


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


def scrape_fleet() -> dict[str, Samples]:
    """Every daemon but the feed (paused while the bench settles)."""
    return {d: scrape(p) for d, p in PORTS.items() if d != "marketdata"}


def wait_ready(box: Sandbox, timeout: float = 60.0) -> float:
    """Seconds from `systemctl start algo.target` until every service of the fleet is active: the start returns
    when the target's job is done, and a target orders itself after what it wants, so after every service's
    start. (Polling `systemctl show` every 20 ms instead, as this did until round 19, took 1.5-2.5 CPU s of the
    two CPUs the start was measured on, with the sandbox's systemd answering, and made it 0.6-1.2 s longer.)"""
    started = time.monotonic()
    try:
        box.systemctl("start", "algo.target", timeout=timeout)  # a unit that fails is reported below
    except subprocess.TimeoutExpired:
        pass
    ready = time.monotonic() - started
    out = box.systemctl("show", *SERVICES, "--property=ActiveState").stdout
    states = [line.split("=", 1)[1] for line in out.splitlines() if line.startswith("ActiveState=")]
    if len(states) == len(SERVICES) and all(s == "active" for s in states):
        return ready
    status = box.systemctl("status", "algo-*", "--lines=5").stdout
    raise SystemExit(f"the fleet did not come up ({ready:.1f} s after systemctl start algo.target):\n{status}")


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
    config.write_text(fleet_toml(universe, steps, traded, args.spread, args.session_minutes))
    box.prepare(config)
    pin = pin_cpus(box, args.cpu_split) if args.cpu_split else []
    print(f"[{rate:,} ticks/s] universe {universe:,} at {steps:.3f} steps/s{' spread' if args.spread else ''}, "
          f"a {args.session_minutes:g}-minute session, {args.strategies} bench strategies",
          file=sys.stderr)
    pinger: subprocess.Popen[bytes] | None = None
    box.start()
    try:
        ready = wait_ready(box)
        startup = start_up(box.systemctl("show", *SERVICES, "--property=" + ",".join(START_UP)).stdout)
        pids = host_pids(box, DAEMONS)
        start_cpu = cpu_seconds(pids)  # what each daemon's start took (its sandbox set-up included)
        ws_clients = start_gateway(box, root, args.gateway, pin) if args.gateway else None
        if args.gateway:
            pids |= host_pids(box, ("gateway",))
        time.sleep(args.warmup)
        # Tick counts are compared with the feed paused (SIGSTOP, well inside its watchdog) and every
        # queue drained at both ends of the window, so no tick is in flight when the counters are read.
        feed = pids["marketdata"]
        outbox0 = value(scrape(PORTS["marketdata"]), "algo_bus_client_dropped_total", reason="outbox_full")
        os.kill(feed, signal.SIGSTOP)
        before, settled0 = settle(scrape_fleet, SUBSCRIPTIONS)
        cpu0, mach0, before_ns = cpu_seconds(pids), machine_jiffies(), time.time_ns()
        os.kill(feed, signal.SIGCONT)
        time.sleep(1.0)  # the simulator catches up the steps it missed: not part of the latency window
        pinger = canary.start(root / "canary.json") if args.canary else None
        start_ns, t0 = time.time_ns(), time.monotonic()
        perf = sched.record(root / "perf-sched.data", min(8.0, args.seconds)) if args.sched else None
        rss_peak: dict[str, float] = {}
        while time.monotonic() - t0 < args.seconds:
            time.sleep(min(1.0, args.seconds - (time.monotonic() - t0)))
            for d, mb in rss_mb(pids).items():
                rss_peak[d] = max(rss_peak.get(d, 0.0), mb)
        os.kill(feed, signal.SIGSTOP)
        end_ns, window = time.time_ns(), time.monotonic() - t0
        rounds = canary.stop(pinger, root / "canary.json") if pinger is not None else None
        after, settled1 = settle(scrape_fleet, SUBSCRIPTIONS)
        cpu1, mach1, after_ns = cpu_seconds(pids), machine_jiffies(), time.time_ns()
        counted_s = (after_ns - before_ns) / 1e9
        memory = memory_mb(pids)
        os.kill(feed, signal.SIGCONT)
        gateway = stop_ws_clients(ws_clients, root) if ws_clients is not None else None
        outbox1 = value(scrape(PORTS["marketdata"]), "algo_bus_client_dropped_total", reason="outbox_full")
        box.systemctl("stop", "algo.target", "algo-*", timeout=60)  # the journal writes out what it holds
        counted = Window(before_ns, after_ns)
        delays = None
        if perf is not None:
            perf.wait(timeout=60)
            delays = sched.delays(sched.timehist(root / "perf-sched.data"), {pid: d for d, pid in pids.items()})
        joined = join(counted.events(box.state / "journal"), start_ns, end_ns)
    finally:
        if pinger is not None and pinger.poll() is None:  # the window ended early: its echo child follows it out
            pinger.kill()
        box.stop()
    ticks = tick_losses(before, after, counted.stamped_ticks, outbox1 - outbox0, other_events(counted.topics),
                        counted.topics[TICK])
    fleet_cpu = sum(cpu1[d] - cpu0[d] for d in cpu1)
    hz = os.sysconf("SC_CLK_TCK")
    busy, steal, total = (b - a for a, b in zip(mach0, mach1, strict=True))
    samples = hop_samples(joined.chains)
    return {
        "rate": rate, "universe": universe, "steps_per_second": steps, "spread": args.spread,
        "session_minutes": args.session_minutes, "cpu_split": args.cpu_split,
        "window_s": window,
        "counted_s": counted_s,
        "achieved": (joined.last_seq - joined.first_seq + 1) / window, "ready_s": ready,  # ticks stamped in the window
        "start_up": startup, "start_cpu_s": start_cpu, "cpus": len(os.sched_getaffinity(0)),
        "latency_ms": {h: summary(samples[h]) for h in HOPS},
        "counts": counts(joined.chains), "signals_without_journal_tick": joined.ticks_missing,
        "ticks": ticks,
        "settled": settled0 and settled1,
        "throttled": after["execution"].get(("algo_execution_throttled_total", ()), 0.0)
        - before["execution"].get(("algo_execution_throttled_total", ()), 0.0),
        "cpu_ms_per_kticks": cpu_per_kticks(cpu0, cpu1, ticks["published"]),
        "cpu_s": {d: cpu1[d] - cpu0[d] for d in cpu1},
        "rss_mb": {d: m["rss"] for d, m in memory.items()}, "rss_peak_mb": rss_peak, "memory_mb": memory,
        "gateway_ws": gateway, "sched": delays,
        "canary": canary.report(rounds, joined.chains) if rounds is not None else None,
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
    p.add_argument("--session-minutes", type=float, default=375.0,
                   help="the simulated session's length: 375 is real time, a minute's bars once a minute (paper.toml: 10)")
    p.add_argument("--sched", action="store_true", help="record perf sched in the window: each daemon's scheduling delay")
    p.add_argument("--canary", action="store_true",
                   help="ping-pong two bare processes beside the fleet in the window: the host's own stalls (canary.py)")
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
    print(memory_table(loads, DAEMONS))
    print()
    print(startup_table(loads))
    print()
    if args.sched:
        print(sched.table(loads))
        print()
    if args.canary:
        print(canary.table(loads))
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
