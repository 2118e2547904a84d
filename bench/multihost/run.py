"""Cross-host tick -> order: the paper fleet split over two simulated hosts, against the same processes on one.

For each rate, two setups in the same invocation (bench/pipeline's load: its universe, its pace, its
bench strategies; its analysis of the journal):

- ``1host``: every daemon on one bus in namespace ``a``, no bridge, no Redis;
- ``2hosts``: host ``a`` runs algo-bus, algo-marketdata (the paper simulator), algo-risk, algo-execution,
  algo-journal and algo-bridge; host ``b`` algo-bus, the three engines and algo-bridge; redis-server (AOF,
  appendfsync everysec, the bridge's ACL user, as the role algo_redis deploys it) in a third namespace.
  Ticks and fills cross a -> b, signals b -> a, each through both bridges and Redis.

Every daemon is a plain process under ``nsenter --net`` (no systemd: this measures the fleet, not its
units), as root, with its own state directory. Needs root, iproute2, util-linux and redis-server.

    sudo .venv/bin/python bench/multihost/run.py --rates 1000,10000
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

# Run from anywhere: the checkout (daemons/) and bench/ (bench/ is no package; mypy names these `multihost`, `pipeline`)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.analysis import (
    TICK,
    Samples,
    counts,
    cpu_per_kticks,
    delta,
    fmt_ms,
    histogram_between,
    hop_samples,
    join,
    latency_table,
    relay_losses,
    resource_table,
    summary,
    tick_losses,
    value,
)
from pipeline.fleet import (
    SUBSCRIPTIONS,
    Window,
    cpu_seconds,
    fleet_toml,
    instruments_dump,
    machine_jiffies,
    other_events,
    rss_mb,
    scrape,
    settle,
)

from daemons.algoctl.processes import stop_all
from multihost.net import Topology

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.prefix) / "bin"
PREFIX, SUBNET = "xbench", "10.251.0"  # not 10.250.0.0/24: a test harness uses that
REDIS_PORT = 6379
REDIS_PASSWORD = "multihost-bench-password"  # the bridge's ACL user; only inside the bench's namespaces
REPORTED_HOPS = ("tick->signal", "signal->approved", "signal->blocked", "approved->order", "tick->order")
# Where each daemon runs when the fleet spans two hosts (on one host: all on "a"), and its metrics port
# (configs/paper.toml's: each namespace has its own loopback).
HOST_OF = {"marketdata": "a", "risk": "a", "execution": "a", "journal": "a", "fno": "b", "equity": "b", "options": "b"}
PORTS = {"bus": 9470, "marketdata": 9472, "fno": 9473, "equity": 9474, "options": 9475, "risk": 9476,
         "execution": 9477, "journal": 9478, "bridge": 9480}
# What crosses: a's feed, orders and fills (engines take fills and control.*) to b; b's signals to a.
BRIDGES = {
    "a": {"daemons": ["marketdata", "risk", "execution", "journal"], "exports": ["marketdata.*", "execution.*", "control.*"],
          "imports": ["strategy.*"]},
    "b": {"daemons": ["fno", "equity", "options"], "exports": ["strategy.*"],
          "imports": ["marketdata.*", "execution.*", "control.*"]},
}
COLUMNS = ("bus@a", "bus@b", "bridge@a", "bridge@b", "redis-server", "marketdata", "fno", "equity", "options", "risk",
           "execution", "journal")


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: SIGKILL when the bench dies, however it dies (kept across nsenter's exec)."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)


@dataclass
class Fleet:
    """The processes of one setup, by name (``bus@a``, ``bridge@b``, ``redis-server``, ``risk``, ...)."""

    topo: Topology
    root: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)  # name -> host

    def spawn(self, name: str, host: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        with open(self.root / f"{name}.log", "wb") as log:  # the child keeps its own copy of the descriptor
            self.procs[name] = subprocess.Popen([*self.topo.exec_prefix(host), *argv], env=env, stdout=log, stderr=log,
                                                preexec_fn=_die_with_parent)
        self.hosts[name] = host

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.root / f"{name}.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"{name} exited with {proc.returncode}:\n{tail}")

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def scrape_all(self, skip: Sequence[str] = ("marketdata", "redis-server")) -> dict[str, Samples]:
        """Every daemon's metrics, read from inside its host's namespace."""
        self.check()
        out = {}
        for name, host in self.hosts.items():
            if name not in skip:
                port = PORTS[name.split("@")[0]]
                out[name] = self.topo.reader(host).call(partial(scrape, port))
        return out

    def stop(self) -> None:
        """The feed and the daemons first (the journal writes out what it holds), then bridges, brokers, Redis."""
        order = [[n for n in self.procs if "@" not in n and n != "redis-server"],
                 [n for n in self.procs if n.startswith("bridge@")], [n for n in self.procs if n.startswith("bus@")],
                 ["redis-server"]]
        for names in order:
            stop_all([self.procs[n] for n in names if n in self.procs], 20)


# ---- configuration ------------------------------------------------------------------------------
def redis_conf(root: Path, address: str) -> Path:
    """The role's persistence (AOF, appendfsync everysec, no RDB) and its bridge user, on the namespace's address."""
    (root / "redis").mkdir()
    conf = root / "redis" / "redis.conf"
    conf.write_text("\n".join([
        f"bind {address}", f"port {REDIS_PORT}", "protected-mode no", f"dir {root / 'redis'}",
        f"logfile {root / 'redis' / 'redis.log'}",
        "appendonly yes", "appendfsync everysec", "aof-use-rdb-preamble yes", 'save ""', "maxmemory-policy noeviction",
        "user default off resetpass resetkeys resetchannels -@all",
        f"user algo on >{REDIS_PASSWORD} ~algo:bus:* resetchannels -@all +@stream +ping",
    ]) + "\n")
    return conf


def host_toml(base: str, host_dir: Path, bridge: dict[str, list[str]] | None, host: str, redis_url: str) -> str:
    """bench/pipeline's fleet.toml with this host's bus socket and state paths, and its bridge."""
    text = base.replace('socket = "/run/algo/bus.sock"', f'socket = "{host_dir}/bus.sock"')
    text = text.replace("/etc/algo/instruments/", f"{host_dir.parent}/").replace("/var/lib/algo/", f"{host_dir}/state/")
    if bridge is not None:
        lists = "".join(f"{k} = {json.dumps(v)}\n" for k, v in bridge.items())
        text += f'\n[daemons.bridge]\nhost = "{host}"\nredis_url = "{redis_url}"\n{lists}'
    return text


def daemon_env(host_dir: Path, name: str) -> dict[str, str]:
    """A unit's environment: its config, its StateDirectory= (made here, as systemd would), its credentials."""
    (host_dir / "state" / name).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ALGO_CONFIG": str(host_dir / "fleet.toml"), "STATE_DIRECTORY": str(host_dir / "state" / name),
           "CREDENTIALS_DIRECTORY": str(host_dir / "creds")}
    for var in ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
        env.pop(var, None)
    return env


def wait_for(what: str, predicate: Callable[[], object], fleet: Fleet, timeout: float = 30.0) -> None:
    """Until ``predicate`` holds (an OSError counts as not yet); any process of the fleet exiting is an error."""
    deadline = time.monotonic() + timeout
    while True:
        fleet.check()
        try:
            if predicate():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def start(fleet: Fleet, setup: str, base_toml: str) -> float:
    """Start one setup's processes; seconds until every daemon answers its metrics (and each bridge has Redis)."""
    topo, root = fleet.topo, fleet.root
    two = setup == "2hosts"
    hosts = ("a", "b") if two else ("a",)
    redis_url = f"redis://{topo.address('redis')}:{REDIS_PORT}"
    t0 = time.monotonic()
    if two:
        fleet.spawn("redis-server", "redis", [shutil.which("redis-server") or "redis-server",
                                              str(redis_conf(root, topo.address("redis")))])

        def redis_listens() -> bool:
            with socket.create_connection((topo.address("redis"), REDIS_PORT), timeout=1):
                return True
        wait_for("redis-server", lambda: topo.reader("redis").call(redis_listens), fleet)
    for host in hosts:
        host_dir = root / host
        (host_dir / "creds").mkdir(parents=True)
        (host_dir / "creds" / "algo_redis_password").write_text(REDIS_PASSWORD + "\n")
        (host_dir / "fleet.toml").write_text(host_toml(base_toml, host_dir, BRIDGES[host] if two else None, host, redis_url))
        fleet.spawn(f"bus@{host}", host, [str(BIN / "algo-bus")], daemon_env(host_dir, "bus"))
        wait_for(f"bus@{host}'s socket", (host_dir / "bus.sock").exists, fleet)
        if two:
            fleet.spawn(f"bridge@{host}", host, [str(BIN / "algo-bridge")], daemon_env(host_dir, "bridge"))
    # Subscribers before the feed; engines wherever they run.
    for name in ("journal", "risk", "execution", "fno", "equity", "options", "marketdata"):
        host = HOST_OF[name] if two else "a"
        fleet.spawn(name, host, [str(BIN / f"algo-{name}")], daemon_env(root / host, name))

    def ready() -> bool:
        now = fleet.scrape_all(skip=("redis-server",))
        return all(value(now[b], "algo_bridge_redis_up") == 1 for b in now if b.startswith("bridge@"))
    wait_for("every daemon's metrics", ready, fleet, timeout=60)
    return time.monotonic() - t0


# ---- one load -----------------------------------------------------------------------------------
def per_host(samples: Mapping[str, Samples], host: str, subscribers: Sequence[str]) -> dict[str, Samples]:
    """One host's scrapes as tick_losses reads them: its broker as "bus", its tick subscribers by name."""
    return {"bus": samples[f"bus@{host}"], **{d: samples[d] for d in subscribers}}


def losses(setup: str, before: Mapping[str, Samples], after: Mapping[str, Samples], stamped: int, outbox_full: float,
           window: Window) -> dict[str, Any]:
    """tick_losses on each host (on b against what b's bridge published there) and relay_losses between them."""
    if setup == "1host":
        return tick_losses(per_host(before, "a", list(SUBSCRIPTIONS)), per_host(after, "a", list(SUBSCRIPTIONS)), stamped,
                           outbox_full, other_events(window.topics), window.topics[TICK])
    on = {h: [d for d in SUBSCRIPTIONS if HOST_OF[d] == h] for h in ("a", "b")}
    a = tick_losses(per_host(before, "a", on["a"]), per_host(after, "a", on["a"]), stamped, outbox_full,
                    other_events(window.topics, {d: SUBSCRIPTIONS[d] for d in on["a"]}), window.topics[TICK])
    relay = relay_losses(before, after, "bus@a", "bus@b", ("bridge@a", "bridge@b"))
    b = tick_losses(per_host(before, "b", on["b"]), per_host(after, "b", on["b"]), int(relay["arrived"]), 0.0,
                    other_events(window.topics, {d: SUBSCRIPTIONS[d] for d in on["b"]}), window.topics[TICK])
    return {**a, "broker_conflated": a["broker_conflated"] + b["broker_conflated"] + relay["conflated"],
            "client_conflated": a["client_conflated"] + b["client_conflated"],
            "filtered": a["filtered"] + b["filtered"],
            "lost_beyond_policy": a["lost_beyond_policy"] + b["lost_beyond_policy"] + relay["lost"],
            "per_subscriber": {**a["per_subscriber"], **b["per_subscriber"]}, "host_b": b, "relay": relay}


def bridge_rates(before: Mapping[str, Samples], after: Mapping[str, Samples], seconds: float) -> dict[str, dict[str, float]]:
    """Events/s each bridge exported and imported, per lane, over the counted window."""
    out: dict[str, dict[str, float]] = {}
    for b in (n for n in after if n.startswith("bridge@")):
        out[b] = {f"{way}_{lane}": delta(before[b], after[b], f"algo_bridge_{way}_total", lane=lane) / seconds
                  for way in ("exported", "imported") for lane in ("order", "marketdata")}
    return out


def crossing_ms(before: Mapping[str, Samples], after: Mapping[str, Samples]) -> dict[str, dict[str, float]]:
    """Per bridge, what its imports took from their publish on the other host to their publish on this one
    (``algo_bridge_lag_seconds``, one clock here): on b the ticks and fills from a, on a the signals from b."""
    out = {}
    for b in (n for n in after if n.startswith("bridge@")):
        h = histogram_between(before[b], after[b], "algo_bridge_lag_seconds")
        xadd = histogram_between(before[b], after[b], "algo_bridge_redis_seconds", op="xadd")
        out[b] = {**{k: v if k == "n" else v * 1e3 for k, v in h.items()}, "xadd_n": xadd["n"], "xadd_mean": xadd["mean"] * 1e3}
    return out


def run_load(topo: Topology, root: Path, setup: str, rate: int, args: argparse.Namespace) -> dict[str, Any]:
    universe = max(10, min(args.universe, int(rate / args.min_steps)))
    steps = rate / universe
    root.mkdir(parents=True)
    synthetic = instruments_dump(root / "bench.csv", universe)
    traded = [synthetic[(i * len(synthetic)) // args.strategies] for i in range(args.strategies)]
    print(f"[{rate:,} ticks/s, {setup}] universe {universe:,} at {steps:.3f} steps/s, {args.strategies} bench strategies",
          file=sys.stderr)
    fleet = Fleet(topo, root)
    try:
        ready = start(fleet, setup, fleet_toml(universe, steps, traded))
        time.sleep(args.warmup)
        brokers = [n for n in fleet.procs if n.startswith("bus@")]

        def scrape_fleet() -> dict[str, Samples]:
            return fleet.scrape_all()
        feed = fleet.procs["marketdata"].pid

        def outbox() -> float:
            feed_metrics = topo.reader("a").call(partial(scrape, PORTS["marketdata"]))
            return value(feed_metrics, "algo_bus_client_dropped_total", reason="outbox_full")
        outbox0 = outbox()
        os.kill(feed, signal.SIGSTOP)
        before, settled0 = settle(scrape_fleet, SUBSCRIPTIONS, brokers)
        cpu0, mach0, before_ns = cpu_seconds(fleet.pids), machine_jiffies(), time.time_ns()
        os.kill(feed, signal.SIGCONT)
        time.sleep(1.0)  # the simulator catches up the steps it missed: not part of the latency window
        start_ns, t0 = time.time_ns(), time.monotonic()
        rss_peak: dict[str, float] = {}
        while time.monotonic() - t0 < args.seconds:
            time.sleep(min(1.0, args.seconds - (time.monotonic() - t0)))
            fleet.check()
            for d, mb in rss_mb(fleet.pids).items():
                rss_peak[d] = max(rss_peak.get(d, 0.0), mb)
        os.kill(feed, signal.SIGSTOP)
        end_ns, window_s = time.time_ns(), time.monotonic() - t0
        after, settled1 = settle(scrape_fleet, SUBSCRIPTIONS, brokers, timeout=args.settle)
        cpu1, mach1, after_ns = cpu_seconds(fleet.pids), machine_jiffies(), time.time_ns()
        rss_end = rss_mb(fleet.pids)
        os.kill(feed, signal.SIGCONT)
        outbox1 = outbox()
    finally:
        fleet.stop()
    counted_s = (after_ns - before_ns) / 1e9
    window = Window(before_ns, after_ns)
    joined = join(window.events(root / "a" / "state" / "journal"), start_ns, end_ns)
    ticks = losses(setup, before, after, window.stamped_ticks, outbox1 - outbox0, window)
    samples = hop_samples(joined.chains)
    cpu_s = {d: cpu1[d] - cpu0[d] for d in cpu1}
    rates = bridge_rates(before, after, counted_s)
    relayed = {b: sum(r.values()) * counted_s for b, r in rates.items()}
    per_kevents = {b: cpu_s[b] * 1e3 / (n / 1e3) if n else float("nan") for b, n in relayed.items()}
    if "redis-server" in cpu_s:  # every entry is written once and read once
        written = sum(delta(before[b], after[b], "algo_bridge_exported_total") for b in rates)
        per_kevents["redis-server"] = cpu_s["redis-server"] * 1e3 / (written / 1e3) if written else float("nan")
    hz = os.sysconf("SC_CLK_TCK")
    busy, steal, total = (b - a for a, b in zip(mach0, mach1, strict=True))
    return {
        "setup": setup, "rate": rate, "universe": universe, "steps_per_second": steps, "window_s": window_s,
        "counted_s": counted_s, "achieved": (joined.last_seq - joined.first_seq + 1) / window_s, "ready_s": ready,
        "latency_ms": {h: summary(samples[h]) for h in samples}, "counts": counts(joined.chains),
        "signals_without_journal_tick": joined.ticks_missing, "ticks": ticks, "settled": settled0 and settled1,
        "throttled": delta(before["execution"], after["execution"], "algo_execution_throttled_total"),
        "cpu_ms_per_kticks": cpu_per_kticks(cpu0, cpu1, ticks["published"]),
        "cpu_s": cpu_s, "cpu_ms_per_kevents_relayed": per_kevents, "bridge_events_per_s": rates,
        "crossing_ms": crossing_ms(before, after),
        "rss_mb": rss_end, "rss_peak_mb": rss_peak,
        "machine": {"cpus_busy": busy / hz / counted_s, "steal_pct": 100 * steal / total if total else 0.0,
                    "other_processes_cpus": max(0.0, busy / hz - sum(cpu_s.values())) / counted_s},
    }


# ---- report -------------------------------------------------------------------------------------
def bridge_table(loads: Sequence[Mapping[str, Any]]) -> str:
    """Per bridge: events/s out and in by lane, and its CPU (and Redis's) per 1,000 events it relayed."""
    lines = ["| ticks/s | bridge | out: order / marketdata ev/s | in: order / marketdata ev/s | CPU ms per 1k relayed | "
             "imports' crossing ms: mean / p50 / p99 (bucket bound) | XADD pipelines: n, mean ms |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for load in loads:
        for b, r in load["bridge_events_per_s"].items():
            c = load["crossing_ms"][b]
            lines.append(f"| {load['rate']:,} | {b} | {r['exported_order']:,.0f} / {r['exported_marketdata']:,.0f} | "
                         f"{r['imported_order']:,.0f} / {r['imported_marketdata']:,.0f} | "
                         f"{fmt_ms(load['cpu_ms_per_kevents_relayed'][b])} | "
                         f"{fmt_ms(c['mean'])} / {fmt_ms(c['p50'])} / {fmt_ms(c['p99'])} | "
                         f"{c['xadd_n']:,.0f}, {fmt_ms(c['xadd_mean'])} |")
        if "redis-server" in load["cpu_ms_per_kevents_relayed"]:
            lines.append(f"| {load['rate']:,} | redis-server (per 1k entries) | | | "
                         f"{fmt_ms(load['cpu_ms_per_kevents_relayed']['redis-server'])} | | |")
        relay = load["ticks"]["relay"]
        lines.append(f"| {load['rate']:,} | ticks a -> b: routed on a / published on b / conflated by the bridges / lost | | | | "
                     f"{relay['sent']:,.0f} / {relay['arrived']:,.0f} / {relay['conflated']:,.0f} / {relay['lost']:,.0f} | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="1000,10000", help="ticks/s to feed, comma-separated")
    p.add_argument("--setups", default="1host,2hosts", help="1host, 2hosts or both (in this order per rate)")
    p.add_argument("--universe", type=int, default=9000, help="most instruments in the universe")
    p.add_argument("--min-steps", type=float, default=2.0,
                   help="simulator steps/s at least: a rate below universe x this uses a smaller universe (0: never)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured window per load")
    p.add_argument("--warmup", type=float, default=8.0, help="seconds after ready before the window opens")
    p.add_argument("--settle", type=float, default=6.0, help="seconds at most to drain after the window (feed paused)")
    p.add_argument("--strategies", type=int, default=8, help="EMA(2/3) crossovers on synthetic symbols, added to the defaults")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "multihost.json")
    p.add_argument("--workdir", type=Path, default=None, help="keep each load's files (logs, journal) here")
    p.add_argument("--cleanup", action="store_true", help="only remove what a killed run left (namespaces, links)")
    args = p.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: it creates network namespaces")
    for tool in ("ip", "nsenter", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} (Debian: iproute2, util-linux, redis-server)")
    topo = Topology(PREFIX, SUBNET, ("redis", "a", "b"))
    if args.cleanup:
        topo.remove()
        print("left:", topo.leftovers() or "nothing")
        return
    if args.min_steps <= 0:
        args.min_steps = 1e-9

    def stop_on(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through every finally: processes, namespaces, files
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_on)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even where the shell ignored it for a job
    work = args.workdir or Path(tempfile.mkdtemp(prefix="algo-bench-multihost-", dir="/var/tmp"))
    loads = []
    try:
        with topo:
            for rate in (int(r) for r in args.rates.split(",")):
                for setup in args.setups.split(","):
                    loads.append(run_load(topo, work / f"{rate}-{setup}", setup, rate, args))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
        left = topo.leftovers()
        if left:
            print(f"warning: still there after cleanup: {left}", file=sys.stderr)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit.strip(),
              "args": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count(), "loads": loads}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(latency_table(loads, REPORTED_HOPS))
    print()
    print(resource_table(loads, COLUMNS))
    print()
    print(bridge_table([load for load in loads if load["bridge_events_per_s"]]))
    print()
    for load in loads:
        m = load["machine"]
        print(f"{load['rate']:,} {load['setup']}: window {load['window_s']:.1f} s, settled {load['settled']}, machine busy "
              f"{m['cpus_busy']:.2f} of {os.cpu_count()} CPUs (other processes {m['other_processes_cpus']:.2f}), "
              f"steal {m['steal_pct']:.1f}%")
    print(f"\nJSON: {args.json}")


if __name__ == "__main__":
    main()
