"""algoctl's side of the control plane: `strategy list|history|VERB`, `strategy set`, `config seed|diff`.

Commands go into the database's queue as the invoking user; algo-commander has the unit hosting the
strategy carry them out and writes the outcome back, which ``--wait`` waits for. Exit codes: 0 done (or
queued), 1 the command failed or drift was found, 2 bad arguments (nothing written), 69 the database is
unreachable or not migrated, 75 still pending when --wait ran out, 78 a bad fleet.toml (from the caller).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import orjson

from ..control_plane.database import DatabaseError, SchemaError
from ..control_plane.drift import compare, declared, render
from ..control_plane.records import CommandView
from ..control_plane.store import Store
from ..control_plane.transitions import VERBS, Refused
from ..runtime.config import FleetConfig
from .control import who

EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_PENDING = 1, 2, 69, 75
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PLAIN_VERBS = [v for v in VERBS if v != "update_config"]  # `strategy set` sends update_config
POLL_SEC = 0.2


def add_parsers(sub: Any, config_sub: Any) -> None:
    """`algoctl strategy ...` and `algoctl config seed|diff` (``sub``, ``config_sub``: argparse subparsers)."""
    seed = config_sub.add_parser("seed", help="migrate the control-plane database and bring fleet.toml's strategies "
                                              "into it (run-time changes are kept unless --reset)")
    seed.add_argument("--reset", action="store_true", help="overwrite run-time state with fleet.toml's, and remove "
                                                           "strategies it no longer names (audited)")
    diff = config_sub.add_parser("diff", help="where the database's strategies differ from fleet.toml (exit 1 if any)")
    st = sub.add_parser("strategy", help="the strategy registry and its command queue (the control-plane database)")
    for p in (seed, diff, st):
        p.add_argument("--config", type=Path, help="default: $ALGO_CONFIG or /etc/algo/fleet.toml")
    st_sub = st.add_subparsers(dest="action", required=True, metavar="ACTION")
    st_sub.add_parser("list", help="every strategy: engine, process, desired state, version, parameters")
    hist = st_sub.add_parser("history", help="the newest commands, who sent them and their outcome")
    hist.add_argument("name", nargs="?", help="only this strategy's")
    hist.add_argument("--limit", type=int, default=20)
    for verb in [*PLAIN_VERBS, "set"]:
        p = st_sub.add_parser(verb, help="change parameters (update_config)" if verb == "set" else f"{verb} a strategy")
        p.add_argument("name")
        if verb == "set":
            p.add_argument("params", nargs="+", metavar="key=value",
                           help='a TOML value (9, 1.5, true, "NIFTY") or a bare word taken as text')
        p.add_argument("--id", help="idempotency id: the same id again is the same command (default: a new one)")
        p.add_argument("--wait", type=float, default=0.0, metavar="SEC", help="wait up to SEC for the outcome")


def run(args: argparse.Namespace, config: FleetConfig) -> int:
    """`config seed|diff` and `strategy ...`; every failure is one line on stderr and its exit code."""
    where = f"{args.command} {args.action}"
    try:
        store = Store.open(config.control_plane.database_url, migrate=args.command == "config" and args.action == "seed")
    except SchemaError as exc:
        print(f"algoctl {where}: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (DatabaseError, OSError) as exc:
        print(f"algoctl {where}: the control-plane database: {_one_line(exc)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        if args.command == "config":
            return _seed(store, config, args.reset) if args.action == "seed" else _diff(store, config)
        return _strategy(store, args)
    except Refused as exc:
        print(f"algoctl {where}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseError as exc:
        print(f"algoctl {where}: the control-plane database: {_one_line(exc)}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        store.close()


def _one_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _seed(store: Store, config: FleetConfig, reset: bool) -> int:
    report = store.seed(declared(config), who(), reset=reset)
    for name in report.added:
        print(f"added {name}")
    for drift in report.applied:
        print(f"from fleet.toml: {drift}")
    for drift in report.kept:
        print(f"kept (run-time change; `algoctl config seed --reset` discards it): {drift}")
    for name in report.removed:
        print(f"removed {name} (not in fleet.toml)")
    print(f"seeded {len(store.strategies())} strategies ({'reset' if reset else 'run-time changes adopted'})")
    return 0


def _diff(store: Store, config: FleetConfig) -> int:
    strategies = store.strategies()
    drifts = compare(declared(config), strategies)
    print(render(drifts, len(strategies)))
    return EXIT_FAILED if drifts else 0


def _strategy(store: Store, args: argparse.Namespace) -> int:
    if args.action == "list":
        print(f"{'NAME':<20} {'ENGINE':<8} {'PROCESS':<7} {'STATE':<8} {'AUTO':<5} {'VERSION':>7}  PARAMS")
        for s in store.strategies():
            print(f"{s.name:<20} {s.engine:<8} {s.process:<7} {s.desired_state:<8} {'yes' if s.auto_start else 'no':<5} "
                  f"{s.version:>7}  {_json(s.params)}")
        return 0
    if args.action == "history":
        if args.limit < 1:
            raise Refused("--limit must be at least 1")
        for c in store.history(args.name, args.limit):
            print(_describe(c))
        return 0
    verb, payload = ("update_config", {"params": parse_params(args.params)}) if args.action == "set" else (args.action, {})
    command = store.submit(args.id or f"algoctl-{uuid.uuid4().hex}", args.name, verb, payload, who())
    print(_describe(command))
    if args.wait <= 0 or command.status != "pending":
        return _exit(command)
    deadline = time.monotonic() + args.wait
    while command.status == "pending" and time.monotonic() < deadline:
        time.sleep(POLL_SEC)
        command = store.command(command.id) or command
    if command.status == "pending":
        print(f"still pending after {args.wait:g} s: it runs once algo-commander and the unit hosting "
              f"{command.strategy} are up (`algoctl strategy history {command.strategy}` shows it later)", file=sys.stderr)
        return EXIT_PENDING
    print(_describe(command))
    return _exit(command)


def _exit(command: CommandView) -> int:
    return EXIT_FAILED if command.status == "failed" else 0


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """key=value pairs; a value is read as TOML (numbers, booleans, quoted strings), else taken as text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not PARAM_NAME.match(key):
            raise Refused(f"{pair!r} is not key=value with a parameter name (letters, digits, _)")
        if key in params:
            raise Refused(f"{key} is given twice")
        try:
            params[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            if not text or any(c in text for c in "\"'[]{}=\n"):
                raise Refused(f"{key}: {text!r} is neither a TOML value nor a bare word") from None
            params[key] = text
    return params


def _describe(c: CommandView) -> str:
    args = f" {_json(c.args['params'])}" if c.verb == "update_config" else ""
    outcome = f" ({c.reason})" if c.reason else ""
    when = c.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{when}  {c.id}  {c.verb} {c.strategy}{args}  by {c.actor}: {c.status}{outcome}"


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
