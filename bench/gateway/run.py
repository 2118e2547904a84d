"""algo-gateway: API status latency and req/s, WebSocket fan-out of fills, RSS.

A real broker and a real algo-gateway process on Unix sockets in a temp dir (the harness of
tests/test_gateway.py), and for the TLS leg a real nginx rendered from the shipped template. The load
runs in a separate process (this file with ``--client``), pinned to the last CPU while the broker,
the gateway and nginx are pinned to the first, so client and server do not share a core.

    .venv/bin/python bench/gateway/run.py --seconds 10 --clients 50 --ws-clients 100 --fills 2000

- **api**: ``--clients`` keep-alive connections, each sending ``GET /api/v1/fleet`` with a viewer
  token as fast as answers come back, for ``--seconds`` after a 2 s warm-up: per-request latency
  p50/p99/max and requests/s, directly on the Unix socket and through nginx over TLS (HTTP/1.1).
- **ws**: ``--ws-clients`` WebSockets on the gateway's socket subscribed to ``execution.fill``; the
  client process publishes ``--fills`` fills on the bus at ``--fill-rate`` per second (a BusClient,
  as algo-execution does); each WebSocket client notes when each fill arrives. Latency is the
  publisher's envelope stamp (``ts``) to the browser client's receipt, decoded; missing fills are counted.
- **rss**: the gateway's VmRSS idle (after READY and a settle), at the end of each leg, and its peak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

REPO = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def summary_ms(ns: list[int]) -> dict[str, float]:
    ms = [v / 1e6 for v in ns]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50": pct(ms, 50), "p99": pct(ms, 99), "max": max(ms)}


# ---- the client process -------------------------------------------------------------------------
async def _http_worker(open_conn: Any, request: bytes, stop_at: float, measure_from: float, out: list[int]) -> int:
    reader, writer = await open_conn()
    errors = 0
    try:
        while True:
            t0 = time.perf_counter_ns()
            if t0 / 1e9 >= stop_at:
                return errors
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            t1 = time.perf_counter_ns()
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            elif t0 / 1e9 >= measure_from:
                out.append(t1 - t0)
    finally:
        writer.close()


async def api_load(args: argparse.Namespace) -> dict[str, Any]:
    request = (f"GET /api/v1/fleet HTTP/1.1\r\nHost: {args.host}\r\nAuthorization: Bearer {args.token}\r\n\r\n").encode()
    if args.target.startswith("unix:"):
        path = args.target[5:]

        def open_conn() -> Any:
            return asyncio.open_unix_connection(path)
    else:
        host, port = args.target.split(":")
        ctx = ssl.create_default_context(cafile=args.cafile)

        def open_conn() -> Any:
            return asyncio.open_connection(host, int(port), ssl=ctx, server_hostname="localhost")
    now = time.perf_counter_ns() / 1e9
    measure_from, stop_at = now + args.warmup, now + args.warmup + args.seconds
    samples: list[int] = []
    errors = await asyncio.gather(*(_http_worker(open_conn, request, stop_at, measure_from, samples)
                                    for _ in range(args.clients)))
    return {"latency_ms": summary_ms(samples), "req_per_s": len(samples) / args.seconds, "errors": sum(errors)}


async def ws_load(args: argparse.Namespace) -> dict[str, Any]:
    from websockets.asyncio.client import unix_connect

    from daemons.runtime.client import BusClient
    from daemons.runtime.config import load_config
    from daemons.runtime.envelope import EXECUTION_FILL

    config = load_config(Path(args.config))
    received: list[dict[int, int]] = [{} for _ in range(args.ws_clients)]
    closed: list[str] = []

    async def client(i: int, ready: asyncio.Event, subscribed: list[int]) -> None:
        async with unix_connect(args.target[5:], "ws://gateway/ws/events", open_timeout=30, max_queue=None) as ws:
            await ws.send(json.dumps({"token": args.token, "topics": ["execution.fill"]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            subscribed.append(i)
            if len(subscribed) == args.ws_clients:
                ready.set()
            mine = received[i]
            try:
                async for message in ws:
                    now = time.time_ns()
                    event = json.loads(message)["event"]
                    mine[event["payload"]["n"]] = now - event["ts"]
                    if len(mine) == args.fills:
                        return
            except Exception as exc:  # a dropped client is a result, not a crash
                closed.append(repr(exc))

    bus = BusClient.for_config(config.bus, source="bench-execution")
    await bus.start()
    while not bus.connected:
        await asyncio.sleep(0.02)
    ready, subscribed = asyncio.Event(), list[int]()
    tasks = [asyncio.create_task(client(i, ready, subscribed)) for i in range(args.ws_clients)]
    await asyncio.wait_for(ready.wait(), 60)
    rss_connected = rss_mb(args.gateway_pid)
    interval = 1.0 / args.fill_rate
    start = time.perf_counter()
    for n in range(args.fills):
        delay = start + n * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        bus.publish(EXECUTION_FILL, {"n": n, "fill_id": f"bench-{n}", "symbol": "INFY", "quantity": 1, "price": 100.0})
    await asyncio.wait(tasks, timeout=30)
    await bus.close()
    latencies = [ns for per in received for ns in per.values()]
    return {"latency_ms": summary_ms(latencies), "expected": args.fills * args.ws_clients, "received": len(latencies),
            "clients_complete": sum(len(r) == args.fills for r in received), "closed": closed[:5],
            "rss_connected_mb": rss_connected}


async def subscribers(args: argparse.Namespace) -> dict[str, Any]:
    """For bench/pipeline/run.py --gateway: ``--ws-clients`` WebSockets subscribed to everything the
    gateway streams, reading (and decoding) every message until ``--until-file`` exists."""
    from websockets.asyncio.client import unix_connect

    counts = [0] * args.ws_clients
    closed: list[str] = []
    stop = asyncio.Event()

    async def client(i: int) -> None:
        try:
            async with unix_connect(args.target[5:], "ws://gateway/ws/events", open_timeout=30, max_queue=None) as ws:
                await ws.send(json.dumps({"token": args.token}))
                async for message in ws:
                    json.loads(message)
                    counts[i] += 1
                    if stop.is_set():
                        return
        except Exception as exc:  # a dropped client is a result, not a crash
            closed.append(repr(exc))

    tasks = [asyncio.create_task(client(i)) for i in range(args.ws_clients)]
    stop_file = Path(args.until_file)
    while not await asyncio.to_thread(stop_file.exists):
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait(tasks, timeout=5)
    return {"clients": args.ws_clients, "messages": sum(counts), "min_per_client": min(counts),
            "max_per_client": max(counts), "closed": len(closed), "closed_reasons": sorted(set(closed))[:5]}


def client_main(args: argparse.Namespace) -> None:
    import uvloop

    load = {"api": api_load, "ws": ws_load, "subscribe": subscribers}[args.client]
    result = uvloop.run(load(args))
    print(json.dumps(result))


# ---- the driver ---------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")


def hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmHWM for {pid}")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> None:
    os.sched_setaffinity(pid, cpus)
    for task in Path(f"/proc/{pid}/task").iterdir():  # threads made before the call keep the old mask
        os.sched_setaffinity(int(task.name), cpus)


def run_client(args: argparse.Namespace, cpu: int | None, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, *extra, "--warmup", str(args.warmup), "--seconds", str(args.seconds)]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + args.warmup + 180)
    if out.returncode != 0:
        raise SystemExit(f"the client failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def drain(stream: IO[str] | None, lines: list[int]) -> None:
    for _ in stream or ():
        lines[0] += 1


def start_nginx(tmp: Path, fleet: Any) -> tuple[subprocess.Popen[str], int, Path]:
    from daemons.gateway.nginx import Site, ensure_certificate, prepare_prefix, render

    cert, key = tmp / "tls" / "cert.pem", tmp / "tls" / "key.pem"
    ensure_certificate(cert, key, ["localhost", "127.0.0.1"])
    (tmp / "console").mkdir()
    (tmp / "console" / "index.html").write_text("console")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefix = tmp / "ngx"
    prepare_prefix(prefix)
    site = Site(listen=f"127.0.0.1:{port}", cert=cert, key=key, console=tmp / "console", user="root")
    (prefix / "conf" / "nginx.conf").write_text(render(fleet.config, site).replace("access_log logs/access.log;",
                                                                                   "access_log off;"))
    nginx = subprocess.Popen([NGINX, "-p", f"{prefix}/", "-c", "conf/nginx.conf", "-g", "daemon off;"], text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return nginx, port, cert
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="measured window of each api leg")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--clients", type=int, default=50, help="concurrent keep-alive API clients")
    p.add_argument("--ws-clients", type=int, default=100)
    p.add_argument("--fills", type=int, default=2000, help="fills published for the WebSocket leg")
    p.add_argument("--fill-rate", type=float, default=100.0, help="fills per second")
    p.add_argument("--no-nginx", action="store_true", help="skip the TLS leg")
    p.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "gateway.json")
    # the client process
    p.add_argument("--client", choices=("api", "ws", "subscribe"), help=argparse.SUPPRESS)
    p.add_argument("--until-file", help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--token", help=argparse.SUPPRESS)
    p.add_argument("--host", default="gateway", help=argparse.SUPPRESS)
    p.add_argument("--cafile", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--gateway-pid", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        client_main(args)
        return

    from tests.gateway_fleet import gateway_fleet

    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, client_cpu = ({cpus[0]}, cpus[-1]) if len(cpus) > 1 else (set(cpus), None)
    tmp = Path(tempfile.mkdtemp(prefix="algo-bench-gw-", dir="/var/tmp"))
    result: dict[str, Any] = {"cpus": os.cpu_count(), "server_cpus": sorted(server_cpus), "client_cpu": client_cpu,
                              "args": {k: str(v) for k, v in vars(args).items() if v is not None}}
    nginx = None
    try:
        with gateway_fleet(tmp / "fleet") as fleet:
            gw = fleet.gateway.pid
            # The harness keeps the gateway's stderr in a pipe for the tests to read at exit; a long run
            # would fill it and block the gateway's logging, so it is read (and counted) as it comes.
            log_lines = [0]
            threading.Thread(target=drain, args=(fleet.gateway.stderr, log_lines), daemon=True).start()
            for proc in fleet.procs:
                pin(proc.pid, server_cpus)
            time.sleep(2)
            result["rss_idle_mb"] = rss_mb(gw)
            base = ["--client", "api", "--token", fleet.tokens["viewer"], "--clients", str(args.clients)]
            cpu0 = cpu_s(gw)
            result["api_unix"] = run_client(args, client_cpu, *base, "--target", f"unix:{fleet.api_socket}")
            result["api_unix"]["gateway_cpu_s"] = cpu_s(gw) - cpu0
            result["rss_after_api_unix_mb"] = rss_mb(gw)
            if not args.no_nginx:
                nginx, port, cert = start_nginx(tmp, fleet)
                time.sleep(0.5)
                for child in subprocess.run(["pgrep", "-P", str(nginx.pid)], capture_output=True, text=True).stdout.split():
                    pin(int(child), server_cpus)
                pin(nginx.pid, server_cpus)
                cpu0 = cpu_s(gw)
                result["api_tls"] = run_client(args, client_cpu, *base, "--target", f"127.0.0.1:{port}",
                                               "--cafile", str(cert), "--host", f"127.0.0.1:{port}")
                result["api_tls"]["gateway_cpu_s"] = cpu_s(gw) - cpu0
                result["rss_after_api_tls_mb"] = rss_mb(gw)
            cpu0 = cpu_s(gw)
            result["ws"] = run_client(args, client_cpu, "--client", "ws", "--token", fleet.tokens["viewer"],
                                      "--target", f"unix:{fleet.api_socket}", "--config", str(fleet.config_path),
                                      "--ws-clients", str(args.ws_clients), "--fills", str(args.fills),
                                      "--fill-rate", str(args.fill_rate), "--gateway-pid", str(gw))
            result["ws"]["gateway_cpu_s"] = cpu_s(gw) - cpu0
            result["rss_after_ws_mb"] = rss_mb(gw)
            result["rss_peak_mb"] = hwm_mb(gw)
            result["gateway_log_lines"] = log_lines[0]
            metrics = fleet.http().get("/metrics").text
            result["ws"]["dropped_metric"] = [line for line in metrics.splitlines()
                                              if line.startswith("algo_gateway_ws_dropped_total")]
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(20)
        shutil.rmtree(tmp, ignore_errors=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
