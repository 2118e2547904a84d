"""algo-unitctl@.service, one instance per connection to algo-unitctl.socket (Accept=yes): reads one
request from the socket on stdin, runs ``systemctl VERB algo-strategy@NAME.service`` and answers.

Who may ask is the socket's business (mode 0660, group algo: root and the fleet's group); what may be
asked is protocol.parse's. The names come from fleet.toml (root's file), not from the control plane's
database, which the fleet's user can write: a database row can never widen what root starts. Every
request is one journal line with ACTOR= (the peer's user), UNIT= and RESULT=.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
import struct
import subprocess
import sys
from collections.abc import Sequence

from ..runtime.config import ConfigError, load_config
from ..runtime.logs import setup_logging
from .protocol import MAX_REQUEST, Refused, own_strategies, parse

log = logging.getLogger("algo.unitctl")
READ_TIMEOUT_SEC = 5.0
SYSTEMCTL_TIMEOUT_SEC = 90.0  # above the units' TimeoutStartSec= and TimeoutStopSec=


def peer(conn: socket.socket) -> str:
    """The connecting process's user (SO_PEERCRED), for the audit line."""
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def read_request(conn: socket.socket) -> bytes:
    conn.settimeout(READ_TIMEOUT_SEC)
    data = b""
    while not data.endswith(b"\n") and len(data) <= MAX_REQUEST:
        chunk = conn.recv(MAX_REQUEST + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > MAX_REQUEST:
        raise Refused(f"request longer than {MAX_REQUEST} bytes")
    return data


def serve(conn: socket.socket) -> str:
    """Handle one connection; the answer sent."""
    actor = peer(conn)
    unit = "-"
    try:
        line = read_request(conn)
        verb, unit = parse(line, own_strategies(load_config()))
        done = subprocess.run(["systemctl", "--no-ask-password", verb, unit], capture_output=True, text=True,
                              timeout=SYSTEMCTL_TIMEOUT_SEC, check=False)
        if done.returncode == 0:
            answer = "ok"
        else:
            why = " ".join((done.stderr or done.stdout).split())[:300] or f"systemctl exited {done.returncode}"
            answer = f"failed: {unit} did not {verb}: {why}"
    except Refused as exc:
        answer = f"refused: {exc}"
    except ConfigError as exc:
        answer = f"failed: fleet.toml: {exc.problems[0] if exc.problems else exc}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        answer = f"failed: {type(exc).__name__}: {exc}"
    level = logging.INFO if answer == "ok" else logging.WARNING
    log.log(level, "%s by %s: %s", unit, actor, answer, extra={"ACTOR": actor, "UNIT": unit, "RESULT": answer.split(":")[0]})
    try:
        conn.sendall(answer.encode() + b"\n")
    except OSError:
        pass  # the asker went away; the unit did what the line says
    return answer


def main(argv: Sequence[str] | None = None) -> None:
    setup_logging("algo-unitctl")
    try:
        conn = socket.socket(fileno=os.dup(0))
    except OSError:
        sys.exit("algo-unitctl runs from algo-unitctl.socket (Accept=yes): its connection is on stdin")
    with conn:
        serve(conn)
