#!/usr/bin/env python3
"""One order-path hop three ways: the local bus, a bare Redis Streams hop, and host A -> host B through the bridges.

    .venv/bin/python bench/bridge/hop.py                 # the tables in bench/bridge/README.md
    .venv/bin/python bench/bridge/hop.py --seconds 3 --burst 20000 --json /tmp/hop.json

Every process is real and separate: ``algo-bus`` (the production broker), ``redis-server`` (Debian's, on a
Unix socket, no persistence, the bridge's ACL user), ``algo-bridge``, and publisher / subscriber workers
using ``BusClient`` (or redis-py for the bare Redis hop), each on uvloop. Cases:

- ``local``: publisher -> algo-bus -> subscriber (what every hop inside a host costs today);
- ``redis``: XADD (pipelines of 64) -> XREADGROUP + XACK (what each hop would cost with ``bus.transport =
  "redis"``: every daemon a Redis client, every hop through Redis);
- ``bridged``: publisher -> algo-bus A -> algo-bridge A -> Redis -> algo-bridge B -> algo-bus B -> subscriber.

Each case runs paced (each of ``--rates`` events/s for ``--seconds``: publish-to-handler latency p50 / p99, one clock:
every process is on this host) and as a burst (``--burst`` events as fast as the publisher can: the rate the
subscriber saw, and CPU per 1,000 events of every process from /proc/PID/stat).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "bench-bridge"
TOPIC = "strategy.signal"
PAD = "x" * 200  # a signal-sized body (~300 bytes)
mono = time.monotonic_ns
_CHILDREN: list[subprocess.Popen[bytes]] = []


# --- workers -------------------------------------------------------------------------------------------

def emit(tag: str, data: Any = None) -> None:
    print(tag if data is None else f"{tag} {json.dumps(data)}", flush=True)


def w_pub(spec: dict[str, Any]) -> None:
    import uvloop

    from daemons.runtime.client import BusClient
    from daemons.runtime.config import BusSection

    async def main() -> None:
        client = BusClient.for_config(BusSection(socket=spec["socket"]), source="fno")
        await client.start()
        emit("READY")
        await asyncio.sleep(spec["settle"])
        n, rate = spec["n"], spec["rate"]
        t0 = mono()
        for i in range(n):
            if rate:
                due = t0 + i * 1_000_000_000 // rate
                while (now := mono()) < due:
                    await asyncio.sleep(max(0.0, (due - now) / 1e9 - 0.0002))
            client.publish(TOPIC, {"mono_ns": mono(), "n": i, "pad": PAD})
            if not rate and i % 256 == 255:
                await asyncio.sleep(0)  # let the transport write a batch
        await asyncio.sleep(0.5)
        emit("RESULT", {"sent": n, "dropped": client.transport.dropped})
        await client.close()

    uvloop.run(main())


def report(lat: list[int], first: int, last: int, count: int, cpu0: float) -> None:
    emit("RESULT", {"lat": lat, "count": count, "secs": (last - first) / 1e9 if count > 1 else 0.0,
                    "cpu": time.process_time() - cpu0})


def w_sub(spec: dict[str, Any]) -> None:
    import uvloop

    from daemons.runtime.client import BusClient
    from daemons.runtime.config import BusSection
    from daemons.runtime.envelope import Event

    async def main() -> None:
        client = BusClient.for_config(BusSection(socket=spec["socket"]), source="risk")
        lat: list[int] = []
        state = {"count": 0, "first": 0, "last": 0}
        done = asyncio.Event()

        def on(event: Event) -> None:
            now = mono()
            lat.append(now - event.payload["mono_ns"])
            state["count"] += 1
            state["first"] = state["first"] or now
            state["last"] = now
            if state["count"] >= spec["n"]:
                done.set()

        client.subscribe("strategy.*", on)
        await client.start()
        cpu0 = time.process_time()
        emit("READY")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), spec["timeout"])
        report(lat, state["first"], state["last"], state["count"], cpu0)
        await client.close()

    uvloop.run(main())


def _redis(spec: dict[str, Any]) -> Any:
    import redis.asyncio as aioredis
    return aioredis.Redis(unix_socket_path=spec["redis"], username="algo", password=PASSWORD, driver_info=None)


def w_rpub(spec: dict[str, Any]) -> None:
    import uvloop

    from daemons.runtime.envelope import EventFactory

    async def main() -> None:
        r = _redis(spec)
        await r.ping()
        factory = EventFactory("fno")
        emit("READY")
        await asyncio.sleep(spec["settle"])
        n, rate = spec["n"], spec["rate"]
        t0 = mono()
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            if rate:
                due = t0 + i * 1_000_000_000 // rate
                while (now := mono()) < due:
                    await asyncio.sleep(max(0.0, (due - now) / 1e9 - 0.0002))
            _, body = factory.stamp(TOPIC, {"mono_ns": mono(), "n": i, "pad": PAD})
            pipe.xadd("algo:bench", {"t": TOPIC, "k": "", "h": "hostA", "b": body}, maxlen=1_000_000)
            if rate or len(pipe) >= 64:
                await pipe.execute()
        if len(pipe):
            await pipe.execute()
        emit("RESULT", {"sent": n, "dropped": 0})
        await r.aclose()

    uvloop.run(main())


def w_rsub(spec: dict[str, Any]) -> None:
    import msgspec
    import uvloop

    from daemons.runtime.envelope import Event

    decode = msgspec.json.Decoder(Event).decode

    async def main() -> None:
        r = _redis(spec)
        with contextlib.suppress(Exception):
            await r.xgroup_create("algo:bench", "hostB", id="$", mkstream=True)
        lat: list[int] = []
        count = first = last = 0
        cpu0 = time.process_time()
        emit("READY")
        deadline = time.monotonic() + spec["timeout"]
        while count < spec["n"] and time.monotonic() < deadline:
            reply = await r.xreadgroup("hostB", "hostB", {"algo:bench": ">"}, count=256, block=1000)
            for _, entries in reply or []:
                now = mono()
                for _, fields in entries:
                    event = decode(fields[b"b"])
                    lat.append(now - event.payload["mono_ns"])
                    count += 1
                    first = first or now
                    last = now
                await r.xack("algo:bench", "hostB", *[eid for eid, _ in entries])
        report(lat, first, last, count, cpu0)
        await r.aclose()

    uvloop.run(main())


WORKERS = {"pub": w_pub, "sub": w_sub, "rpub": w_rpub, "rsub": w_rsub}


# --- processes -----------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent, cwd=REPO, **kw)
    _CHILDREN.append(proc)
    return proc


def stop_all() -> None:
    from daemons.algoctl.processes import stop_all as stop_processes  # imported late, as every daemons/ import here

    stop_processes(_CHILDREN, 5)
    _CHILDREN.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(path: Path, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up; its log:\n{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.01)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Worker:
    def __init__(self, role: str, spec: dict[str, Any], log: Path) -> None:
        self.role = role
        with log.open("ab") as err:
            self.proc = spawn([sys.executable, __file__, "--worker", role, json.dumps(spec)], stdout=subprocess.PIPE, stderr=err)
        self.log = log
        self._buf = b""

    def expect(self, tag: str, timeout: float) -> Any:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                head, _, rest = line.decode().partition(" ")
                if head == tag:
                    return json.loads(rest) if rest else None
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and not select.select([self.proc.stdout], [], [], 0)[0]):
                raise RuntimeError(f"{self.role}: no {tag}; log:\n{self.log.read_text(errors='replace')[-2000:]}")
            if select.select([self.proc.stdout], [], [], min(left, 1.0))[0]:
                self._buf += os.read(self.proc.stdout.fileno(), 1 << 20)


class Fleet:
    """The long-lived processes of a case: brokers, redis-server, bridges."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log = tmp / "processes.log"

    def broker(self, name: str) -> Path:
        sock = self.tmp / f"{name}.sock"
        config = self.tmp / f"{name}.toml"
        config.write_text(f'[bus]\nsocket = "{sock}"\n[daemons.bus]\nmetrics_port = {free_port()}\n')
        with self.log.open("ab") as err:
            proc = spawn([sys.executable, "-m", "daemons.bus", "--config", str(config), "--log-level", "WARNING"],
                         stdout=subprocess.DEVNULL, stderr=err)
        wait_for(sock, proc, f"algo-bus {name}", self.log)
        self.procs[f"algo-bus {name}"] = proc
        return sock

    def redis(self) -> Path:
        exe = shutil.which("redis-server")
        if exe is None:
            raise SystemExit("redis-server not found (apt-get install redis-server)")
        sock = self.tmp / "redis.sock"
        conf = self.tmp / "redis.conf"
        conf.write_text(f"port 0\nunixsocket {sock}\nunixsocketperm 700\ndir {self.tmp}\nsave ''\nappendonly no\n"
                        f"user default on nopass ~* &* +@all\n"
                        f"user algo on >{PASSWORD} ~algo:* resetchannels -@all +@stream +ping\n")
        with self.log.open("ab") as err:
            proc = spawn([exe, str(conf)], stdout=subprocess.DEVNULL, stderr=err)
        wait_for(sock, proc, "redis-server", self.log)
        self.procs["redis-server"] = proc
        return sock

    def bridge(self, name: str, bus: Path, redis: Path, section: str) -> None:
        creds = self.tmp / "creds"
        creds.mkdir(exist_ok=True)
        (creds / "algo_redis_password").write_text(PASSWORD)
        config = self.tmp / f"bridge-{name}.toml"
        config.write_text(f'[bus]\nsocket = "{bus}"\n[daemons.bridge]\nmetrics_port = {free_port()}\n'
                          f'redis_url = "unix://{redis}"\nhost = "{name}"\n{section}\n')
        with self.log.open("ab") as err:
            proc = spawn([sys.executable, "-m", "daemons.bridge", "--config", str(config), "--log-level", "WARNING"],
                         stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "CREDENTIALS_DIRECTORY": str(creds)})
        time.sleep(1.0)  # connected to its bus and Redis, its consumer group made
        if proc.poll() is not None:
            raise RuntimeError(f"algo-bridge {name} exited; log:\n{self.log.read_text(errors='replace')[-2000:]}")
        self.procs[f"algo-bridge {name}"] = proc

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(p.pid) for name, p in self.procs.items()}


@contextlib.contextmanager
def fleet(case: str) -> Iterator[tuple[Fleet, dict[str, Any]]]:
    """The case's processes, and the socket each worker uses: (publisher's, subscriber's)."""
    with tempfile.TemporaryDirectory(prefix="algo-bench-bridge-") as tmp:
        f = Fleet(Path(tmp))
        try:
            if case == "local":
                bus = f.broker("a")
                yield f, {"pub": {"socket": str(bus)}, "sub": {"socket": str(bus)}}
            elif case == "redis":
                redis = f.redis()
                yield f, {"rpub": {"redis": str(redis)}, "rsub": {"redis": str(redis)}}
            else:
                a, b, redis = f.broker("a"), f.broker("b"), f.redis()
                f.bridge("hostA", a, redis, 'daemons = ["fno"]\nexports = ["strategy.*"]')
                f.bridge("hostB", b, redis, 'daemons = ["risk"]\nimports = ["strategy.*"]')
                yield f, {"pub": {"socket": str(a)}, "sub": {"socket": str(b)}}
        finally:
            stop_all()


def run_case(case: str, n: int, rate: int) -> dict[str, Any]:
    with fleet(case) as (f, sockets):
        (pub_role, pub_spec), (sub_role, sub_spec) = sockets.items()
        timeout = (n / rate if rate else 0) + 60
        sub = Worker(sub_role, {**sub_spec, "n": n, "timeout": timeout}, f.log)
        sub.expect("READY", 30)
        pub = Worker(pub_role, {**pub_spec, "n": n, "rate": rate, "settle": 0.3}, f.log)
        pub.expect("READY", 30)
        cpu0 = f.cpu()
        s = sub.expect("RESULT", timeout + 10)
        cpu1 = f.cpu()
        p = pub.expect("RESULT", 30)
    lat = sorted(s["lat"])

    def q(x: float) -> float:
        return lat[min(len(lat) - 1, int(x * len(lat)))] / 1e3 if lat else float("nan")

    per_k = {name: round((cpu1[name] - cpu0[name]) / max(1, s["count"]) * 1000 * 1000, 1) for name in cpu0}
    per_k["subscriber"] = round(s["cpu"] / max(1, s["count"]) * 1e6, 1)
    return {"case": case, "rate": rate, "sent": p["sent"], "got": s["count"], "dropped": p["dropped"],
            "p50_us": q(0.5), "p99_us": q(0.99), "max_us": q(1.0),
            "msgs_per_s": round(s["count"] / s["secs"]) if s["secs"] else None, "cpu_ms_per_1k": per_k}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="local,redis,bridged")
    ap.add_argument("--rates", default="1000,10000", help="events/s of the paced (latency) runs, comma-separated")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of the paced runs")
    # 20,000 signal-sized events are ~6 MiB: within what algo-bus holds for a subscriber (8 MiB) before it
    # disconnects it as slow, which a bridge starved of CPU by the publisher's burst can be (README.md)
    ap.add_argument("--burst", type=int, default=20_000, help="events of the burst (throughput) runs")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    rows = []
    print(f"{'case':<8} {'mode':<14} {'got/sent':>13} {'p50 µs':>8} {'p99 µs':>8} {'max µs':>9} {'msgs/s':>8}  "
          "CPU ms per 1k events")
    for case in args.cases.split(","):
        rates = [int(r) for r in args.rates.split(",")]
        for n, rate in [(int(r * args.seconds), r) for r in rates] + [(args.burst, 0)]:
            r = run_case(case, n, rate)
            rows.append(r)
            mode = f"paced {rate}/s" if rate else "burst"
            cpu = ", ".join(f"{k} {v:g}" for k, v in r["cpu_ms_per_1k"].items())
            print(f"{case:<8} {mode:<14} {r['got']:>6}/{r['sent']:<6} {r['p50_us']:>8.0f} {r['p99_us']:>8.0f} "
                  f"{r['max_us']:>9.0f} {r['msgs_per_s'] or 0:>8}  {cpu}", flush=True)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"rows": rows}, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--worker":
        WORKERS[sys.argv[2]](json.loads(sys.argv[3]))
    else:
        sys.exit(main())
