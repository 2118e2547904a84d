#!/usr/bin/env python3
"""Benchmark the fleet's bus broker (algo-bus) against raw AF_UNIX, Redis pub/sub and ZeroMQ.

    .venv/bin/python bench/bus/run.py            # full run (~2 min on 2 cores)
    .venv/bin/python bench/bus/run.py --quick    # smoke run (~25 s): 50k messages, 1 repetition

Every publisher and subscriber is its own process (own CPU, own GIL). Each throughput case sends
the same ~350-byte JSON event (the Event envelope around a ~200-byte tick) from one publisher to 1
or 3 subscribers that decode every message; the rate is messages published per second, measured
from the publisher's first send to the moment the last subscriber has received the last message
(CLOCK_MONOTONIC is shared by all processes on a host). A case counts only if every subscriber got
every message. Repetitions are interleaved (case A, B, C, A, B, C, ...) so slow drift of the machine
hits every transport alike; the table shows medians. See bench/README.md.

Results: a table on stdout and bench/results/latest.json (git-ignored via bench/.gitignore).
Exit status is 0 unless --strict is given and a target fails (or a case could not run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from pathlib import Path
from typing import Any

import orjson

_dumps = orjson.dumps

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = HERE.parent / "results" / "latest.json"

TOPIC = "bench.tick"
ZMQ_PREFIX = TOPIC.encode() + b" "  # single-frame ZeroMQ messages: "<topic> <json>"
LEN = struct.Struct("!I")  # raw baseline: u32 length prefix
mono = time.monotonic_ns

# Targets the broker must meet (ratios are of the median throughputs of one run).
TARGET_RAW = 0.65  # broker >= 65% of raw AF_UNIX + orjson, 1->1 and 1->3
TARGET_REDIS = 4.0  # broker >= 4x Redis pub/sub
TARGET_ZMQ = 1.0  # broker >= ZeroMQ PUB/SUB ipc
TARGET_P99_MS = 0.5  # one-way p99 at 10k msgs/s, 3 subscribers

# ---------------------------------------------------------------------------------------------
# The message: a realistic Kite-style tick (~200 bytes of JSON) and the bus's event envelope.
# ---------------------------------------------------------------------------------------------

_SYMBOLS = [
    ("NSE:RELIANCE", 738561, 2945.35), ("NSE:INFY", 408065, 1523.8), ("NSE:HDFCBANK", 341249, 1642.1),
    ("NSE:TCS", 2953217, 3890.0), ("NSE:ICICIBANK", 1270529, 1088.45), ("NSE:SBIN", 779521, 812.6),
    ("NFO:NIFTY24DECFUT", 13368834, 24310.5), ("NFO:BANKNIFTY24DECFUT", 13368578, 52480.25),
]


def tick_pool(size: int = 256) -> list[dict[str, Any]]:
    """`size` distinct ticks; publishers cycle through them and stamp exchange_ts per message."""
    pool = []
    for i in range(size):
        sym, token, px = _SYMBOLS[i % len(_SYMBOLS)]
        px = round(px * (1 + ((i * 37) % 101 - 50) / 10000), 2)
        pool.append(
            {
                "symbol": sym,
                "token": token + i // len(_SYMBOLS),
                "last_price": px,
                "last_qty": 25 + i % 50,
                "avg_price": round(px * 0.9993, 2),
                "bid": round(px - 0.05, 2),
                "ask": round(px + 0.05, 2),
                "bid_qty": 125 + i,
                "ask_qty": 300 + 2 * i,
                "volume": 1_234_567 + 1000 * i,
                "oi": 9_876_543 if sym.startswith("NFO") else 0,
                "exchange_ts": 1_732_240_000_000 + i,
            }
        )
    return pool


class Envelope:
    """What the baselines send: the same fields BusClient puts on the wire (EventFactory.stamp)."""

    def __init__(self, source: str) -> None:
        self.prefix = f"{source}-{os.urandom(4).hex()}-"
        self.d: dict[str, Any] = {"id": "", "ts": 0, "type": TOPIC, "source": source, "seq": 0, "trace": "", "payload": None}

    def encode(self, seq: int, payload: dict[str, Any]) -> bytes:
        d = self.d
        d["id"] = d["trace"] = self.prefix + str(seq)
        d["ts"] = time.time_ns()
        d["seq"] = seq
        d["payload"] = payload
        return _dumps(d)


def pace(t0: int, sent: int, rate: int) -> None:
    """Sleep until message number `sent` is due (t0 + sent/rate); late means no sleep."""
    wait = t0 + sent * 1_000_000_000 // rate - mono()
    if wait > 0:
        time.sleep(wait / 1e9)


def emit(tag: str, data: Any = None) -> None:
    """Worker -> orchestrator: one line on stdout."""
    line = tag if data is None else f"{tag} {json.dumps(data)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def save_latencies(path: str, samples: list[int]) -> None:
    with open(path, "wb") as f:
        array("q", samples).tofile(f)


def report_subscriber(spec: dict[str, Any], lat: list[int], count: int, first: int, cpu0: float, **extra: Any) -> None:
    """A subscriber worker's result: what it received, when, at what CPU cost (and latencies if paced)."""
    last = mono()
    if spec["mode"] == "paced":
        save_latencies(spec["lat_file"], lat)
    emit("RESULT", {"count": count, "first": first, "last": last, "cpu": time.process_time() - cpu0, **extra})


# ---------------------------------------------------------------------------------------------
# Workers. Each runs in its own process: `run.py --worker ROLE JSON`.
# spec keys: n (messages), batch, mode ("flat" | "paced"), rate, idle (s), lat_file, ...
# ---------------------------------------------------------------------------------------------


def _bus_section(spec: dict[str, Any]) -> Any:
    from daemons.runtime.config import BusSection

    return BusSection(socket=spec["socket"])


def w_bus_sub(spec: dict[str, Any]) -> None:
    import asyncio

    import uvloop

    from daemons.runtime.client import BusClient

    idx, n, latency = spec["idx"], spec["n"], spec["mode"] == "paced"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # A name of its own per case: the broker keeps a session per subscriber name for a while
        # (daemons/bus/sessions.py) and would hand an earlier case's leftovers to a namesake.
        client = BusClient.for_config(_bus_section(spec), source=f"bench-sub{idx}-{os.getpid()}")
        done: asyncio.Future[None] = loop.create_future()
        ready: asyncio.Future[None] = loop.create_future()
        count = 0
        first = last = 0
        lat: list[int] = []
        add = lat.append

        def on_tick(ev: Any) -> None:
            nonlocal count, first, last
            if latency:
                add(mono() - ev.payload["mono_ns"])
            count += 1
            if count == 1:
                first = mono()
            if count == n:
                last = mono()
                done.set_result(None)

        client.subscribe(TOPIC, on_tick)
        # Our own round trip through the broker proves it has registered our subscription.
        probe = f"bench.ready.{idx}"
        client.subscribe(probe, lambda ev: None if ready.done() else ready.set_result(None))
        await client.start()
        client.publish(probe, {"ready": idx})
        await asyncio.wait_for(ready, 10)
        emit("READY")
        cpu0 = time.process_time()
        seen, quiet_since = -1, time.monotonic()
        while not done.done():
            await asyncio.wait([done], timeout=0.25)
            if count != seen:
                seen, quiet_since = count, time.monotonic()
            elif time.monotonic() - quiet_since > spec["idle"]:
                break
        if latency:
            save_latencies(spec["lat_file"], lat)
        emit("RESULT", {"count": count, "first": first, "last": last, "gaps": client.gaps, "cpu": time.process_time() - cpu0,
                        "decode_errors": client.decode_errors, "reconnects": client.transport.reconnects})
        await client.close()

    uvloop.run(main())


def w_bus_pub(spec: dict[str, Any]) -> None:
    import asyncio

    import uvloop

    from daemons.runtime.client import BusClient

    n, batch, high = spec["n"], spec["batch"], spec["high_bytes"]

    async def main() -> None:
        client = BusClient.for_config(_bus_section(spec), source="bench-pub")
        await client.start()
        if not client.connected:
            raise SystemExit("publisher could not reach the broker")
        tx = client.transport
        publish = client.publish
        pool = tick_pool()
        keys = [str(p["token"]) for p in pool]
        emit("READY")
        waits = 0
        cpu0 = time.process_time()
        t0 = mono()
        if spec["mode"] == "flat":
            for i in range(n):
                p = pool[i & 255]
                p["exchange_ts"] = 1_732_240_000_000 + i
                publish(TOPIC, p, key=keys[i & 255])
                if i % batch == batch - 1:
                    # Let the loop flush this batch (one write), then apply backpressure: the
                    # client would drop events once publish_buffer_bytes is queued.
                    await asyncio.sleep(0)
                    while tx.queued_bytes > high:
                        waits += 1
                        # >= 1 ms: uvloop rounds delays to whole milliseconds, and a 0 ms
                        # sleep would spin and steal the CPU the broker needs.
                        await asyncio.sleep(0.001)
        else:  # paced: one message every 1/rate s, each written on its own
            rate, i = spec["rate"], 0
            while i < n:
                p = pool[i & 255]
                p["mono_ns"] = mono()
                publish(TOPIC, p, key=keys[i & 255])
                i += 1
                await asyncio.sleep(0)  # the client's flush runs: the frame goes out now
                # The loop's timers have 1 ms resolution, which would send bursts of 10; sleep
                # (blocking) to the next slot instead: this process has nothing else to do.
                pace(t0, i, rate)
        t1 = mono()
        while tx.queued_bytes:
            await asyncio.sleep(0.001)
        t2 = mono()
        emit("RESULT", {"t0": t0, "t_sent": t1, "t_flushed": t2, "dropped": tx.dropped, "backpressure_waits": waits,
                        "cpu": time.process_time() - cpu0})
        await client.close()

    uvloop.run(main())


def _raw_parse_loop(conn: socket.socket, n: int, latency: bool, lat: list[int]) -> tuple[int, int, int]:
    loads, unpack = orjson.loads, LEN.unpack_from
    count = first = last = 0
    rest = b""
    # recv_into a reused buffer: recv(256 KiB) would malloc (mmap) and free 256 KiB per call,
    # which costs ~50-90 us per read on these VMs (bench/README.md, Background) and would handicap the baseline.
    rbuf = bytearray(262144)
    rview = memoryview(rbuf)
    while count < n:
        try:
            got = conn.recv_into(rbuf)
        except TimeoutError:
            break
        if not got:
            break
        chunk = bytes(rview[:got])
        if not count:
            first = mono()
        data = rest + chunk if rest else chunk
        mv = memoryview(data)
        pos, end = 0, len(data)
        while end - pos >= 4:
            (length,) = unpack(data, pos)
            stop = pos + 4 + length
            if stop > end:
                break
            obj = loads(mv[pos + 4 : stop])
            if latency:
                lat.append(mono() - obj["payload"]["mono_ns"])
            count += 1
            pos = stop
        mv.release()
        rest = data[pos:]
    last = mono()
    return count, first, last


def w_raw_sub(spec: dict[str, Any]) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(spec["path"])
    srv.listen(1)
    emit("READY")
    srv.settimeout(30)
    conn, _ = srv.accept()
    conn.settimeout(spec["idle"])
    lat: list[int] = []
    cpu0 = time.process_time()
    count, first, last = _raw_parse_loop(conn, spec["n"], spec["mode"] == "paced", lat)
    if spec["mode"] == "paced":
        save_latencies(spec["lat_file"], lat)
    emit("RESULT", {"count": count, "first": first, "last": last, "cpu": time.process_time() - cpu0})
    conn.close()
    srv.close()


def w_raw_pub(spec: dict[str, Any]) -> None:
    n, batch = spec["n"], spec["batch"]
    socks = []
    for path in spec["paths"]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        socks.append(s)
    env = Envelope("bench-pub")
    pool = tick_pool()
    pack = LEN.pack
    emit("READY")
    cpu0 = time.process_time()
    t0 = mono()
    if spec["mode"] == "flat":
        frames: list[bytes] = []
        for i in range(n):
            p = pool[i & 255]
            p["exchange_ts"] = 1_732_240_000_000 + i
            body = env.encode(i + 1, p)
            frames.append(pack(len(body)) + body)
            if len(frames) == batch or i == n - 1:
                buf = b"".join(frames)
                for s in socks:
                    s.sendall(buf)
                frames.clear()
    else:  # paced: one message every 1/rate s, each written on its own
        rate, i = spec["rate"], 0
        while i < n:
            p = pool[i & 255]
            p["mono_ns"] = mono()
            body = env.encode(i + 1, p)
            buf = pack(len(body)) + body
            for s in socks:
                s.sendall(buf)
            i += 1
            pace(t0, i, rate)
    t1 = mono()
    for s in socks:
        s.close()
    emit("RESULT", {"t0": t0, "t_sent": t1, "t_flushed": t1, "dropped": 0, "cpu": time.process_time() - cpu0})


def w_redis_sub(spec: dict[str, Any]) -> None:
    import redis

    r: Any = redis.Redis(unix_socket_path=spec["path"], socket_timeout=spec["idle"])  # Any: redis-py leaves pubsub() untyped
    ps: Any = r.pubsub()
    ps.subscribe(TOPIC)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the server's confirmation: we are registered
        msg = ps.get_message(timeout=1.0)
        if msg and msg["type"] == "subscribe":
            break
    else:
        raise SystemExit("no subscribe confirmation from redis")
    emit("READY")
    n, latency, loads = spec["n"], spec["mode"] == "paced", orjson.loads
    lat: list[int] = []
    count = first = 0
    cpu0 = time.process_time()
    try:
        for msg in ps.listen():
            if msg["type"] != "message":
                continue
            obj = loads(msg["data"])
            if latency:
                lat.append(mono() - obj["payload"]["mono_ns"])
            count += 1
            if count == 1:
                first = mono()
            if count == n:
                break
    except redis.exceptions.TimeoutError:
        pass
    report_subscriber(spec, lat, count, first, cpu0)
    ps.close()


def w_redis_pub(spec: dict[str, Any]) -> None:
    import redis

    n, batch = spec["n"], spec["batch"]
    r = redis.Redis(unix_socket_path=spec["path"])
    pipe = r.pipeline(transaction=False)
    env = Envelope("bench-pub")
    pool = tick_pool()
    emit("READY")
    receivers = 0
    cpu0 = time.process_time()
    t0 = mono()
    for i in range(n):
        p = pool[i & 255]
        p["exchange_ts"] = 1_732_240_000_000 + i
        pipe.publish(TOPIC, env.encode(i + 1, p))
        if i % batch == batch - 1 or i == n - 1:
            receivers += sum(pipe.execute())  # waits for the replies: the pipeline's backpressure
    t1 = mono()
    emit("RESULT", {"t0": t0, "t_sent": t1, "t_flushed": t1, "dropped": n * spec["nsubs"] - receivers,
                    "cpu": time.process_time() - cpu0})


def w_zmq_sub(spec: dict[str, Any]) -> None:
    import zmq

    ctx = zmq.Context()
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, 0)  # unlimited: nothing is dropped on the receiving side
    s.setsockopt(zmq.RCVTIMEO, int(spec["idle"] * 1000))
    s.setsockopt(zmq.SUBSCRIBE, ZMQ_PREFIX)
    s.connect(spec["endpoint"])
    emit("READY")
    n, latency, loads, plen = spec["n"], spec["mode"] == "paced", orjson.loads, len(ZMQ_PREFIX)
    lat: list[int] = []
    count = first = 0
    recv = s.recv
    cpu0 = time.process_time()
    try:
        while count < n:
            msg = recv()
            obj = loads(memoryview(msg)[plen:])
            if latency:
                lat.append(mono() - obj["payload"]["mono_ns"])
            count += 1
            if count == 1:
                first = mono()
    except zmq.Again:
        pass
    report_subscriber(spec, lat, count, first, cpu0)
    s.close(linger=0)
    ctx.term()


def w_zmq_pub(spec: dict[str, Any]) -> None:
    import zmq

    n = spec["n"]
    ctx = zmq.Context()
    s = ctx.socket(zmq.XPUB)  # a PUB that also tells us who subscribed: the slow-joiner fix
    s.setsockopt(zmq.XPUB_VERBOSE, 1)
    s.setsockopt(zmq.SNDHWM, 0)  # unlimited: PUB drops at the HWM, so never reach one
    s.setsockopt(zmq.RCVTIMEO, 20_000)
    s.bind(spec["endpoint"])
    emit("BOUND")
    joined = 0
    while joined < spec["nsubs"]:
        if s.recv()[:1] == b"\x01":
            joined += 1
    env = Envelope("bench-pub")
    pool = tick_pool()
    send = s.send
    emit("READY")
    cpu0 = time.process_time()
    t0 = mono()
    for i in range(n):
        p = pool[i & 255]
        p["exchange_ts"] = 1_732_240_000_000 + i
        send(ZMQ_PREFIX + env.encode(i + 1, p))
    t1 = mono()
    s.close(linger=30_000)  # let the I/O thread hand everything over
    ctx.term()
    t2 = mono()
    emit("RESULT", {"t0": t0, "t_sent": t1, "t_flushed": t2, "dropped": 0, "cpu": time.process_time() - cpu0})


def _lean_connect(spec: dict[str, Any], name: bytes, frames: list[bytes]) -> socket.socket:
    from daemons.runtime import wire

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(spec["socket"])
    s.sendall(b"".join([wire.encode(wire.HELLO, name, b"{}"), *frames]))
    return s


def w_lean_sub(spec: dict[str, Any]) -> None:
    """A minimal broker client: blocking socket, wire frames parsed inline, orjson.loads only."""
    from daemons.runtime import wire

    idx, n, latency = spec["idx"], spec["n"], spec["mode"] == "paced"
    probe = f"bench.ready.lean{idx}".encode()
    topic = TOPIC.encode()
    conn = _lean_connect(spec, f"bench-lean-sub{idx}".encode(), [
        wire.encode(wire.SUBSCRIBE, topic), wire.encode(wire.SUBSCRIBE, probe),
        wire.encode(wire.PUBLISH, probe, b'{"ready":1}')])
    conn.settimeout(10)
    rest = b""
    while True:  # our probe coming back proves the broker has our subscriptions
        data = rest + conn.recv(65536)
        if probe in data:
            break
        rest = data
    emit("READY")
    conn.settimeout(spec["idle"])
    loads, unpack, hsize = orjson.loads, wire.HEADER.unpack_from, wire.HEADER_SIZE
    lat: list[int] = []
    count = first = 0
    cpu0 = time.process_time()
    rbuf = bytearray(262144)
    rview = memoryview(rbuf)
    rest = b""
    while count < n:
        try:
            got = conn.recv_into(rbuf)
        except TimeoutError:
            break
        if not got:
            break
        if not count:
            first = mono()
        chunk = bytes(rview[:got])
        data = rest + chunk if rest else chunk
        mv = memoryview(data)
        pos, end = 0, len(data)
        while end - pos >= hsize:
            length, kind, tlen, klen = unpack(data, pos)
            stop = pos + 4 + length
            if stop > end:
                break
            if kind == wire.PUBLISH:
                obj = loads(mv[pos + hsize + tlen + klen : stop])
                if latency:
                    lat.append(mono() - obj["payload"]["mono_ns"])
                count += 1
            pos = stop
        mv.release()
        rest = data[pos:]
    report_subscriber(spec, lat, count, first, cpu0)
    conn.close()


def w_lean_pub(spec: dict[str, Any]) -> None:
    """A minimal broker client: wire frames built inline, `batch` per sendall (which blocks = backpressure)."""
    from daemons.runtime import wire

    n, batch = spec["n"], spec["batch"]
    conn = _lean_connect(spec, b"bench-lean-pub", [])
    env = Envelope("bench-pub")
    pool = tick_pool()
    keys = [str(p["token"]).encode() for p in pool]
    encode, publish, topic = wire.encode, wire.PUBLISH, TOPIC.encode()
    emit("READY")
    cpu0 = time.process_time()
    t0 = mono()
    if spec["mode"] == "flat":
        frames: list[bytes] = []
        for i in range(n):
            p = pool[i & 255]
            p["exchange_ts"] = 1_732_240_000_000 + i
            frames.append(encode(publish, topic, env.encode(i + 1, p), keys[i & 255]))
            if len(frames) == batch or i == n - 1:
                conn.sendall(b"".join(frames))
                frames.clear()
    else:
        rate, i = spec["rate"], 0
        while i < n:
            p = pool[i & 255]
            p["mono_ns"] = mono()
            conn.sendall(encode(publish, topic, env.encode(i + 1, p), keys[i & 255]))
            i += 1
            pace(t0, i, rate)
    t1 = mono()
    cpu = time.process_time() - cpu0
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(10)
    try:
        while conn.recv(65536):  # the broker closes after reading everything we sent
            pass
    except OSError:
        pass
    conn.close()
    emit("RESULT", {"t0": t0, "t_sent": t1, "t_flushed": t1, "dropped": 0, "cpu": cpu})


WORKERS = {
    "bus-sub": w_bus_sub, "bus-pub": w_bus_pub,
    "raw-sub": w_raw_sub, "raw-pub": w_raw_pub,
    "redis-sub": w_redis_sub, "redis-pub": w_redis_pub,
    "zmq-sub": w_zmq_sub, "zmq-pub": w_zmq_pub,
    "lean-sub": w_lean_sub, "lean-pub": w_lean_pub,
}

# ---------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------

_CHILDREN: list[subprocess.Popen[bytes]] = []
_CHILD_ENV: dict[str, str] | None = None  # set by --src: PYTHONPATH to another checkout's daemons/


def _die_with_parent() -> None:
    """Children get SIGKILL if the orchestrator dies, so nothing outlives the bench."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent, cwd=REPO, env=_CHILD_ENV, **kw)
    _CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    from daemons.algoctl.processes import stop_all as stop_processes  # imported late, as every daemons/ import here

    stop_processes([proc], timeout)
    if proc in _CHILDREN:
        _CHILDREN.remove(proc)


def stop_all() -> None:
    for proc in list(_CHILDREN):
        stop(proc, 3.0)


class Worker:
    """A worker process and the lines it writes to stdout."""

    def __init__(self, role: str, spec: dict[str, Any], log: Path, script: str = __file__) -> None:
        self.role = role
        self.errlog = log.open("ab")
        self.proc = spawn([sys.executable, str(Path(script).resolve()), "--worker", role, json.dumps(spec)],
                          stdout=subprocess.PIPE, stderr=self.errlog)
        self._buf = b""
        self.lines: list[str] = []

    def _pump(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        r, _, _ = select.select([fd], [], [], timeout)
        if r:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"{self.role} exited (status {self.proc.wait()}) before reporting{self.log_tail()}")
            self._buf += chunk
            *done, self._buf = self._buf.split(b"\n")
            self.lines.extend(x.decode() for x in done)

    def expect(self, tag: str, deadline: float) -> Any:
        while True:
            for i, line in enumerate(self.lines):
                if line.split(" ", 1)[0] == tag:
                    del self.lines[: i + 1]
                    rest = line.split(" ", 1)
                    return json.loads(rest[1]) if len(rest) > 1 else None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.role}: no {tag} in time{self.log_tail()}")
            self._pump(min(left, 1.0))

    def log_tail(self) -> str:
        self.errlog.flush()
        try:
            text = Path(self.errlog.name).read_text(errors="replace").strip()
        except OSError:
            return ""
        return f"; stderr of the case's workers:\n{text[-1500:]}" if text else ""

    def finish(self) -> None:
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        stop(self.proc)
        self.errlog.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        if path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(str(path))
                    return
                except OSError:
                    pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on {path} within {timeout}s")


class BrokerProc:
    """The real daemon: `algo-bus --config <tmp>/fleet.toml`, its own socket and metrics ports."""

    def __init__(self, tmp: Path, sub_buffer: int | None, profile: Path | None) -> None:
        import grp

        self.socket = tmp / "bus.sock"
        self.metrics_port = free_port()
        group = grp.getgrgid(os.getgid()).gr_name
        lines = [
            "# written by bench/bus/run.py", "[fleet]", 'mode = "paper"', f'group = "{group}"', "",
            "[bus]", f'socket = "{self.socket}"',
        ]
        if sub_buffer is not None:
            lines.append(f"subscriber_buffer_bytes = {sub_buffer}")
        lines += ["", "[daemons.bus]", f"metrics_port = {self.metrics_port}", "",
                  "[daemons.heartbeat]", f"metrics_port = {free_port()}", ""]
        self.config = tmp / "fleet.toml"
        self.config.write_text("\n".join(lines))
        self.log = tmp / "algo-bus.log"
        entry = Path(sys.executable).parent / "algo-bus"
        if profile is not None:
            # cProfile.run catches the daemon's SystemExit and writes the stats on a clean SIGTERM exit
            code = ("import cProfile, sys; from daemons.bus.main import main; "
                    "argv = ['--config', sys.argv[1], '--log-level', 'WARNING']; "
                    "cProfile.run('main(argv)', sys.argv[2])")
            cmd = [sys.executable, "-c", code, str(self.config), str(profile)]
        elif entry.exists():
            cmd = [str(entry), "--config", str(self.config), "--log-level", "WARNING"]
        else:
            cmd = [sys.executable, "-m", "daemons.bus", "--config", str(self.config), "--log-level", "WARNING"]
        self.cmd = cmd
        with self.log.open("wb") as err:
            self.proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_for_socket(self.socket, self.proc, 20, "algo-bus")
        except (RuntimeError, TimeoutError) as exc:
            self.close()
            raise RuntimeError(f"{exc}; its log:\n{self.log.read_text(errors='replace')[-2000:]}") from None

    def metrics(self) -> dict[str, float]:
        """algo_bus_* counters from the daemon's Prometheus endpoint (loopback)."""
        out: dict[str, float] = {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("algo_bus_"):
                    name, _, value = line.rpartition(" ")
                    out[name] = float(value)
        return out

    def losses(self) -> tuple[float, float]:
        """(deliveries dropped for connected subscribers, peers disconnected) so far. Not reason="disconnected":
        that counts frames kept, then dropped, for the sessions of earlier cases' subscribers, which have left
        (daemons/bus/sessions.py), not a delivery a subscriber of this case missed."""
        m = self.metrics()
        return (sum(v for k, v in m.items() if k.startswith("algo_bus_dropped_total") and '"disconnected"' not in k),
                sum(v for k, v in m.items() if k.startswith("algo_bus_disconnects_total")))

    def close(self) -> None:
        stop(self.proc, 10.0)


class RedisProc:
    def __init__(self, tmp: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found (apt-get install -y redis-server)")
        self.socket = tmp / "redis.sock"
        self.log = tmp / "redis.log"
        self.version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
        cmd = [exe, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
               "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(tmp),
               # a lagging subscriber would otherwise be disconnected at 32 MB of backlog
               "--client-output-buffer-limit", "pubsub 0 0 0", "--logfile", str(self.log)]
        self.proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_socket(self.socket, self.proc, 10, "redis-server")

    def close(self) -> None:
        stop(self.proc, 10.0)


def fresh_broker(ctx: dict[str, Any], folder: Path) -> None:
    """A broker of its own for a case: one that served earlier cases keeps their subscribers' sessions (and
    frames for them) for a while (daemons/bus/sessions.py), work that is not this case's."""
    if ctx["broker"] is not None:
        ctx["broker"].close()
        ctx["broker"] = None
    folder.mkdir()
    ctx["broker"] = BrokerProc(folder, ctx["sub_buffer"], None)


def run_case(ctx: dict[str, Any], transport: str, nsubs: int, mode: str, n: int, rate: int = 0) -> dict[str, Any]:
    """One publisher, `nsubs` subscribers; returns the timings and delivery counts."""
    tmp: Path = ctx["tmp"]
    case_id = f"{transport}-{nsubs}-{mode}-{ctx['seq']}"
    ctx["seq"] += 1
    log = tmp / f"{case_id}.log"
    base = {"n": n, "batch": ctx["batch"], "mode": mode, "rate": rate, "idle": ctx["idle"], "nsubs": nsubs}
    subs: list[Worker] = []
    pub: Worker | None = None
    if mode == "paced":
        timeout = n / rate + 30
    else:
        timeout = n / 5000 + 30  # generous: even 5k msgs/s finishes
    deadline = time.monotonic() + 60
    brokered = transport in ("bus", "lean")
    if brokered and ctx["profile"] is None:
        fresh_broker(ctx, tmp / case_id)
    server = ctx["broker"] if brokered else ctx["redis"] if transport == "redis" else None
    before = ctx["broker"].losses() if brokered else (0.0, 0.0)
    try:
        if brokered:
            common = {**base, "socket": str(ctx["broker"].socket), "high_bytes": ctx["high_bytes"]}
        elif transport == "redis":
            common = {**base, "path": str(ctx["redis"].socket)}
        elif transport == "zmq":
            common = {**base, "endpoint": f"ipc://{tmp}/{case_id}.zmq"}
        else:
            common = dict(base)
        sub_specs = []
        for k in range(nsubs):
            spec = {**common, "idx": k, "lat_file": str(tmp / f"{case_id}.lat{k}")}
            if transport == "raw":
                spec["path"] = str(tmp / f"{case_id}.s{k}")
            sub_specs.append(spec)
        pub_spec = dict(common)
        if transport == "raw":
            pub_spec["paths"] = [s["path"] for s in sub_specs]

        if transport == "zmq":  # the publisher binds first; it then waits for every subscription
            pub = Worker("zmq-pub", pub_spec, log)
            pub.expect("BOUND", deadline)
        subs = [Worker(f"{transport}-sub", s, log) for s in sub_specs]
        for w in subs:
            w.expect("READY", deadline)
        server_cpu0 = proc_cpu_ns(server.proc.pid) if server else 0
        meter = LoadMeter()
        if pub is None:
            pub = Worker(f"{transport}-pub", pub_spec, log)
        deadline = time.monotonic() + timeout
        pres = pub.expect("RESULT", deadline)
        sres = [w.expect("RESULT", deadline) for w in subs]
        server_cpu = (proc_cpu_ns(server.proc.pid) - server_cpu0) / 1e9 if server else 0.0
        steal = meter.read()[1]  # "other work" is unknown until the workers are reaped; steal is not
    finally:
        for w in ([pub] if pub else []) + subs:
            w.finish()
    counts = [s["count"] for s in sres]
    complete = all(c == n for c in counts) and pres["dropped"] == 0
    end = max(s["last"] for s in sres)
    seconds = (end - pres["t0"]) / 1e9 if complete else None  # a rate of an incomplete run means nothing
    out: dict[str, Any] = {
        "transport": transport, "subscribers": nsubs, "mode": mode, "messages": n,
        "complete": complete, "delivered": counts, "publisher_dropped": pres["dropped"],
        "seconds": seconds,
        "rate": n / seconds if seconds else None,
        "publish_rate": n / max(1, pres["t_sent"] - pres["t0"]) * 1e9,
        "steal_share": steal,
        # CPU time per message (µs) of each process; "sub" is the mean over the subscribers
        "cpu_us_per_msg": {"pub": pres["cpu"] / n * 1e6,
                           "server": server_cpu / n * 1e6 if server else None,
                           "sub": statistics.fmean(x["cpu"] for x in sres) / n * 1e6},
    }
    cpu = out["cpu_us_per_msg"]
    cpu["total"] = cpu["pub"] + (cpu["server"] or 0) + nsubs * cpu["sub"]
    if brokered:
        after = ctx["broker"].losses()
        out["broker_dropped"] = after[0] - before[0]
        out["broker_disconnects"] = after[1] - before[1]
        out["complete"] = complete = complete and out["broker_dropped"] == 0 and out["broker_disconnects"] == 0
    if transport == "bus":
        out["gaps"] = sum(s["gaps"] for s in sres)
        out["reconnects"] = sum(s["reconnects"] for s in sres)
        out["backpressure_waits"] = pres.get("backpressure_waits", 0)
        out["complete"] = complete = complete and out["gaps"] == 0 and out["reconnects"] == 0
    if not complete:
        out["seconds"] = out["rate"] = None
    if mode == "paced":
        lat: list[int] = []
        skip = int(rate * ctx["warmup"])
        for spec in sub_specs:
            a = array("q")
            with open(spec["lat_file"], "rb") as f:
                a.frombytes(f.read())
            lat.extend(a[skip:])
        out["latency_us"] = percentiles(lat)
        out["rate_target"] = rate
    return out


def proc_cpu_ns(pid: int) -> int:
    """CPU time of all threads of a process, ns (schedstat: precise, unlike the 10 ms ticks of /proc/PID/stat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def machine_cpu_ns() -> tuple[int, int]:
    """(busy, steal) CPU time of the whole machine (all CPUs), ns, from /proc/stat.

    busy = user + nice + system + irq + softirq; steal = time the hypervisor ran someone else
    while this VM wanted the CPU (other tenants: it shows up as latency spikes and lost throughput).
    """
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    return (f[0] + f[1] + f[2] + f[5] + f[6]) * tick, f[7] * tick


def own_cpu_ns() -> int:
    """CPU of this process and of every child it has reaped (workers, broker, redis-server)."""
    t = os.times()
    return int((t.user + t.system + t.children_user + t.children_system) * 1e9)


class LoadMeter:
    """Share of the machine's CPU that went to other work (and to steal) since start()."""

    def __init__(self) -> None:
        self.m0, self.o0, self.t0 = machine_cpu_ns(), own_cpu_ns(), mono()

    def read(self) -> tuple[float, float]:
        (busy, steal), own, t = machine_cpu_ns(), own_cpu_ns(), mono()
        capacity = (t - self.t0) * (os.cpu_count() or 1)
        other = (busy - self.m0[0]) - (own - self.o0)
        return max(0.0, other / capacity), max(0.0, (steal - self.m0[1]) / capacity)


def percentiles(samples: list[int]) -> dict[str, float]:
    if not samples:
        return {"samples": 0}
    s = sorted(samples)

    def q(p: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))] / 1000

    return {"samples": len(s), "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p99.9": q(0.999),
            "max": s[-1] / 1000, "mean": statistics.fmean(s) / 1000}


def env_info(redis_version: str | None, src: Path | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(), "kernel": platform.release(), "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for mod in ("orjson", "uvloop", "zmq", "redis", "hiredis"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "?")
        except ImportError:
            info[mod] = None
    try:
        import zmq

        info["libzmq"] = zmq.zmq_version()
    except ImportError:
        pass
    info["redis_server"] = redis_version
    info["daemons_source"] = source_info(src)
    return info


def source_info(src: Path | None) -> dict[str, Any]:
    """Which daemons/ was measured: the checkout's commit and whether daemons/ had local edits."""
    root = src or REPO
    out: dict[str, Any] = {"path": str(root / "daemons")}
    try:
        git = ["git", "-C", str(root)]
        out["commit"] = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip() or None
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "daemons"], capture_output=True,
                               text=True).stdout.split("\n")
        out["uncommitted"] = [line[3:] for line in dirty if line.strip()]
    except OSError:
        pass
    return out


NAMES = {
    "bus": "algo-bus broker, BusClient both ends",
    "lean": "algo-bus broker path, minimal clients",
    "raw": "raw AF_UNIX + orjson, no broker",
    "redis": "Redis pub/sub (redis-py+hiredis, unix sock)",
    "zmq": "ZeroMQ PUB/SUB ipc (pyzmq)",
}
TRANSPORTS = ("bus", "lean", "raw", "redis", "zmq")


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1000:,.1f}k" if x < 1e6 else f"{x / 1e6:,.2f}M"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", "-n", type=int, default=200_000, help="messages per throughput case (default 200000)")
    ap.add_argument("--repeat", "-r", type=int, default=3, help="repetitions of every case, interleaved; medians reported")
    ap.add_argument("--quick", action="store_true", help="smoke run: 50k messages, 1 repetition, 2 s latency runs")
    ap.add_argument("--only", default="bus,lean,raw,redis,zmq,latency",
                    help="comma-separated subset of bus,lean,raw,redis,zmq,latency (default: all)")
    ap.add_argument("--batch", type=int, default=64,
                    help="frames per write (raw, lean), per loop yield (BusClient publisher), per pipeline (redis)")
    ap.add_argument("--latency-rate", type=int, default=10_000, help="paced rate of the latency runs (msgs/s)")
    ap.add_argument("--latency-seconds", type=float, default=3.0, help="length of each latency run (default 3)")
    ap.add_argument("--latency-transports", default="bus,raw", help="latency runs for these (of bus,lean,raw)")
    ap.add_argument("--sub-buffer-mib", type=int, default=256,
                    help="bus.subscriber_buffer_bytes of the bench broker, MiB (production default 8; 0 = default)")
    ap.add_argument("--high-water-kib", type=int, default=1024,
                    help="the BusClient publisher waits while more than this is queued (default 1024)")
    ap.add_argument("--src", metavar="DIR",
                    help="measure the daemons/ package of another checkout (e.g. a git worktree of an older commit)")
    ap.add_argument("--profile-broker", metavar="FILE",
                    help="run algo-bus under cProfile, write its stats to FILE (then one broker serves every case)")
    ap.add_argument("--json", default=str(RESULTS), help=f"results file (default {RESULTS.relative_to(REPO)})")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target fails or a case is incomplete")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        role, spec = args.worker
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        WORKERS[role](json.loads(spec))
        return 0

    if args.quick:
        args.messages = min(args.messages, 50_000)
        args.repeat = 1
        args.latency_seconds = min(args.latency_seconds, 2.0)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - {*TRANSPORTS, "latency"}
    lat_transports = [x.strip() for x in args.latency_transports.split(",") if x.strip()]
    if unknown or not set(lat_transports) <= {"bus", "lean", "raw"}:
        ap.error(f"unknown --only / --latency-transports entries: {sorted(unknown) or lat_transports}")
    if "latency" not in only:
        lat_transports = []

    src = Path(args.src).resolve() if args.src else None
    if src is not None:
        if not (src / "daemons" / "bus" / "broker.py").is_file():
            ap.error(f"--src {src}: no daemons/bus/broker.py there")
        global _CHILD_ENV
        # The editable install's finder comes after PYTHONPATH, so children import src/daemons.
        _CHILD_ENV = {**os.environ, "PYTHONPATH": str(src)}

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)

    tmp = Path(tempfile.mkdtemp(prefix="algo-bench-"))
    sub_buffer = args.sub_buffer_mib << 20 if args.sub_buffer_mib else None
    ctx: dict[str, Any] = {"tmp": tmp, "seq": 0, "batch": args.batch, "idle": 10.0, "warmup": 0.5,
                           "high_bytes": args.high_water_kib << 10, "broker": None, "redis": None,
                           "sub_buffer": sub_buffer, "profile": args.profile_broker}
    runs: list[dict[str, Any]] = []
    lat_runs: list[dict[str, Any]] = []
    errors: list[str] = []
    meter = LoadMeter()
    time.sleep(1.0)
    before = meter.read()
    if before[0] > 0.05 or before[1] > 0.05:
        print(f"warning: other work uses {before[0]:.0%} of the machine (steal {before[1]:.0%}) before the bench "
              "starts; results will be skewed (see README)", flush=True)
    started = time.monotonic()
    meter = LoadMeter()
    redis_version = None
    broker_metrics: dict[str, float] = {}
    try:
        if only & {"bus", "lean"} or lat_transports:
            prof = Path(args.profile_broker).resolve() if args.profile_broker else None
            try:
                ctx["broker"] = BrokerProc(tmp, sub_buffer, prof)
            except (RuntimeError, TimeoutError) as exc:
                print(f"cannot start the broker: {exc}", file=sys.stderr)
                return 2
        if "redis" in only:
            try:
                ctx["redis"] = RedisProc(tmp)
                redis_version = ctx["redis"].version
            except (RuntimeError, TimeoutError) as exc:
                errors.append(f"redis: {exc}")
                only.discard("redis")
        cases = [(t, k, "flat") for t in TRANSPORTS if t in only for k in (1, 3)]
        cases += [(t, 3, "paced") for t in lat_transports]
        total = len(cases) * args.repeat
        done = 0
        n_lat = int(args.latency_rate * args.latency_seconds)
        for rep in range(args.repeat):
            for transport, k, mode in cases:
                done += 1
                label = f"[{done}/{total}] {transport} 1->{k}" + (" latency" if mode == "paced" else "")
                print(f"{label:<30} ", end="", flush=True)
                try:
                    if mode == "flat":
                        res = run_case(ctx, transport, k, mode, args.messages)
                    else:
                        res = run_case(ctx, transport, k, mode, n_lat, args.latency_rate)
                except (RuntimeError, TimeoutError, KeyError, OSError) as exc:
                    errors.append(f"{transport} 1->{k} {mode} rep {rep + 1}: {exc}")
                    print(f"ERROR {exc}")
                    continue
                res["repeat"] = rep + 1
                note = "" if res["complete"] else f"INCOMPLETE delivered={res['delivered']}" + (
                    f"; broker dropped {res['broker_dropped']:.0f}, disconnected {res['broker_disconnects']:.0f}"
                    if res.get("broker_dropped") or res.get("broker_disconnects") else "")
                if mode == "flat":
                    runs.append(res)
                    steal = f", steal {res['steal_share']:.0%}" if res["steal_share"] >= 0.05 else ""
                    if res["complete"]:
                        print(f"{fmt_rate(res['rate']):>9} msgs/s  ({res['seconds']:.2f} s{steal})", flush=True)
                    else:
                        print(note, flush=True)
                else:
                    lat_runs.append(res)
                    lu = res["latency_us"]
                    steal = f"(steal {res['steal_share']:.0%}) " if res["steal_share"] >= 0.05 else ""
                    print(f"p50 {lu.get('p50', 0):.0f} us  p99 {lu.get('p99', 0):.0f} us  {steal}{note}", flush=True)
        if ctx["broker"] is not None:
            broker_metrics = ctx["broker"].metrics()
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        for key in ("broker", "redis"):
            if ctx.get(key) is not None:
                ctx[key].close()
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - started
    during = meter.read()  # children are all reaped by now, so their CPU counts as ours

    # ---- summarise ------------------------------------------------------------------------
    summary: dict[str, dict[str, Any]] = {}
    for transport in TRANSPORTS:
        for k in (1, 3):
            rs = [r for r in runs if r["transport"] == transport and r["subscribers"] == k]
            if not rs:
                continue
            ok = [r for r in rs if r["complete"]]
            rates = [r["rate"] for r in ok]
            cpu = {key: statistics.median(r["cpu_us_per_msg"][key] for r in ok)
                   for key in ("pub", "sub", "total")} if ok else {}
            if ok and ok[0]["cpu_us_per_msg"]["server"] is not None:
                cpu["server"] = statistics.median(r["cpu_us_per_msg"]["server"] for r in ok)
            summary[f"{transport} 1->{k}"] = {
                "median": statistics.median(rates) if rates else None,
                "min": min(rates) if rates else None, "max": max(rates) if rates else None,
                "runs": [round(r["rate"]) if r["rate"] else None for r in rs], "complete": len(ok) == len(rs),
                "publish_rate_median": statistics.median(r["publish_rate"] for r in rs),
                "broker_dropped": sum(r.get("broker_dropped", 0) for r in rs),
                "broker_disconnects": sum(r.get("broker_disconnects", 0) for r in rs),
                "cpu_us_per_msg_median": cpu,
            }
    latency: dict[str, dict[str, Any]] = {}
    for transport in lat_transports:
        rs = [r for r in lat_runs if r["transport"] == transport]
        ok = [r for r in rs if r["complete"] and r["latency_us"].get("samples")]
        if not rs:
            continue
        latency[transport] = {
            "runs": [{**r["latency_us"], "steal_share": r["steal_share"]} for r in rs],
            "complete": len(ok) == len(rs),
            "median_of_runs": {q: statistics.median(r["latency_us"][q] for r in ok)
                               for q in ("p50", "p90", "p99", "p99.9", "max")} if ok else {},
            "subscribers": 3, "rate": args.latency_rate,
        }

    def med(t: str, k: int) -> float | None:
        return summary.get(f"{t} 1->{k}", {}).get("median")

    targets: list[dict[str, Any]] = []
    # The targets are about the broker path; the baselines' clients only frame and (de)code, so the
    # like-for-like row is the broker with minimal clients. BusClient end to end adds what the
    # baselines lack (stamping ids, seq and trace, gap detection, dispatch) and is judged too.
    for row, what in (("lean", "broker path"), ("bus", "BusClient end to end")):
        if row not in only:
            continue
        for k in (1, 3):
            b = med(row, k)
            for base, want, label in (("raw", TARGET_RAW, "raw AF_UNIX+orjson"), ("redis", TARGET_REDIS, "Redis pub/sub"),
                                      ("zmq", TARGET_ZMQ, "ZeroMQ ipc")):
                if base not in only:
                    continue
                o = med(base, k)
                ratio = b / o if (b and o) else None
                targets.append({"target": f"{what} 1->{k} >= {want:g}x {label}", "ratio": ratio, "want": want,
                                "pass": ratio is not None and ratio >= want})
    if "bus" in lat_transports:
        lb = latency.get("bus", {})
        p99 = lb.get("median_of_runs", {}).get("p99")
        targets.append({"target": f"broker one-way p99 < {TARGET_P99_MS:g} ms @ {args.latency_rate // 1000}k msg/s, 3 subs",
                        "value_ms": p99 / 1000 if p99 is not None else None, "want": TARGET_P99_MS,
                        "pass": p99 is not None and p99 / 1000 < TARGET_P99_MS and lb.get("complete", False)})

    # ---- print ----------------------------------------------------------------------------
    size = message_size()
    if summary:
        print()
        print(f"Throughput, msgs/s published (every message delivered to every subscriber), median of {args.repeat};")
        print(f"{args.messages:,} msgs per case, each a {size['payload']} B tick in a {size['event']} B JSON event")
        print(f"  {'':<46} {'1->1':>9} {'1->3':>9}   runs 1->1 | 1->3")
        for transport in TRANSPORTS:
            if f"{transport} 1->1" not in summary and f"{transport} 1->3" not in summary:
                continue
            cells, detail = [], []
            for k in (1, 3):
                sm = summary.get(f"{transport} 1->{k}")
                cell = fmt_rate(sm["median"]) if sm else "-"
                cells.append(cell + ("" if not sm or sm["complete"] else "!"))
                detail.append(" ".join(fmt_rate(x) if x else "lost" for x in sm["runs"]) if sm else "-")
            print(f"  {NAMES[transport]:<46} {cells[0]:>9} {cells[1]:>9}   {' | '.join(detail)}")
        if any(not sm["complete"] for sm in summary.values()):
            print("  ! / lost = a repetition lost messages and is left out of the median (see the JSON)")
        print()
        print("CPU per message, µs (median): publisher, server (broker/redis-server), each subscriber, all processes;")
        print(f"'2-core bound' = 2 CPUs / total, the most this machine ({os.cpu_count()} CPUs) could do with that work")
        print(f"  {'':<46} {'case':>4} {'pub':>6} {'server':>7} {'sub':>6} {'total':>7} {'2-core bound':>13}")
        for key, sm in summary.items():
            c = sm["cpu_us_per_msg_median"]
            if not c:
                continue
            transport, case = key.split(" ")
            srv = f"{c['server']:.1f}" if "server" in c else "-"
            print(f"  {NAMES[transport]:<46} {case:>4} {c['pub']:>6.1f} {srv:>7} {c['sub']:>6.1f} {c['total']:>7.1f} "
                  f"{fmt_rate(2e6 / c['total']):>13}")
    if latency:
        print()
        print(f"One-way latency, µs: {args.latency_rate:,} msgs/s paced one by one, 1 publisher -> 3 subscribers, "
              f"{args.latency_seconds:g} s runs (first {ctx['warmup']} s dropped);")
        print(f"median over {args.repeat} run(s) of each percentile; last column: each run's p99 (and the "
              "hypervisor's steal during it, when >= 5%)")
        print(f"  {'':<46} {'p50':>6} {'p90':>6} {'p99':>6} {'p99.9':>6} {'max':>7}   runs p99")
        for transport, lr in latency.items():
            m = lr["median_of_runs"]
            per = " ".join(f"{r.get('p99', 0):.0f}" + (f"({r['steal_share']:.0%})" if r["steal_share"] >= 0.05 else "")
                           for r in lr["runs"])
            if not m:
                print(f"  {NAMES[transport]:<46} no complete run   {per}")
                continue
            print(f"  {NAMES[transport]:<46} {m['p50']:>6.0f} {m['p90']:>6.0f} {m['p99']:>6.0f} {m['p99.9']:>6.0f} "
                  f"{m['max']:>7.0f}   {per}" + ("" if lr["complete"] else "  (incomplete runs left out)"))
    if targets:
        print()
        print("Targets")
        for t in targets:
            if "ratio" in t:
                val = f"{t['ratio']:.2f}x" if t["ratio"] is not None else "n/a"
            else:
                val = f"{t['value_ms']:.3f} ms" if t.get("value_ms") is not None else "n/a"
            print(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['target']:<56} {val:>9}")
    if errors:
        print()
        print("Errors")
        for e in errors:
            print(f"  {e}")
    si = source_info(src)
    print(f"\nmeasured daemons/ at {si['path']} (commit {si.get('commit') or 'unknown: not a git checkout'}"
          + (f", uncommitted changes in {', '.join(si['uncommitted'])})" if si.get("uncommitted") else ")"))
    if ctx["broker"] is not None:
        buf = f"{args.sub_buffer_mib} MiB (raised from the 8 MiB default)" if args.sub_buffer_mib else "8 MiB (default)"
        print(f"bench broker: {' '.join(ctx['broker'].cmd[:1])}, bus.subscriber_buffer_bytes = {buf}")
    print(f"total time {elapsed:.0f} s; other work on the machine: {before[0]:.0%} before, {during[0]:.0%} during the run; "
          f"hypervisor steal {before[1]:.0%} / {during[1]:.0%}" + ("  <-- results skewed" if max(during) > 0.05 else ""))

    out = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv[1:],
        "settings": {"messages": args.messages, "repeat": args.repeat, "batch": args.batch,
                     "latency_rate": args.latency_rate, "latency_seconds": args.latency_seconds,
                     "warmup_seconds": ctx["warmup"], "subscriber_buffer_mib": args.sub_buffer_mib or 8,
                     "publisher_high_water_kib": args.high_water_kib, "message_bytes": size,
                     "broker_command": ctx["broker"].cmd if ctx["broker"] else None},
        "environment": env_info(redis_version, src),
        "throughput": summary,
        "latency": latency,
        "targets": targets,
        "runs": runs,
        "latency_runs": lat_runs,
        "broker_metrics_at_end": broker_metrics,
        "errors": errors,
        "elapsed_seconds": elapsed,
        "background_cpu_share": {"other_before": before[0], "other_during": during[0],
                                 "steal_before": before[1], "steal_during": during[1]},
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {path}")
    if args.strict and (errors or not all(t["pass"] for t in targets)
                        or not all(sm["complete"] for sm in summary.values())
                        or not all(lr["complete"] for lr in latency.values())):
        return 1
    return 0


def message_size() -> dict[str, int]:
    """Bytes of one tick payload and of one whole bus frame, for the record."""
    p = tick_pool()[0]
    body = Envelope("bench-pub").encode(1, p)
    return {"payload": len(orjson.dumps(p)), "event": len(body),
            "bus_frame": 7 + len(TOPIC) + len(str(p["token"])) + len(body)}


if __name__ == "__main__":
    sys.exit(main())
