"""The HTTP server both endpoints run on: threaded, loopback only, and able to cut its connections.

A thread per connection is what lets one request be held (slow or swallowed replies) or one ticker
client be stalled without stalling the others.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("algo.kite_emulator")

HOST = "127.0.0.1"  # the emulator accepts any request token: never listen beyond loopback


def check_private(host: str) -> None:
    """Loopback, or a private address of a network namespace with no default route (a test's own
    stand-in for Kite's network, which nothing beyond its peers can reach); never a host's network."""
    address = ipaddress.ip_address(host)
    if address.is_loopback:
        return
    routes = Path("/proc/thread-self/net/route").read_text().splitlines()[1:]
    default = any(fields[1] == fields[7] == "00000000" for fields in map(str.split, routes))
    if default or not address.is_private:
        raise ValueError(f"the Kite emulator accepts any request token: it listens on {host} only inside a "
                         "network namespace with no default route and on a private address, else on loopback")


class LoopbackServer(ThreadingHTTPServer):
    """Serves ``handler`` on ``host``:``port`` (0: a free port) in a background thread; ``host`` is
    loopback unless the caller is inside an isolated network namespace (``check_private``)."""

    daemon_threads = True

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler], owner: Any, name: str,
                 host: str = HOST) -> None:
        check_private(host)
        super().__init__((host, port), handler)
        self.host = host
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
