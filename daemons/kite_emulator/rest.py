"""Kite Connect's REST routes, with its envelopes and status codes, plus the ``/__emulator__`` admin routes.

Order of checks per request: admin routes (never faulted), 429 fault, route, authorization,
handler, then the swallow and slow faults on the way out.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..runtime.calendar import IST
from . import datafiles
from .errors import KiteError, input_error
from .packets import DEPTH_LEVELS, Level, Tick
from .servers import LoopbackServer

if TYPE_CHECKING:
    from .emulator import Emulator

log = logging.getLogger("algo.kite_emulator.rest")

ADMIN = "/__emulator__/"
Params = dict[str, list[str]]


@dataclass(frozen=True)
class Csv:
    """A handler result served as a CSV body instead of the JSON envelope."""

    text: str


@dataclass(frozen=True)
class Route:
    """A Kite route: ``auth`` says whether it needs a valid access token."""

    method: str
    pattern: re.Pattern[str]
    handler: Callable[[Emulator, dict[str, str], Params], Any]
    auth: bool = True


def one(params: Params, name: str, default: str = "") -> str:
    values = params.get(name)
    return values[-1] if values else default


def flat(params: Params) -> dict[str, str]:
    return {k: v[-1] for k, v in params.items()}


# -- handlers: (emulator, path groups, params) -> data ---------------------------------------------

def session_create(em: Emulator, _: dict[str, str], p: Params) -> Any:
    """The profile plus the session's keys, as Kite answers a login."""
    token = em.sessions.create(one(p, "api_key"), one(p, "request_token"), one(p, "checksum"))
    return dict(datafiles.load("profile.json"), api_key=em.sessions.api_key, access_token=token,
                public_token=token[:16], enctoken="", refresh_token="", silo="",
                login_time=datetime.now(IST).strftime("%Y-%m-%d %H:%M:%S"))


def session_delete(em: Emulator, _: dict[str, str], p: Params) -> Any:
    em.sessions.invalidate(one(p, "api_key"), one(p, "access_token"))
    return True


def margins_segment(_em: Emulator, g: dict[str, str], _: Params) -> Any:
    margins = datafiles.load("margins.json")
    if g["segment"] not in margins:
        raise input_error(f"Invalid segment `{g['segment']}`: equity or commodity.")
    return margins[g["segment"]]


def instruments(em: Emulator, g: dict[str, str], _: Params) -> Csv:
    return Csv(em.instruments.csv(g.get("exchange")))


def historical(_em: Emulator, g: dict[str, str], p: Params) -> Any:
    for name in ("from", "to"):
        try:
            datetime.strptime(one(p, name), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise input_error(f"Invalid `{name}`: expected YYYY-MM-DD HH:MM:SS.") from None
    # The same candles whatever the token, interval and dates: enough to exercise parsing.
    candles = datafiles.load("historical.json")["candles"]
    return {"candles": candles if one(p, "oi") == "1" else [c[:6] for c in candles]}


def _stamp(epoch: int) -> str | None:
    return datetime.fromtimestamp(epoch, IST).strftime("%Y-%m-%d %H:%M:%S") if epoch else None


def _depth(levels: tuple[Level, ...]) -> list[dict[str, Any]]:
    padded = (list(levels) + [Level()] * DEPTH_LEVELS)[:DEPTH_LEVELS]
    return [{"price": lv.price, "quantity": lv.quantity, "orders": lv.orders} for lv in padded]


def _full_quote(tick: Tick) -> dict[str, Any]:
    """A full quote (Kite's shape) from the emulator's state. Circuit limits are +-20% of the close (or last
    price), an invention: the emulator enforces none."""
    ref = tick.close or tick.last_price
    return {
        "instrument_token": tick.instrument_token, "timestamp": _stamp(tick.exchange_timestamp),
        "last_trade_time": _stamp(tick.last_trade_time), "last_price": tick.last_price,
        "last_quantity": tick.last_traded_quantity, "buy_quantity": tick.total_buy_quantity,
        "sell_quantity": tick.total_sell_quantity, "volume": tick.volume_traded,
        "average_price": tick.average_traded_price, "oi": tick.oi, "oi_day_high": tick.oi_day_high,
        "oi_day_low": tick.oi_day_low, "net_change": round(tick.last_price - tick.close, 8) if tick.close else 0,
        "lower_circuit_limit": round(ref * 0.8, 2), "upper_circuit_limit": round(ref * 1.2, 2),
        "ohlc": {"open": tick.open, "high": tick.high, "low": tick.low, "close": tick.close},
        "depth": {"buy": _depth(tick.buy), "sell": _depth(tick.sell)},
    }


def _quote_kind(kind: str) -> Callable[[Emulator, dict[str, str], Params], Any]:
    """GET /quote, /quote/ohlc, /quote/ltp: the emulator's state where it has a price, else its
    shipped quote; instruments with neither are left out, as Kite leaves out unknown ones."""
    fields = {"quote": None, "ohlc": ("instrument_token", "last_price", "ohlc"),
              "ltp": ("instrument_token", "last_price")}[kind]

    def handler(em: Emulator, _: dict[str, str], p: Params) -> Any:
        shipped = datafiles.load("quotes.json")
        out = {}
        for key in p.get("i", []):
            instrument = em.instruments.get(key)
            tick = em.tick(instrument.token) if instrument else None
            full = _full_quote(tick) if tick is not None else shipped.get(key)
            if full is not None:
                out[key] = full if fields is None else {k: full[k] for k in fields}
        return out

    return handler


# The emulator's margin model for POST /margins/orders (an invention, not Kite's SPAN): this share of
# price x quantity, by exchange; a price of 0 (a market order) is the instrument's last price.
MARGIN_RATE = {"NFO": 0.12, "BFO": 0.12, "MCX": 0.12, "CDS": 0.05}  # else (NSE, BSE) 0.20
NO_CHARGES = {"transaction_tax": 0, "transaction_tax_type": "stt", "exchange_turnover_charge": 0, "sebi_turnover_charge": 0,
              "brokerage": 0, "stamp_duty": 0, "gst": {"igst": 0, "cgst": 0, "sgst": 0, "total": 0}, "total": 0}


def order_margins(em: Emulator, _: dict[str, str], p: Params) -> Any:
    try:
        orders = json.loads(one(p, "json") or "null")
        if not isinstance(orders, list):
            raise TypeError("not a list")
        out = []
        for o in orders:
            instrument = em.instruments.get(f"{o['exchange']}:{o['tradingsymbol']}")
            if instrument is None:
                raise input_error(f"Invalid `tradingsymbol` {o['tradingsymbol']}.")
            tick = em.tick(instrument.token)
            price = float(o.get("price") or 0) or (tick.last_price if tick is not None else 0.0)
            total = round(int(o["quantity"]) * price * MARGIN_RATE.get(instrument.exchange, 0.20), 2)
            out.append({"type": "equity", "tradingsymbol": instrument.tradingsymbol, "exchange": instrument.exchange,
                        "span": 0, "exposure": 0, "option_premium": 0, "additional": 0, "bo": 0, "cash": 0,
                        "var": total, "pnl": {"realised": 0, "unrealised": 0}, "leverage": 1, "charges": NO_CHARGES,
                        "total": total})
    except (KeyError, TypeError, ValueError, AttributeError):
        raise input_error("Invalid order margins request: a JSON list of orders was expected.") from None
    return out


def place_order(em: Emulator, g: dict[str, str], p: Params) -> Any:
    return {"order_id": em.book.place(g["variety"], flat(p))}


def modify_order(em: Emulator, g: dict[str, str], p: Params) -> Any:
    return {"order_id": em.book.modify(g["variety"], g["order_id"], flat(p))}


def cancel_order(em: Emulator, g: dict[str, str], _: Params) -> Any:
    return {"order_id": em.book.cancel(g["variety"], g["order_id"])}


def _static(name: str) -> Callable[[Emulator, dict[str, str], Params], Any]:
    return lambda _em, _g, _p: datafiles.load(name)


ROUTES = [
    Route(m, re.compile(pattern + "$"), handler, auth) for m, pattern, handler, auth in [
        ("POST", r"/session/token", session_create, False),
        ("DELETE", r"/session/token", session_delete, False),
        ("GET", r"/user/profile", _static("profile.json"), True),
        ("GET", r"/user/margins", _static("margins.json"), True),
        ("GET", r"/user/margins/(?P<segment>\w+)", margins_segment, True),
        ("POST", r"/margins/orders", order_margins, True),
        ("POST", r"/orders/(?P<variety>\w+)", place_order, True),
        ("PUT", r"/orders/(?P<variety>\w+)/(?P<order_id>\w+)", modify_order, True),
        ("DELETE", r"/orders/(?P<variety>\w+)/(?P<order_id>\w+)", cancel_order, True),
        ("GET", r"/orders", lambda em, g, p: em.book.orders(), True),
        ("GET", r"/orders/(?P<order_id>\w+)", lambda em, g, p: em.book.history(g["order_id"]), True),
        ("GET", r"/orders/(?P<order_id>\w+)/trades", lambda em, g, p: em.book.trades(g["order_id"]), True),
        ("GET", r"/trades", lambda em, g, p: em.book.trades(), True),
        ("GET", r"/portfolio/positions", lambda em, g, p: em.book.positions(), True),
        ("GET", r"/portfolio/holdings", _static("holdings.json"), True),
        ("GET", r"/quote", _quote_kind("quote"), True),
        ("GET", r"/quote/ohlc", _quote_kind("ohlc"), True),
        ("GET", r"/quote/ltp", _quote_kind("ltp"), True),
        ("GET", r"/instruments", instruments, False),  # the dump is public at Kite too
        ("GET", r"/instruments/historical/(?P<token>\d+)/(?P<interval>\w+)", historical, True),
        ("GET", r"/instruments/(?P<exchange>[A-Z]+)", instruments, False),
    ]
]


def admin(em: Emulator, method: str, path: str, body: Any) -> Any:
    """The switches over HTTP, for a trader's emulator in another process (docs/KITE_EMULATOR.md)."""
    spec = body if isinstance(body, dict) else {}
    match method, path.removeprefix(ADMIN):
        case "GET", "state":
            return {"faults": em.faults.describe(), "subscriptions": em.subscriptions(),
                    "held_replies": em.held_replies, "orders": em.book.orders()}
        case "POST", "faults":
            em.configure_faults(spec)
            return em.faults.describe()
        case "DELETE", "faults":
            em.faults.clear()
            return em.faults.describe()
        case "POST", "price":
            em.set_price(spec["instrument"], float(spec["price"]))
            return True
        case "POST", "tick":
            em.push_tick(int(spec.pop("instrument_token")), **spec)
            return True
        case "POST", "rules":
            return vars(em.add_rule(**spec))
        case "DELETE", "rules":
            em.clear_rules()
            return True
    raise KiteError("GeneralException", f"No admin route {method} {path}", 404)


class RestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's requests session expects
    disable_nagle_algorithm = True  # headers and body are two writes: Nagle would add 40 ms per reply
    server: LoopbackServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("rest %s: " + format, self.client_address[0], *args)

    def _dispatch(self, method: str) -> None:
        em: Emulator = self.server.owner
        url = urlsplit(self.path)
        params = parse_qs(url.query, keep_blank_values=True)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path.startswith(ADMIN):
            self._admin(em, method, url.path, raw)
            return
        if "x-www-form-urlencoded" in self.headers.get("Content-Type", ""):  # POST/PUT parameters
            for key, values in parse_qs(raw.decode(), keep_blank_values=True).items():
                params.setdefault(key, []).extend(values)
        elif "json" in self.headers.get("Content-Type", ""):  # the margin routes take a JSON body, whole
            params["json"] = [raw.decode()]
        try:
            if em.faults.take_rate_limit(url.path):
                raise KiteError("NetworkException", "Too many requests", 429)
            route, groups = self._route(method, url.path)
            if route.auth:
                em.sessions.check_header(self.headers.get("Authorization"))
            result = route.handler(em, groups, params)
        except KiteError as exc:
            self._error(exc)
            return
        except Exception:  # an emulator bug: answer as Kite does for its own failures, and say so in the log
            log.exception("%s %s failed", method, url.path)
            self._error(KiteError("GeneralException", "The emulator failed on this request (see its log)", 500))
            return
        if route.handler is place_order and em.faults.take_swallow():
            em.hold_reply(self.connection, self.server.stopping)
            self.close_connection = True
            return
        delay = em.faults.take_delay(url.path)
        if delay:
            self.server.stopping.wait(delay)
        if isinstance(result, Csv):
            self._csv(result.text)
        else:
            self._json(200, {"status": "success", "data": result})

    def _admin(self, em: Emulator, method: str, path: str, raw: bytes) -> None:
        try:
            data = admin(em, method, path, json.loads(raw or b"{}"))
        except KiteError as exc:
            self._error(exc)
        except (ValueError, KeyError, TypeError) as exc:  # bad JSON or arguments
            self._error(KiteError("InputException", f"{type(exc).__name__}: {exc}", 400))
        else:
            self._json(200, {"status": "success", "data": data})

    def _route(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        for route in ROUTES:
            if route.method == method and (m := route.pattern.match(path)):
                return route, m.groupdict()
        raise KiteError("GeneralException", "Route not found", 404)

    def _error(self, exc: KiteError) -> None:
        self._json(exc.status, {"status": "error", "error_type": exc.error_type, "message": exc.message, "data": None})

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, "application/json", json.dumps(payload).encode())

    def _csv(self, text: str) -> None:
        body = text.encode()
        if "gzip" in self.headers.get("Accept-Encoding", ""):  # as the real dump is served
            self._send(200, "text/csv", gzip.compress(body), ("Content-Encoding", "gzip"))
        else:
            self._send(200, "text/csv", body)

    def _send(self, status: int, content_type: str, body: bytes, *headers: tuple[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def wait_for_disconnect(sock: socket.socket, stopping: threading.Event) -> None:
    """Block until the peer closes ``sock`` (or the emulator stops): a reply held, never sent."""
    while not stopping.is_set():
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            try:
                if not sock.recv(1, socket.MSG_PEEK):
                    return
            except OSError:
                return
            stopping.wait(0.1)  # the client sent more: it is still there
