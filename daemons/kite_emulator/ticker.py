"""Kite's ticker WebSocket: subscriptions and modes in, binary ticks, order updates and heartbeats out.

Each connection has a reader (the handler thread: client commands) and a writer thread fed by a
queue, so producers (tests pushing ticks, the book announcing orders, the heartbeat) never block on
a socket and every client sees messages in the order they were produced.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from . import websocket as ws
from .faults import Faults
from .packets import HEARTBEAT, MODES, Tick, encode, message
from .servers import HOST, LoopbackServer

log = logging.getLogger("algo.kite_emulator.ticker")

_CHECK = "check drop fault"  # queue item: ask the faults whether to drop now
_SHUTDOWN = "shutdown"  # queue item: cut the TCP connection and end the writer


class Connection:
    """One ticker client: its subscriptions (token -> mode) and its outgoing queue."""

    def __init__(self, server: TickerServer, sock: socket.socket, rfile: ws.Readable) -> None:
        self.server = server
        self.sock = sock
        self.rfile = rfile
        self._modes: dict[int, str] = {}
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[bytes, bool] | str] = queue.SimpleQueue()
        self._generation = server.faults.drop_generation
        self._sent = 0  # tick messages since this connection opened or the last drop fault was set
        self._writer = threading.Thread(target=self._write_loop, name="kite-emulator-ws-writer", daemon=True)

    def modes(self) -> dict[int, str]:
        with self._lock:
            return dict(self._modes)

    def mode_of(self, token: int) -> str | None:
        with self._lock:
            return self._modes.get(token)

    def send(self, opcode: int, payload: bytes, tick: bool = False) -> None:
        self._queue.put((ws.encode_frame(opcode, payload), tick))

    def check_drop(self) -> None:
        self._queue.put(_CHECK)

    def close(self, code: int, reason: str) -> None:
        self.send(ws.OP_CLOSE, ws.close_payload(code, reason))
        self._queue.put(_SHUTDOWN)

    def run(self) -> None:
        """The reader: client commands until the peer goes; then the writer is finished."""
        self._writer.start()
        self.check_drop()
        try:
            self._read_loop()
        except ws.ProtocolError as exc:
            log.warning("ticker client broke the protocol: %s", exc)
            self.close(1002, str(exc))
        except (EOFError, OSError):
            pass  # the client went away (or a drop fault cut it)
        finally:
            self._queue.put(_SHUTDOWN)
            self._writer.join(timeout=5)

    def _read_loop(self) -> None:
        opcode: int | None = None
        parts: list[bytes] = []
        while True:
            fin, op, payload = ws.read_frame(self.rfile)
            if op == ws.OP_CLOSE:
                self.close(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000, "")
                return
            if op == ws.OP_PING:
                self.send(ws.OP_PONG, payload)
                continue
            if op == ws.OP_PONG:
                continue
            if op == ws.OP_CONTINUATION:
                if opcode is None:
                    raise ws.ProtocolError("continuation frame without a message")
            elif op in (ws.OP_TEXT, ws.OP_BINARY):
                if opcode is not None:
                    raise ws.ProtocolError("new message inside a fragmented one")
                opcode, parts = op, []
            else:
                raise ws.ProtocolError(f"unknown opcode {op:#x}")
            parts.append(payload)
            if sum(map(len, parts)) > ws.MAX_MESSAGE:
                raise ws.ProtocolError("message too large")
            if fin:
                self._command(b"".join(parts))
                opcode = None

    def _command(self, raw: bytes) -> None:
        """``{"a": "subscribe"|"unsubscribe", "v": [tokens]}`` or ``{"a": "mode", "v": [mode, [tokens]]}``."""
        try:
            msg = json.loads(raw)
            action, value = msg["a"], msg["v"]
            if action == "mode":
                mode, tokens = value
                if mode not in MODES:
                    raise ValueError(f"unknown mode {mode!r}")
            elif action in ("subscribe", "unsubscribe"):
                mode, tokens = "quote", value  # Kite's default mode, and what the client assumes
            else:
                raise ValueError(f"unknown action {action!r}")
            if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
                raise ValueError("tokens must be a list of integers")
        except (ValueError, KeyError, TypeError) as exc:
            self.send(ws.OP_TEXT, json.dumps({"type": "error", "data": f"Invalid message: {exc}"}).encode())
            return
        with self._lock:
            for token in tokens:
                if action == "unsubscribe":
                    self._modes.pop(token, None)
                else:  # a mode for a token not yet subscribed subscribes it
                    self._modes[token] = mode

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item == _SHUTDOWN:
                break
            if not isinstance(item, str):  # a frame; the other string is _CHECK
                frame, tick = item
                try:
                    self.sock.sendall(frame)
                except OSError:
                    break
                self._sent += tick
            generation = self.server.faults.drop_generation
            if generation != self._generation:
                self._generation, self._sent = generation, 0
            if self.server.faults.take_ws_drop(self._sent):
                log.info("drop fault: cutting a ticker connection")
                break
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


class _Handler(BaseHTTPRequestHandler):
    """The opening handshake; then the handler thread becomes the connection's reader."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # ticks go out as they come, not batched
    server: LoopbackServer

    def do_GET(self) -> None:
        ticker: TickerServer = self.server.owner
        self.close_connection = True
        if self.headers.get("Upgrade", "").lower() != "websocket" or not self.headers.get("Sec-WebSocket-Key"):
            self._refuse(400, "a WebSocket upgrade is expected here")
            return
        if ticker.faults.ws_refused():
            self._refuse(503, "refused by the emulator's refuse_ws fault")
            return
        query = parse_qs(urlsplit(self.path).query)
        if not ticker.authorize(query.get("api_key", [""])[0], query.get("access_token", [""])[0]):
            self._refuse(403, "invalid api_key or access_token")
            return
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", ws.accept_key(self.headers["Sec-WebSocket-Key"]))
        self.end_headers()
        ticker.serve(Connection(ticker, self.connection, self.rfile))

    def _refuse(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("ticker %s: " + format, self.client_address[0], *args)


class TickerServer:
    """The ticker endpoint: ``ws://<host>:<port>/?api_key=..&access_token=..``."""

    def __init__(self, port: int, faults: Faults, authorize: Callable[[str, str], bool],
                 heartbeat_interval: float = 1.0, host: str = HOST) -> None:
        self.faults = faults
        self.authorize = authorize
        self.heartbeat_interval = heartbeat_interval
        self._connections: set[Connection] = set()
        self._lock = threading.Lock()
        self._http = LoopbackServer(port, _Handler, self, "kite-emulator-ticker", host)
        self._heartbeat = threading.Thread(target=self._beat, name="kite-emulator-heartbeat", daemon=True)
        faults.on_ws_drop = self._apply_drop

    @property
    def url(self) -> str:
        return f"ws://{self._http.host}:{self._http.port}"

    def start(self) -> None:
        self._http.start()
        self._heartbeat.start()

    def stop(self) -> None:
        """Close every client with 1001 (going away), then stop listening."""
        for conn in self._snapshot():
            conn.close(1001, "emulator stopping")
        self._http.stop()
        if self._heartbeat.is_alive():
            self._heartbeat.join(timeout=5)

    def serve(self, conn: Connection) -> None:
        with self._lock:
            self._connections.add(conn)
        try:
            conn.run()
        finally:
            with self._lock:
                self._connections.discard(conn)

    def subscriptions(self) -> list[dict[int, str]]:
        """Each open connection's token -> mode map, so tests can wait for a subscription to land."""
        return [c.modes() for c in self._snapshot()]

    def push_tick(self, tick: Tick) -> None:
        """Send ``tick`` to every client subscribed to its token, in that client's mode."""
        packets: dict[str, bytes] = {}
        for conn in self._snapshot():
            mode = conn.mode_of(tick.instrument_token)
            if mode is not None:
                if mode not in packets:
                    packets[mode] = message([encode(tick, mode)])
                conn.send(ws.OP_BINARY, packets[mode], tick=True)

    def push_packet(self, token: int, packet: bytes) -> None:
        """One raw packet (a recorded one, say) as a message to every client subscribed to ``token``."""
        data = message([packet])
        for conn in self._snapshot():
            if conn.mode_of(token) is not None:
                conn.send(ws.OP_BINARY, data, tick=True)

    def push_text(self, payload: dict[str, Any]) -> None:
        """A text message (order update, error) to every client."""
        data = json.dumps(payload).encode()
        for conn in self._snapshot():
            conn.send(ws.OP_TEXT, data)

    def _snapshot(self) -> list[Connection]:
        with self._lock:
            return list(self._connections)

    def _apply_drop(self) -> None:
        for conn in self._snapshot():
            conn.check_drop()

    def _beat(self) -> None:
        while not self._http.stopping.wait(self.heartbeat_interval):
            for conn in self._snapshot():
                conn.send(ws.OP_BINARY, HEARTBEAT)
