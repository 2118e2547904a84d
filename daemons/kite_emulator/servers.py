"""The HTTP server both endpoints run on: threaded, loopback only, and able to cut its connections.

A thread per connection is what lets one request be held (slow or swallowed replies) or one ticker
client be stalled without stalling the others.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger("algo.kite_emulator")

HOST = "127.0.0.1"  # the emulator accepts any request token: never listen beyond loopback


class LoopbackServer(ThreadingHTTPServer):
    """Serves ``handler`` on 127.0.0.1:``port`` (0: a free port) in a background thread."""

    daemon_threads = True

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler], owner: Any, name: str) -> None:
        super().__init__((HOST, port), handler)
        self.owner = owner  # what handlers serve: the Emulator (REST) or the TickerServer
        self.stopping = threading.Event()
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=name, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._live.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._live.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that left mid-reply (timed out, killed, dropped) is routine here, not a traceback."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("client %s left before its reply", client_address)
        else:
            log.exception("error serving %s", client_address)

    def stop(self) -> None:
        """Stop accepting, wake held requests, and cut every open connection (keep-alive ones too)."""
        self.stopping.set()
        if self._thread.is_alive():
            self.shutdown()
        self.server_close()
        with self._lock:
            live = list(self._live)
        for sock in live:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone
        if self._thread.is_alive():
            self._thread.join(timeout=5)
