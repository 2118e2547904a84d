"""Failover of algo-execution's lease: how long after the active stops the standby may send again.

Two execution "hosts" (an algo-bus and an algo-execution process each, tests/lease_hosts.py) share a
real redis-server and one paper broker's book. Per trial: A active, B standing by; A is stopped
(``sigstop``: paused; ``kill``: kill -9; ``term``: a clean stop that releases the lease); the clock
runs from the signal to B logging "active" (lease acquired, a former holder's lease waited out, the day
reconciled with the broker); then an approval on B's bus and the time until its order is in the broker's
book. Also: the check before each send (no Redis call) and one compare-and-extend round trip.

    .venv/bin/python bench/lease/failover.py                       # the README's table (~3 minutes)
    .venv/bin/python bench/lease/failover.py --ttl 1 --modes kill --trials 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry  # noqa: E402

from daemons.execution.clientid import client_id  # noqa: E402
from daemons.execution.lease import Lease  # noqa: E402
from daemons.runtime.config import ExecutionLease  # noqa: E402
from daemons.runtime.redis_login import connect  # noqa: E402
from tests.lease_hosts import LEASE_ACL, LEASE_PASSWORD, Hosts  # noqa: E402
from tests.test_bridge import RedisServer  # noqa: E402
from tests.test_execution import approval, tick  # noqa: E402

SIGNALS = {"sigstop": signal.SIGSTOP, "kill": signal.SIGKILL, "term": signal.SIGTERM}


def trial(tmp: Path, redis: RedisServer, ttl: float, mode: str, n: int) -> dict[str, float]:
    margin = round(ttl / 5, 2)
    with Hosts(tmp, redis, ttl_sec=ttl, margin_sec=margin) as hosts:
        a = hosts.start("hostA")
        a.wait_log("active: holding the execution lease")
        b = hosts.start("hostB")
        b.wait_log("execution ready")
        hosts.everywhere("marketdata.tick", tick())
        a.proc_signal(SIGNALS[mode])
        stopped = time.monotonic()
        hosts.wait(lambda: b.metric("algo_execution_lease_held") == 1, "B acquired", 60)
        acquired = time.monotonic()
        b.wait_log("active: holding the execution lease", 60)
        active = time.monotonic()
        order = approval(n)
        b.publish("risk.approved", order)
        hosts.wait(lambda: client_id(order["signal_id"]) in hosts.book(), "B's order", 30)
        placed = time.monotonic()
        return {"acquired": acquired - stopped, "active": active - stopped, "order": placed - active}


async def check_costs(redis: RedisServer) -> dict[str, float]:
    s = ExecutionLease(redis_url=f"unix://{redis.socket}", account="bench", ttl_sec=5, margin_sec=1)
    lease = Lease(s, "bench", connect(s, LEASE_PASSWORD), CollectorRegistry())
    assert await lease.acquire()
    lease.usable_from = 0.0
    n = 100_000
    began = time.perf_counter()
    for _ in range(n):
        lease.refusal()
    local = (time.perf_counter() - began) / n
    rounds = []
    for _ in range(2000):
        began = time.perf_counter()
        await lease.extend()
        rounds.append(time.perf_counter() - began)
    await lease.release()
    await lease.redis.aclose()
    rounds.sort()
    return {"check_us": local * 1e6, "extend_p50_us": rounds[len(rounds) // 2] * 1e6,
            "extend_p99_us": rounds[int(len(rounds) * 0.99)] * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ttl", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    parser.add_argument("--modes", nargs="+", choices=sorted(SIGNALS), default=["sigstop", "kill", "term"])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        redis_dir = Path(root) / "redis"
        redis_dir.mkdir()
        redis = RedisServer(redis_dir, users=[LEASE_ACL])
        redis.start()
        try:
            costs = asyncio.run(check_costs(redis))
            print(f"check before a send: {costs['check_us']:.2f} µs; compare-and-extend round trip p50 "
                  f"{costs['extend_p50_us']:.0f} µs, p99 {costs['extend_p99_us']:.0f} µs")
            n = 0
            for ttl in args.ttl:
                for mode in args.modes:
                    got = []
                    for _ in range(args.trials):
                        n += 1
                        tmp = Path(root) / f"t{n}"
                        tmp.mkdir()
                        got.append(trial(tmp, redis, ttl, mode, n))
                    row = {"ttl": ttl, "mode": mode, **{k: [round(g[k], 3) for g in got] for k in got[0]}}
                    rows.append(row)
                    med = {k: statistics.median(g[k] for g in got) for k in got[0]}
                    each = ", ".join(f"{g['active']:.2f}" for g in got)
                    print(f"ttl {ttl:g}s {mode:8} acquired {med['acquired']:.2f}s  active {med['active']:.2f}s  "
                          f"first order {med['order'] * 1000:.0f} ms later  (median of {len(got)}; active: "
                          f"{each})", flush=True)
        finally:
            redis.kill()
    if args.json:
        args.json.write_text(json.dumps({"costs": costs, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
