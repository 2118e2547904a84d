"""The bus under systemd: socket activation across broker restarts, hostile peers."""

from __future__ import annotations

import os
import socket
import struct
import time
import urllib.request

import pytest

from daemons.algoctl.sandbox import Sandbox
from daemons.runtime import wire
from tests.helpers import wait_until
from tests.systemd.busclient import Listener

pytestmark = pytest.mark.systemd

BUS = "algo-bus.service"


def metric(port: int, name: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name:
            return float(value)
    raise AssertionError(f"{name} not exported on :{port}")


def test_broker_restart_keeps_the_socket_and_clients_resume_within_a_second(sandbox: Sandbox) -> None:
    sandbox.systemctl("start", "algo-heartbeat.service", check=True)
    sock_path = sandbox.path("/run/algo/bus.sock")
    with Listener(sandbox, "health.heartbeat", "test.echo") as listener:
        wait_until(lambda: len(listener.events) >= 3, 10, "heartbeats before the restart")
        inode = os.stat(sock_path).st_ino
        old_pid = sandbox.show(BUS, "MainPID")["MainPID"]

        restarted = time.monotonic()
        sandbox.systemctl("restart", BUS, check=True)
        assert sandbox.show("algo-bus.socket", "ActiveState")["ActiveState"] == "active"
        assert os.stat(sock_path).st_ino == inode, "the socket must outlive the broker"
        assert sandbox.show(BUS, "MainPID")["MainPID"] != old_pid

        # The heartbeat daemon (another client) reconnects and its heartbeats reach us again ...
        wait_until(
            lambda: any(t > restarted and ev.source == "heartbeat" for t, ev in listener.events),
            5, "a heartbeat after the broker restart",
        )
        resumed = min(t for t, ev in listener.events if t > restarted and ev.source == "heartbeat")
        assert resumed - restarted < 1.0, f"clients resumed {resumed - restarted:.3f}s after the restart"
        # ... and our own client, resubscribed by itself, gets what it publishes.
        assert listener.client.transport.reconnects >= 1
        listener.call(listener.client.publish, "test.echo", {"after": "restart"})
        wait_until(lambda: any(ev.type == "test.echo" for _, ev in listener.events), 2, "our own echo")


def raw_peer(sandbox: Sandbox) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sandbox.path("/run/algo/bus.sock")))
    return s


def closed_by_broker(s: socket.socket) -> bool:
    s.settimeout(5)
    try:
        while data := s.recv(65536):
            pass
        return data == b""
    except ConnectionResetError:
        return True
    finally:
        s.close()


def test_garbage_truncated_and_oversized_frames_leave_the_broker_and_other_peers_unharmed(sandbox: Sandbox) -> None:
    sandbox.systemctl("start", "algo-heartbeat.service", check=True)
    with Listener(sandbox, "health.heartbeat") as listener:
        wait_until(lambda: listener.events, 10, "heartbeats")
        pid = sandbox.show(BUS, "MainPID")["MainPID"]

        garbage = raw_peer(sandbox)
        garbage.sendall(b"\x00\x00\x00\x20" + b"\xee" * 40)  # plausible length, unknown kind
        assert closed_by_broker(garbage)

        http = raw_peer(sandbox)  # someone pointed curl at the wrong socket: 'GET ' reads as 1.2 GB
        http.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert closed_by_broker(http)

        oversized = raw_peer(sandbox)
        oversized.sendall(struct.pack("!IBBB", 512 << 20, wire.PUBLISH, 4, 0) + b"evil")
        assert closed_by_broker(oversized)

        not_json = raw_peer(sandbox)
        not_json.sendall(wire.encode(wire.PUBLISH, b"health.heartbeat", b"\x00\x01binary"))
        assert closed_by_broker(not_json)

        truncated = raw_peer(sandbox)
        frame = wire.encode(wire.PUBLISH, b"health.heartbeat", b'{"type": "x"}')
        truncated.sendall(frame[:-5])
        truncated.shutdown(socket.SHUT_WR)
        assert closed_by_broker(truncated)

        count = len(listener.events)
        wait_until(lambda: len(listener.events) >= count + 5, 5, "heartbeats still flowing to a good peer")
        assert listener.client.transport.reconnects == 0, "the well-behaved peer must not notice"
        assert listener.client.decode_errors == 0, "no garbage may reach subscribers"

    props = sandbox.show(BUS, "MainPID", "NRestarts", "ActiveState")
    assert props == {"MainPID": pid, "NRestarts": "0", "ActiveState": "active"}
    assert metric(9470, 'algo_bus_protocol_errors_total{reason="malformed"}') == 2
    assert metric(9470, 'algo_bus_protocol_errors_total{reason="oversized"}') == 2
    assert metric(9470, 'algo_bus_protocol_errors_total{reason="truncated"}') == 1
    warnings = sandbox.journalctl("-u", BUS, "-p", "warning", "-o", "cat").stdout.splitlines()
    assert len(warnings) == 5 and all(w.startswith("dropping bus peer") for w in warnings)
