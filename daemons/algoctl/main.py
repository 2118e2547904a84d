"""algoctl: the operator's command line for the fleet."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import orjson

from ..runtime.config import ConfigError, load_config, redacted
from .sandbox import Sandbox, SandboxError, attach, unavailable_reason
from .units import render_units

DEFAULT_SANDBOX = Path("/var/tmp/algo-sandbox")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="algoctl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cfg = sub.add_parser("config", help="validate or show the fleet config")
    cfg_sub = cfg.add_subparsers(dest="action", required=True, metavar="ACTION")
    validate = cfg_sub.add_parser("validate", help="report every problem with its dotted path; exit 78 if any")
    validate.add_argument("file", type=Path)
    show = cfg_sub.add_parser("show", help="print the effective config (files, env, credentials), secrets redacted")
    show.add_argument("--config", type=Path, help="default: $ALGO_CONFIG or /etc/algo/fleet.toml")
    for p in (validate, show):
        p.add_argument("--credentials", type=Path, help="directory of credentials (default: $CREDENTIALS_DIRECTORY)")

    units = sub.add_parser("units", help="render unit files for a venv other than /opt/algo/venv")
    units.add_argument("dest", type=Path)
    units.add_argument("--venv", default=sys.prefix)

    box = sub.add_parser("sandbox", help="a private systemd (PID 1 of new PID + mount namespaces) running the fleet")
    box.add_argument("--root", type=Path, default=DEFAULT_SANDBOX, help=f"sandbox state (default {DEFAULT_SANDBOX})")
    box_sub = box.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = box_sub.add_parser("start", help="boot the sandbox (units rendered for this checkout)")
    start.add_argument("--config", type=Path, help="fleet.toml to install as /etc/algo/fleet.toml inside")
    box_sub.add_parser("stop", help="stop the fleet and tear the sandbox down")
    box_sub.add_parser("status", help="is it running, and the fleet's units")
    for tool in ("systemctl", "journalctl"):
        p = box_sub.add_parser(tool, help=f"run {tool} inside the sandbox", prefix_chars="\0")
        p.add_argument("args", nargs=argparse.REMAINDER)

    args = parser.parse_args(argv)
    if args.command == "config":
        sys.exit(_config(args))
    if args.command == "units":
        for path in render_units(args.dest, args.venv):
            print(path)
        return
    sys.exit(_sandbox(args))


def _config(args: argparse.Namespace) -> int:
    path = args.file if args.action == "validate" else args.config
    try:
        config = load_config(path, credentials_dir=args.credentials)
    except ConfigError as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 78
    if args.action == "validate":
        print(f"{path}: OK ({config.fleet.mode} mode, {sum(1 for _ in config.daemons.items())} daemons)")
    else:
        sys.stdout.buffer.write(orjson.dumps(redacted(config), option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    try:
        if args.action == "start":
            reason = unavailable_reason()
            if reason:
                print(f"algoctl sandbox: {reason}", file=sys.stderr)
                return 1
            sandbox = Sandbox(args.root)
            sandbox.prepare(args.config)
            sandbox.start()
            print(f"sandbox running: systemd pid {sandbox.pid}, state in {sandbox.root}")
            return 0
        sandbox = attach(args.root)
        if args.action == "stop":
            sandbox.stop()
            print("sandbox stopped")
            return 0
        if sandbox.pid is None:
            print(f"no sandbox running at {sandbox.root}", file=sys.stderr)
            return 3
        if args.action == "status":
            print(f"sandbox running: systemd pid {sandbox.pid}, state in {sandbox.root}")
            args.action, args.args = "systemctl", ["list-units", "algo*", "--all"]
        os.execvp("nsenter", ["nsenter", "-t", str(sandbox.pid), "-m", "-p", args.action, *args.args])
    except SandboxError as exc:
        print(f"algoctl sandbox: {exc}", file=sys.stderr)
        return 1
