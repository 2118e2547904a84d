"""``algo-kite-emulator``: Kite on loopback, so a trader can try live mode with no broker account.

    algo-kite-emulator --port 8765 --ws-port 8766 --price NSE:INFY=1500 --walk 1

Point the fleet's ``[kite] root`` at the printed ``root`` (and the ticker at ``ws_url``); drive prices
and faults over ``/__emulator__/`` (docs/KITE_EMULATOR.md). Stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from .emulator import Emulator


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or ":" not in key:
        raise argparse.ArgumentTypeError(f"expected EXCH:SYMBOL=VALUE, got {text!r}")
    return key, value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="algo-kite-emulator", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=8765, help="REST port on 127.0.0.1 (0: any free port)")
    p.add_argument("--ws-port", type=int, default=8766, help="ticker WebSocket port (0: any free port)")
    p.add_argument("--api-key", default="emulator_api_key")
    p.add_argument("--api-secret", default="emulator_api_secret", help="for generate_session's checksum")
    p.add_argument("--access-token", default="emulator_access_token", help="valid from the start")
    p.add_argument("--instruments", type=Path, help="an instruments dump (CSV) to serve and trade instead of "
                   "the emulator's own")
    p.add_argument("--instrument", type=_pair, action="append", default=[], metavar="EXCH:SYMBOL=TOKEN",
                   help="add an instrument the dump lacks (repeatable)")
    p.add_argument("--price", type=_pair, action="append", default=[], metavar="EXCH:SYMBOL=PRICE",
                   help="opening price, also the close that change%% is computed from (repeatable)")
    p.add_argument("--walk", type=float, default=0.0, metavar="SECONDS",
                   help="move every priced instrument by -1/0/+1 tick this often (0: prices move only on request)")
    p.add_argument("--heartbeat", type=float, default=1.0, metavar="SECONDS", help="ticker heartbeat interval")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return p


def walk(emulator: Emulator, keys: list[str], interval: float, stop: threading.Event) -> None:
    """A random walk by whole ticks, so subscribed strategies see a market that moves."""
    rng = random.Random()
    while not stop.wait(interval):
        for key in keys:
            instrument = emulator.instruments.get(key)
            tick = emulator.tick(instrument.token) if instrument else None
            if instrument is None or tick is None:
                continue
            price = max(instrument.tick_size, tick.last_price + rng.choice((-1, 0, 1)) * instrument.tick_size)
            quantity = instrument.lot_size * rng.randint(1, 10)
            emulator.push_tick(instrument.token, last_price=round(price, 8), last_traded_quantity=quantity,
                               volume_traded=tick.volume_traded + quantity)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        emulator = Emulator(port=args.port, ws_port=args.ws_port, api_key=args.api_key, api_secret=args.api_secret,
                            access_token=args.access_token, instruments_csv=args.instruments,
                            heartbeat_interval=args.heartbeat)
    except (OSError, ValueError) as exc:
        print(f"algo-kite-emulator: {exc}", file=sys.stderr)
        return 2
    try:
        for key, token in args.instrument:
            exchange, symbol = key.split(":", 1)
            emulator.add_instrument(exchange, symbol, int(token))
        prices = [(key, float(price)) for key, price in args.price]
        for key, _ in prices:
            if emulator.instruments.get(key) is None:
                raise ValueError(f"--price {key}: unknown instrument (add it with --instrument {key}=TOKEN)")
    except ValueError as exc:
        emulator.close()
        print(f"algo-kite-emulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with emulator:
        for key, price in prices:
            instrument = emulator.instruments.get(key)
            assert instrument is not None  # checked above
            emulator.push_tick(instrument.token, last_price=price, close=price)
        if args.walk > 0:
            threading.Thread(target=walk, args=(emulator, [k for k, _ in prices], args.walk, stop),
                             name="kite-emulator-walk", daemon=True).start()
        print(f"kite emulator: root={emulator.root} ws_url={emulator.ws_url} api_key={emulator.api_key} "
              f"access_token={emulator.access_token}", flush=True)
        stop.wait()
    return 0
