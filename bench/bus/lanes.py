#!/usr/bin/env python3
"""How long an order-path event waits behind market data: approvals through the real algo-bus while a
subscriber works through a tick flood.

    .venv/bin/python bench/bus/lanes.py                          # the table in bench/README.md
    .venv/bin/python bench/bus/lanes.py --src /tmp/base          # another checkout's daemons/, to compare

One publisher process sends ``marketdata.tick`` at ``--rates`` ticks/s (52 instruments, paced every
millisecond) and a ``risk.approved`` every 5 ms on the same connection, so each approval enters the
broker behind the ticks published before it. One ``BusClient`` subscriber takes both; its tick handler
burns ``--work`` µs of CPU per tick (what a strategy or the paper broker costs), its approval handler
records publish-to-handler latency. Reported per case: approval latency p50 / p99 / max, the ticks the
subscriber handled, and what the broker and the client conflated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from run import REPO, BrokerProc, Worker, mono, stop_all

INSTRUMENTS = 52
APPROVAL_EVERY_NS = 5_000_000


def w_pub(spec: dict[str, Any]) -> None:
    import uvloop

    from daemons.runtime.client import BusClient
    from daemons.runtime.config import BusSection

    async def main() -> None:
        client = BusClient.for_config(BusSection(socket=spec["socket"]), source="bench-marketdata")
        await client.start()
        keys = [str(100_000 + i) for i in range(INSTRUMENTS)]
        ticks = [{"symbol": f"SYM{i}", "token": 100_000 + i, "last_price": 100.0 + i, "volume": 1} for i in range(INSTRUMENTS)]
        print("READY", flush=True)
        rate, end = spec["rate"], mono() + int(spec["seconds"] * 1e9)
        t0 = next_approval = mono()
        sent = approvals = 0
        while (now := mono()) < end:
            due = (now - t0) * rate // 1_000_000_000
            while sent < due:
                i = sent % INSTRUMENTS
                client.publish("marketdata.tick", ticks[i], key=keys[i])
                sent += 1
            if now >= next_approval:
                client.publish("risk.approved", {"mono_ns": mono(), "n": approvals})
                approvals += 1
                next_approval += APPROVAL_EVERY_NS
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.1)
        print("RESULT " + json.dumps({"ticks": sent, "approvals": approvals, "dropped": client.transport.dropped}), flush=True)
        await client.close()

    uvloop.run(main())


def w_sub(spec: dict[str, Any]) -> None:
    import uvloop

    from daemons.runtime.client import BusClient
    from daemons.runtime.config import BusSection

    work_ns = int(spec["work_us"] * 1000)

    async def main() -> None:
        client = BusClient.for_config(BusSection(socket=spec["socket"]), source="bench-execution")
        lat: list[int] = []
        ticks = 0

        def on_tick(_: Any) -> None:
            nonlocal ticks
            ticks += 1
            until = time.perf_counter_ns() + work_ns
            while time.perf_counter_ns() < until:
                pass

        client.subscribe("marketdata.tick", on_tick)
        client.subscribe("risk.approved", lambda e: lat.append(mono() - e.payload["mono_ns"]))
        await client.start()
        await asyncio.sleep(0.2)
        print("READY", flush=True)
        seen, quiet = -1, 0
        while quiet < 10:  # done once nothing arrived for 1 s
            await asyncio.sleep(0.1)
            quiet = quiet + 1 if ticks + len(lat) == seen else 0
            seen = ticks + len(lat)
        print("RESULT " + json.dumps({"lat": lat, "ticks": ticks, "gaps": client.gaps,
                                      "conflated": getattr(client, "conflated", 0)}), flush=True)
        await client.close()

    uvloop.run(main())


def run_case(tmp: Path, rate: int, work_us: float, seconds: float) -> dict[str, Any]:
    broker = BrokerProc(tmp, None, None)  # the production subscriber buffer
    try:
        spec = {"socket": str(broker.socket), "rate": rate, "work_us": work_us, "seconds": seconds}
        log = tmp / "workers.log"
        sub = Worker("sub", spec, log, __file__)
        sub.expect("READY", time.monotonic() + 20)
        pub = Worker("pub", spec, log, __file__)
        pub.expect("READY", time.monotonic() + 20)
        p = pub.expect("RESULT", time.monotonic() + seconds + 30)
        s = sub.expect("RESULT", time.monotonic() + seconds + 120)
        pub.finish()
        sub.finish()
        m = broker.metrics()
    finally:
        broker.close()
    lat = sorted(s["lat"])

    def q(f: float) -> float:
        return lat[min(len(lat) - 1, int(f * len(lat)))] / 1e6 if lat else float("nan")

    return {"rate": rate, "work_us": work_us, "published": p["ticks"], "approvals": p["approvals"], "got": len(lat),
            "handled": s["ticks"], "broker_conflated": m.get('algo_bus_dropped_total{reason="conflated"}', 0.0),
            "client_conflated": s["conflated"], "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0) if lat else None,
            "mean_ms": statistics.fmean(lat) / 1e6 if lat else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,10000,20000", help="ticks/s, comma-separated")
    ap.add_argument("--work", default="20,60", help="µs of CPU per tick in the subscriber, comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--src", metavar="DIR", help="measure the daemons/ package of another checkout")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if args.src:
        import run

        run._CHILD_ENV = {**__import__("os").environ, "PYTHONPATH": str(Path(args.src).resolve())}
    rows = []
    print("approval latency behind a tick flood: publish -> handler, one subscriber, algo-bus in between")
    print(f"{'ticks/s':>8} {'work µs':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'approvals':>10} "
          f"{'ticks handled/published':>24} {'broker conflated':>17} {'client conflated':>17}")
    try:
        for rate in (int(r) for r in args.rates.split(",")):
            for work in (float(w) for w in args.work.split(",")):
                with tempfile.TemporaryDirectory(prefix="algo-bench-lanes-") as tmp:
                    r = run_case(Path(tmp), rate, work, args.seconds)
                rows.append(r)
                print(f"{rate:>8} {work:>8g} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.2f} "
                      f"{r['got']:>5}/{r['approvals']:<4} {r['handled']:>11}/{r['published']:<12} "
                      f"{r['broker_conflated']:>17.0f} {r['client_conflated']:>17}", flush=True)
    finally:
        stop_all()
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"src": args.src or str(REPO), "rows": rows}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        {"pub": w_pub, "sub": w_sub}[sys.argv[2]](json.loads(sys.argv[3]))
    else:
        sys.exit(main())
