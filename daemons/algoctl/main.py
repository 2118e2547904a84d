"""algoctl: the operator's command line for the fleet."""

from __future__ import annotations

import argparse
import getpass
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

import orjson

from ..bus.listen import socket_path_problem
from ..gateway import nginx
from ..gateway.tokens import Role
from ..journal_format.layout import day_dir
from ..runtime.calendar import IST
from ..runtime.config import ConfigError, FleetConfig, Problem, load_config, missing_credentials, redacted
from . import control, gateway, login, model, registry, replay, trace, wal
from .sandbox import Sandbox, SandboxError, attach, unavailable_reason
from .status import fleet_status
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
    registry.add_parsers(sub, cfg_sub)

    units = sub.add_parser("units", help="render unit files for a venv other than /opt/algo/venv")
    units.add_argument("dest", type=Path)
    units.add_argument("--venv", default=sys.prefix)
    units.add_argument("--live", action="store_true",
                       help="for a live fleet.toml: the units that talk to Kite may reach beyond loopback")

    for verb, text in (("pause", "block new entries of an engine or one strategy (exits still go out)"),
                       ("resume", "allow entries again")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("name", help="engine (fno, equity, options) or strategy name")
        p.add_argument("--config", type=Path, help="default: $ALGO_CONFIG or /etc/algo/fleet.toml")
    ks = sub.add_parser("kill-switch", help="engage (on) or release (off) the fleet-wide kill switch")
    ks.add_argument("state", choices=["on", "off"])
    ks.add_argument("--reason", default="operator", help="recorded in the journal and in risk's status")
    ks.add_argument("--config", type=Path)
    sub.add_parser("status", help="the fleet's units, states, restarts and status lines on one screen")
    tr = sub.add_parser("trace", help="tick -> signal -> risk -> order -> fill for one id, with hop times")
    tr.add_argument("id", help="trace id, event id, ORDER_ID (client id), broker order id, fill id or signal id")
    tr.add_argument("--day", type=date.fromisoformat, help="journal day (default: today, IST)")
    tr.add_argument("--config", type=Path)
    rp = sub.add_parser("replay", help="feed a recorded journal day back through the fleet")
    rp.add_argument("day", nargs="?", type=date.fromisoformat, help="YYYY-MM-DD")
    rp.add_argument("--speed", type=float, default=1.0, help="1 = as recorded (default), 10 = ten times faster")
    rp.add_argument("--stop", action="store_true", help="back to the configured feed")
    rp.add_argument("--config", type=Path)

    lg = sub.add_parser("login", help="the day's Kite access token: browser login, then installed as a credential")
    lg.add_argument("--credentials", type=Path, default=login.DEFAULT_CREDENTIALS_DIR,
                    help=f"where the kite_* credentials live (default {login.DEFAULT_CREDENTIALS_DIR})")
    lg.add_argument("--no-encrypt", action="store_true", help="a root-only plain file instead of systemd-creds")
    lg.add_argument("--key", default="auto", choices=["auto", "host", "tpm2", "host+tpm2"],
                    help="systemd-creds --with-key (default auto)")
    lg.add_argument("--no-restart", action="store_true",
                    help="install only; by default the units that use the token are restarted (strategies are not)")
    lg.add_argument("--config", type=Path)

    wl = sub.add_parser("wal", help="check a write-ahead log or broker book as execution reads it; seal a line")
    wl_sub = wl.add_subparsers(dest="action", required=True, metavar="ACTION")
    wl_check = wl_sub.add_parser("check", help="records, format, a torn tail; or the damaged line, its offset (exit 1)")
    wl_check.add_argument("file", type=Path)
    wl_seal = wl_sub.add_parser("seal", help="checksum again a line repaired by hand (the file before is kept)")
    wl_seal.add_argument("file", type=Path)
    wl_seal.add_argument("line", type=int, help="its number, from 1 (as `algoctl wal check` names it)")

    gw = sub.add_parser("gateway", help="algo-gateway's API tokens (printed once, stored hashed), its nginx")
    gw_sub = gw.add_subparsers(dest="action", required=True, metavar="ACTION")
    tok = gw_sub.add_parser("token", help="add, list or remove an API token")
    tok_sub = tok.add_subparsers(dest="verb", required=True, metavar="VERB")
    tok_add = tok_sub.add_parser("add", help="a new token for NAME, printed once")
    tok_add.add_argument("name")
    tok_add.add_argument("--role", required=True, choices=[r.name for r in Role])
    tok_rm = tok_sub.add_parser("remove", help="revoke NAME's token")
    tok_rm.add_argument("name")
    tok_sub.add_parser("list", help="names, roles and when each was created")
    for p in (tok_add, tok_rm, tok_sub.choices["list"]):
        p.add_argument("--config", type=Path)
        p.add_argument("--credentials", type=Path, default=login.DEFAULT_CREDENTIALS_DIR,
                       help=f"where gateway_pepper lives (default {login.DEFAULT_CREDENTIALS_DIR})")

    ngx = gw_sub.add_parser("nginx-config", help="nginx's config in front of the gateway, on stdout (check it "
                            "with nginx -t before it replaces a running one)")
    ngx.add_argument("--listen", help="address:port of the TLS listener, e.g. 0.0.0.0:443 (default: the config's "
                     "gateway.listen)")
    ngx.add_argument("--cert", type=Path, required=True)
    ngx.add_argument("--key", type=Path, required=True)
    ngx.add_argument("--console", type=Path, default=nginx.CONSOLE,
                     help="the console's static files (default: the console shipped with the fleet)")
    ngx.add_argument("--grafana", help="host:port of Grafana, served under /grafana/ (default: none, 404)")
    ngx.add_argument("--user", default="www-data", help="nginx's worker user, a member of the fleet's group")
    ngx.add_argument("--config", type=Path)
    cert = gw_sub.add_parser("certificate", help="a self-signed TLS certificate for NAMES unless CERT and KEY exist")
    cert.add_argument("--cert", type=Path, required=True)
    cert.add_argument("--key", type=Path, required=True)
    cert.add_argument("names", nargs="+", help="DNS names or IP addresses (subject alternative names)")
    cert.add_argument("--config", type=Path)

    model.add_parser(sub)

    box = sub.add_parser("sandbox", help="a private systemd (PID 1 of new PID + mount namespaces) running the fleet")
    box.add_argument("--root", type=Path, default=DEFAULT_SANDBOX, help=f"sandbox state (default {DEFAULT_SANDBOX})")
    box_sub = box.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = box_sub.add_parser("start", help="boot the sandbox (units rendered for this checkout)")
    start.add_argument("--config", type=Path, help="fleet.toml to install as /etc/algo/fleet.toml inside")
    box_sub.add_parser("stop", help="stop the fleet and tear the sandbox down")
    box_sub.add_parser("status", help="is it running, and `algoctl status` inside it")
    run = box_sub.add_parser("run", help="run a command inside the sandbox, e.g. algoctl pause fno", prefix_chars="\0")
    run.add_argument("args", nargs=argparse.REMAINDER)
    for tool in ("systemctl", "journalctl"):
        p = box_sub.add_parser(tool, help=f"run {tool} inside the sandbox", prefix_chars="\0")
        p.add_argument("args", nargs=argparse.REMAINDER)

    args = parser.parse_args(argv)
    if args.command == "strategy" or (args.command == "config" and args.action in ("seed", "diff")):
        sys.exit(_registry(args))
    if args.command == "config":
        sys.exit(_config(args))
    if args.command == "units":
        for path in render_units(args.dest, args.venv, live=args.live):
            print(path)
        return
    if args.command == "status":
        print(fleet_status())
        return
    if args.command == "sandbox":
        sys.exit(_sandbox(args))
    if args.command == "wal":
        sys.exit(_wal(args))
    if args.command == "model":
        sys.exit(model.run(args))
    sys.exit(_operate(args))


def _operate(args: argparse.Namespace) -> int:
    """The commands that act on the running fleet; every failure is one line on stderr."""
    try:
        config = load_config(args.config)
        if args.command in ("pause", "resume"):
            sent = control.pause(config, args.name, resume=args.command == "resume")
            print(f"{args.command} sent to {args.name} (trace {sent.trace}); see journalctl TRACE_ID={sent.trace}")
        elif args.command == "kill-switch":
            sent = control.kill_switch(config, args.state == "on", args.reason)
            print(f"kill switch {args.state} sent (trace {sent.trace}); `algoctl status` shows algo-risk's state")
        elif args.command == "gateway":
            _gateway(args, config)
        elif args.command == "login":
            return _login(args, config.kite.root, config.kite.timeout_sec)
        elif args.command == "trace":
            day = args.day or datetime.now(IST).date()
            print(trace.render(trace.find_chain(day_dir(config.daemons.journal.directory, day), args.id)))
        elif args.stop:
            print(replay.stop())
        elif args.day is None:
            print("algoctl replay: give a DAY (YYYY-MM-DD) or --stop", file=sys.stderr)
            return 2
        else:
            print(replay.start(config.daemons.journal.directory, args.day, args.speed))
    except ConfigError as exc:
        return _config_failed(exc)
    except (ValueError, LookupError, OSError, control.BusUnreachable, login.LoginError) as exc:
        print(f"algoctl {args.command}: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        print(f"algoctl {args.command}: {' '.join(exc.cmd)} failed: {exc.stderr.strip()}", file=sys.stderr)
        return 1
    return 0


def _gateway(args: argparse.Namespace, config: FleetConfig) -> None:
    if args.action == "nginx-config":
        listen = args.listen or config.gateway.listen
        if listen is None:
            raise ValueError("nginx's TLS listener is not set: set gateway.listen in the config (or give --listen)")
        print(nginx.render(config, nginx.Site(listen=listen, cert=args.cert, key=args.key, console=args.console,
                                              grafana=args.grafana, user=args.user)), end="")
    elif args.action == "certificate":
        made = nginx.ensure_certificate(args.cert, args.key, args.names)
        print(f"{'made a self-signed certificate' if made else 'kept the certificate'} {args.cert}")
    elif args.verb == "add":
        token = gateway.add(config, args.name, args.role, args.credentials)
        print(f"{token}\n(the token of {args.name}, role {args.role}: shown this once, stored only as a hash)")
    elif args.verb == "remove":
        gateway.remove(config, args.name, args.credentials)
        print(f"removed {args.name}'s token")
    else:
        print(gateway.listing(config, args.credentials))


def _registry(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _config_failed(exc)
    return registry.run(args, config)


def _config_failed(exc: ConfigError) -> int:
    for problem in exc.problems:
        print(f"algoctl: {exc.source}: {problem}", file=sys.stderr)
    return 78


def _config(args: argparse.Namespace) -> int:
    path = args.file if args.action == "validate" else args.config
    try:
        config = load_config(path, credentials_dir=args.credentials)
        if args.action == "validate" and (problems := _host_problems(config)):
            raise ConfigError(str(path), problems)
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


def _host_problems(config: FleetConfig) -> list[Problem]:
    """What only this host can tell: live credentials, and whether algo-bus may put its socket at bus.socket."""
    problems = missing_credentials(config, "api_key", "api_secret") if config.fleet.mode == "live" else []
    if (socket_problem := socket_path_problem(config.bus.socket)) is not None:
        problems.append(Problem("bus.socket", socket_problem))
    return problems


def _login(args: argparse.Namespace, root: str, timeout: float) -> int:
    """The request token is read from the terminal (or stdin), never an argument: those show in ps."""
    from kiteconnect import KiteConnect

    api_key = login.read_credential("kite_api_key", args.credentials)
    api_secret = login.read_credential("kite_api_secret", args.credentials)
    print(f"Log in at {KiteConnect(api_key, root=root).login_url()}")
    request_token = getpass.getpass("request_token from the redirect URL: ") if sys.stdin.isatty() else sys.stdin.readline()
    token = login.login(api_key, api_secret, request_token.strip(), root, timeout=timeout)
    installed = login.install_token(token, args.credentials, encrypt=not args.no_encrypt, key=args.key)
    form = "encrypted with systemd-creds" if installed.encrypted else "as a root-only file"
    print(f"access token installed {form}: {installed.path}")
    command = ["systemctl", "try-restart", *installed.units]
    if args.no_restart:
        print(f"apply it (strategies keep running): {' '.join(command)}")
        return 0
    # systemd hands a unit its credentials at start (252 has no refresh on reload): a restart of the
    # two units that use the token; execution reconciles with Kite before it is ready again.
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)
    print(f"restarted {' '.join(installed.units)} (where running) with the new token; strategies kept running")
    return 0


def _wal(args: argparse.Namespace) -> int:
    try:
        print(wal.check(args.file) if args.action == "check" else wal.seal(args.file, args.line))
    except (wal.WalError, OSError) as exc:
        print(f"algoctl wal {args.action}: {exc}", file=sys.stderr)
        return 1
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
            print(f"sandbox running: systemd pid {sandbox.pid}, state in {sandbox.root}", flush=True)
            args.action, args.args = os.path.join(sys.prefix, "bin", "algoctl"), ["status"]
        elif args.action == "run":
            args.action, args.args = args.args[0], args.args[1:]
        os.execvp("nsenter", ["nsenter", "-t", str(sandbox.pid), "-m", "-p", args.action, *args.args])
    except SandboxError as exc:
        print(f"algoctl sandbox: {exc}", file=sys.stderr)
        return 1
