"""``systemctl reload`` that returns once the daemon has applied the config, and fails when it refused it.

systemd 252 (Debian 12) ends a reload job when ``ExecReload=`` exits, and ``kill -HUP`` exits at once: the
daemon's RELOADING=1 ... READY=1 came after the job, so ``systemctl reload`` returned before the new config was
in force and reported success for a config the daemon refused. (``Type=notify-reload``, which waits, came in
253.) So every unit's ``ExecReload=`` is ``algo-reload $MAINPID``: it leaves a token in the unit's
``RuntimeDirectory=``, sends SIGHUP, and waits for the outcome of the reload that read that token. A refused
config makes it exit 1 with the daemon's reasons on stderr, so the job fails and the operator sees why in
``systemctl status`` and the journal.

The daemon's side is ``Handshake``: ``requested()`` as a reload begins, ``answer()`` as it ends.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REQUEST = "reload.request"
OUTCOME = "reload.outcome"
POLL_SEC = 0.01

log = logging.getLogger("algo.runtime")


def runtime_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """The unit's ``RuntimeDirectory=`` (systemd passes it as ``$RUNTIME_DIRECTORY``; the first if several)."""
    first = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(first) if first else None


def _write(path: Path, text: str) -> None:
    """Whole or not at all: the waiting side never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Handshake:
    """The daemon's side: which request a reload answers, and its outcome written where ``algo-reload`` waits.
    Without a runtime directory (a shell, a test) it does nothing."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def requested(self) -> str:
        """The token of the latest request ("" for a bare SIGHUP, or none): read as the reload begins."""
        if self.directory is None:
            return ""
        try:
            return (self.directory / REQUEST).read_text().strip()
        except OSError:
            return ""

    def answer(self, token: str, problems: Sequence[str]) -> None:
        """Record the reload's outcome: applied when ``problems`` is empty, else refused with them."""
        if self.directory is None:
            return
        outcome = {"token": token, "applied": not problems, "problems": list(problems)}
        try:
            _write(self.directory / OUTCOME, json.dumps(outcome))
        except OSError as exc:  # the reload itself is done; only its waiter goes without an answer
            log.warning("could not record the reload's outcome in %s: %s", self.directory, exc)


def _outcome(directory: Path, token: str) -> dict[str, object] | None:
    try:
        outcome = json.loads((directory / OUTCOME).read_text())
    except (OSError, ValueError):
        return None
    return outcome if isinstance(outcome, dict) and outcome.get("token") == token else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but not ours to signal
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # /proc does not show it: kill(0) said it is there
    return state != "Z"  # a zombie has ended; its parent has yet to reap it


def request_reload(pid: int, directory: Path | None, timeout: float) -> tuple[bool, str]:
    """Signal ``pid`` to reload and wait for its outcome: (applied, what to tell the operator)."""
    token = os.urandom(8).hex()
    unheard = "" if directory is not None else "no RuntimeDirectory= to hear the outcome from"
    if directory is not None:
        try:
            _write(directory / REQUEST, token)
        except OSError as exc:  # the reload itself needs no file: it goes ahead, unheard
            unheard = f"cannot leave a token in {directory} ({exc.strerror or exc})"
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return False, f"process {pid} is not running"
    if directory is None or unheard:
        return True, f"signalled; {unheard}, so not waiting for the outcome (see the unit's status line)"
    deadline = time.monotonic() + timeout
    while (outcome := _outcome(directory, token)) is None:
        if not _alive(pid):
            return False, f"process {pid} ended during the reload"
        if time.monotonic() > deadline:
            return False, f"no outcome from process {pid} within {timeout:g}s; it may still apply the config"
        time.sleep(POLL_SEC)
    if outcome.get("applied") is True:
        return True, "applied"
    problems = outcome.get("problems")
    reasons = "\n".join(f"  {p}" for p in problems) if isinstance(problems, list) else f"  {problems!r}"
    return False, f"refused, the running config is kept:\n{reasons}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="algo-reload", description="Reload an algo daemon and wait for the outcome (the units' ExecReload=).")
    parser.add_argument("pid", type=int, help="the daemon's process id ($MAINPID in a unit)")
    parser.add_argument("--timeout", type=float, default=25.0,
                        help="seconds to wait for the outcome (default 25: within the units' TimeoutStartSec=30s)")
    args = parser.parse_args(argv)
    if args.pid <= 0:
        parser.error(f"pid must be a process id, not {args.pid}")
    applied, message = request_reload(args.pid, runtime_dir(), args.timeout)
    if applied:
        print(f"algo-reload: {message}")
        return 0
    # Under systemd each line is a journal entry of its own: "<3>" makes each an error (sd-daemon(3)).
    prefix = "<3>" if _stderr_is_journal() else ""
    print("\n".join(prefix + line for line in f"algo-reload: {message}".splitlines()), file=sys.stderr)
    return 1


def _stderr_is_journal() -> bool:
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"
