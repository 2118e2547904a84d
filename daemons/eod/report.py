"""The day's report from one journal day: P&L, estimated charges, trades and open positions.

Pure: reads the files of ``daemons/journal_format/layout.py`` and returns plain data; ``main.py``
writes it. A missing CSV means no trading that day (zeros); a row it cannot trust is a
``ReportError`` naming the file and line, never a silently wrong report.

Positions are kept per (engine, strategy, symbol) with average-price accounting
(``runtime/book.Position``, as risk keeps them): a closing fill realises (price - average) x the
closed quantity, and a fill that flips through zero opens the rest at its price. Strategy names
are unique in the fleet, so this is one position per (strategy, symbol). Each fill that reduces a
position is a trade, a win when it realised more than zero. Unrealised P&L marks open quantity to
the symbol's last tick of the day, or its last fill price when it had no tick. Charges follow
the fill's instrument_type, or the tick's type when execution left it empty.

Per portfolio (``[[portfolios]]``): algo-risk allocates each fill of a portfolios' net order to the
portfolios and journals it as ``portfolio.allocation`` (events.jsonl); the portfolios' positions and
P&L are built from those the same way, per (portfolio, symbol), each allocation once by fill id,
marked like the rest. Charges are per exchange order and are not shared out, so a portfolio's P&L is
gross. The allocations of a fill sum to it, so the portfolios' gross P&L adds up to that of the
strategies they follow (when only portfolios trade them).

The identity the tests check, and a reader can: for every position, realised + unrealised equals
the cash it took in minus the cash it paid out plus what it still holds at the mark, so

    gross_pnl = realised + unrealised = (sell_value - buy_value) + sum(open quantity x mark)

Rupee amounts are rounded to paise; sums are taken of the rounded parts (gross = realised +
unrealised, net = gross - charges), so every table adds up as printed.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from ..journal_format import reader
from ..journal_format.layout import COLUMNS
from ..runtime.book import Position
from ..runtime.calendar import IST
from ..runtime.envelope import PORTFOLIO_ALLOCATION
from .charges import Charges, order_charges, segment

FILLS = "fills.csv"
ORDERS = "orders.csv"

T = TypeVar("T")


class ReportError(Exception):
    """A journal file the report cannot be built from; the message names the file and line."""


@dataclass(frozen=True)
class Fill:
    line: int  # in fills.csv, for errors
    order: str  # order_id, or client_id when the broker gave none
    engine: str
    strategy: str
    symbol: str
    segment: str  # a charges.RATES key
    side: str
    quantity: int
    price: float

    @property
    def value(self) -> float:
        return self.quantity * self.price

    @property
    def signed(self) -> int:
        return self.quantity if self.side == "BUY" else -self.quantity


def rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """A journal CSV's rows with their line numbers; none when the file does not exist."""
    try:
        f = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        return
    with f:
        reader = csv.DictReader(f)
        try:
            if reader.fieldnames is None:  # created but the header never written: nothing happened
                return
            missing = [c for c in COLUMNS[path.name] if c not in reader.fieldnames]
            if missing:
                raise ReportError(f"{path}:1: missing columns: {', '.join(missing)}")
            for row in reader:
                if None in row or None in row.values():
                    raise ReportError(f"{path}:{reader.line_num}: expected {len(reader.fieldnames)} fields")
                yield reader.line_num, row
        except csv.Error as exc:  # raised before the row's line is counted
            raise ReportError(f"{path}:{reader.line_num + 1}: {exc}") from None
        except UnicodeDecodeError as exc:  # decoded a chunk ahead, so only "after" is known
            raise ReportError(f"{path}: not UTF-8 after line {reader.line_num}: {exc}") from None


def _number(kind: Callable[[str], T], row: dict[str, str], name: str) -> T:
    try:
        return kind(row[name])
    except ValueError:
        raise ValueError(f"{name} {row[name]!r} is not a number") from None


def _parse_fill(line: int, row: dict[str, str], product: str, types: dict[str, str]) -> Fill:
    side = row["side"]
    if side not in ("BUY", "SELL"):
        raise ValueError(f"side {side!r} is not BUY or SELL")
    quantity = _number(int, row, "quantity")
    if quantity <= 0:
        raise ValueError(f"quantity {quantity} is not positive")
    price = _number(float, row, "price")
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"price {row['price']!r} is not a positive number")
    for name in ("engine", "strategy", "symbol"):
        if not row[name]:
            raise ValueError(f"{name} is empty")
    order = row["order_id"] or row["client_id"]
    if not order:
        raise ValueError("order_id and client_id are both empty")
    # Execution leaves instrument_type empty when it had not seen the symbol's type; the ticks say it.
    instrument_type = row["instrument_type"] or types.get(row["symbol"], "")
    if not instrument_type:
        raise ValueError(f"instrument_type is empty and no tick of {row['symbol']} gives its type")
    return Fill(line, order, row["engine"], row["strategy"], row["symbol"], segment(instrument_type, product),
                side, quantity, price)


def read_fills(path: Path, product: str, types: dict[str, str]) -> list[Fill]:
    """Every fill in file order; the fills of one order must agree on what was ordered.

    ``types`` (symbol -> EQ/FUT/CE/PE, from the ticks) fills in an empty instrument_type.
    """
    fills: list[Fill] = []
    first: dict[str, Fill] = {}
    for line, row in rows(path):
        try:
            fill = _parse_fill(line, row, product, types)
        except ValueError as exc:
            raise ReportError(f"{path}:{line}: {exc}") from None
        seen = first.setdefault(fill.order, fill)
        if (seen.engine, seen.strategy, seen.symbol, seen.side) != (fill.engine, fill.strategy, fill.symbol, fill.side):
            raise ReportError(f"{path}:{line}: order {fill.order} was {seen.side} {seen.symbol} for "
                              f"{seen.engine}/{seen.strategy} on line {seen.line}")
        fills.append(fill)
    return fills


def read_order_states(path: Path) -> dict[str, str]:
    """Each client_id's final status: orders.csv has a row per update and the last one is the state."""
    final: dict[str, str] = {}
    for line, row in rows(path):
        if not row["client_id"]:
            raise ReportError(f"{path}:{line}: client_id is empty")
        final[row["client_id"]] = row["status"]
    return final


def read_ticks(day: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Each symbol's last traded price and its instrument type, streamed from the day's market data
    (journal_format.reader: market.zst, or the ticks inside events.jsonl of older days)."""
    marks: dict[str, float] = {}
    types: dict[str, str] = {}
    try:
        for _, payload in reader.ticks(day):
            try:
                symbol = payload["symbol"]
                marks[symbol] = float(payload["last_price"])
            except (TypeError, KeyError, ValueError):
                raise ReportError(f"{day}: tick without a symbol and last_price: {payload}") from None
            if payload.get("type"):
                types[symbol] = payload["type"]
    except reader.JournalError as exc:
        raise ReportError(str(exc)) from None
    return marks, types


@dataclass(frozen=True)
class Allocation:
    fill_id: str
    symbol: str
    price: float
    units: dict[str, int]  # portfolio id -> signed units of the fill


def read_allocations(day: Path) -> list[Allocation]:
    """The day's ``portfolio.allocation`` events in publish order, each fill once (risk tells them again
    after a restart)."""
    found: dict[str, Allocation] = {}
    try:
        for event in reader.events(day, ("orders",), needle=f'"type":"{PORTFOLIO_ALLOCATION}"'):
            p = event["payload"]
            try:
                ids, units = p["portfolios"], p["units"]
                allocation = Allocation(str(p["fill_id"]), str(p["symbol"]), float(p["price"]),
                                        dict(zip(map(str, ids), units, strict=True)))
            except (TypeError, KeyError, ValueError, AttributeError):
                raise ReportError(f"{day}: {PORTFOLIO_ALLOCATION} {event.get('id')} is malformed: {p}") from None
            if len(allocation.units) != len(ids) or not all(type(u) is int for u in units) \
                    or not (math.isfinite(allocation.price) and allocation.price > 0):
                raise ReportError(f"{day}: {PORTFOLIO_ALLOCATION} {event.get('id')} is malformed: {p}")
            found.setdefault(allocation.fill_id, allocation)
    except reader.JournalError as exc:
        raise ReportError(str(exc)) from None
    return list(found.values())


def by_portfolio(allocations: Sequence[Allocation], marks: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each portfolio's day, from its allocations: P&L before charges, fills, turnover, trades, what is open."""
    positions: dict[tuple[str, str], Position] = {}
    tallies: defaultdict[str, _Tally] = defaultdict(_Tally)
    last: dict[str, float] = {}
    for a in allocations:
        last[a.symbol] = a.price
        for pid, units in a.units.items():
            pos = positions.setdefault((pid, a.symbol), Position())
            reduces = pos.quantity != 0 and (pos.quantity > 0) != (units > 0)
            before = pos.realised
            pos.fill(units, a.price)
            t = tallies[pid]
            t.fills += 1
            t.turnover += abs(units) * a.price
            t.realised += pos.realised - before
            if reduces:
                t.trades += 1
                t.wins += pos.realised > before
                t.losses += pos.realised < before
    for (pid, symbol), pos in positions.items():
        tallies[pid].unrealised += pos.unrealised(marks.get(symbol, last[symbol]))
        tallies[pid].open_quantity += abs(pos.quantity)
    gross = ("realised", "unrealised", "gross_pnl", "fills", "turnover", "trades", "wins", "win_rate", "open_quantity")
    return {pid: {k: v for k, v in t.out().items() if k in gross} for pid, t in sorted(tallies.items())}


def _rupees(amount: float) -> float:
    return round(amount, 2) + 0.0  # + 0.0: no "-0.0" in reports


def _rate(wins: int, trades: int) -> float:
    return round(wins / trades, 4) if trades else 0.0


@dataclass
class _Tally:
    """One engine's, strategy's or symbol's (or the fleet's) numbers while the day is replayed."""

    realised: float = 0.0
    unrealised: float = 0.0
    charges: Charges = field(default_factory=Charges)
    fills: int = 0
    turnover: float = 0.0
    trades: int = 0
    wins: int = 0
    losses: int = 0
    open_quantity: int = 0  # long and short add up: what is still open, not the net

    def out(self) -> dict[str, Any]:
        realised, unrealised = _rupees(self.realised), _rupees(self.unrealised)
        gross = _rupees(realised + unrealised)
        charges = self.charges.breakdown()["total"]
        return {
            "realised": realised,
            "unrealised": unrealised,
            "gross_pnl": gross,
            "charges": charges,
            "net_pnl": _rupees(gross - charges),
            "fills": self.fills,
            "turnover": _rupees(self.turnover),
            "trades": self.trades,
            "wins": self.wins,
            "win_rate": _rate(self.wins, self.trades),
            "open_quantity": self.open_quantity,
        }


def build_report(day_dir: Path, product: str) -> dict[str, Any]:
    """The report of one journal day; ``product`` (MIS or CNC) picks the equity charges."""
    marks, types = read_ticks(day_dir)
    fills = read_fills(day_dir / FILLS, product, types)
    states = read_order_states(day_dir / ORDERS)

    total = _Tally()
    by_engine: defaultdict[str, _Tally] = defaultdict(_Tally)
    by_strategy: defaultdict[str, _Tally] = defaultdict(_Tally)
    by_symbol: defaultdict[str, _Tally] = defaultdict(_Tally)

    def tallies(engine: str, strategy: str, symbol: str) -> tuple[_Tally, ...]:
        return total, by_engine[engine], by_strategy[strategy], by_symbol[symbol]

    positions: dict[tuple[str, str, str], Position] = {}
    last_price: dict[str, float] = {}
    orders: dict[str, tuple[Fill, float]] = {}  # order -> (its first fill, its value)
    buy_value = sell_value = 0.0
    cumulative = peak = drawdown = 0.0  # realised P&L after each fill; the day starts at 0
    for fill in fills:
        pos = positions.setdefault((fill.engine, fill.strategy, fill.symbol), Position())
        reduces = pos.quantity != 0 and (pos.quantity > 0) != (fill.signed > 0)
        before = pos.realised
        pos.fill(fill.signed, fill.price)
        pnl = pos.realised - before
        last_price[fill.symbol] = fill.price
        if fill.side == "BUY":
            buy_value += fill.value
        else:
            sell_value += fill.value
        first, value = orders.get(fill.order, (fill, 0.0))
        orders[fill.order] = (first, value + fill.value)
        for t in tallies(fill.engine, fill.strategy, fill.symbol):
            t.fills += 1
            t.turnover += fill.value
            t.realised += pnl
            if reduces:
                t.trades += 1
                t.wins += pnl > 0
                t.losses += pnl < 0
        cumulative += pnl
        peak = max(peak, cumulative)
        drawdown = max(drawdown, peak - cumulative)

    for first, value in orders.values():
        cost = order_charges(first.segment, first.side, value)
        for t in tallies(first.engine, first.strategy, first.symbol):
            t.charges += cost

    open_positions: list[dict[str, Any]] = []
    for (engine, strategy, symbol), pos in sorted(positions.items()):
        if not pos.quantity:
            continue
        mark = marks.get(symbol, last_price[symbol])
        unrealised = pos.unrealised(mark)
        for t in tallies(engine, strategy, symbol):
            t.unrealised += unrealised
            t.open_quantity += abs(pos.quantity)
        open_positions.append({
            "engine": engine, "strategy": strategy, "symbol": symbol, "quantity": pos.quantity,
            "average": _rupees(pos.average), "mark": _rupees(mark), "unrealised": _rupees(unrealised),
        })

    summary = total.out()
    statuses = list(states.values())
    totals = {
        "fills": total.fills,
        "orders": len(orders),
        "rejected": statuses.count("REJECTED"),
        "cancelled": statuses.count("CANCELLED"),
        "buy_value": _rupees(buy_value),
        "sell_value": _rupees(sell_value),
        "turnover": summary["turnover"],
        "realised": summary["realised"],
        "unrealised": summary["unrealised"],
        "gross_pnl": summary["gross_pnl"],
        "charges": total.charges.breakdown(),
        "net_pnl": summary["net_pnl"],
        "trades": total.trades,
        "wins": total.wins,
        "losses": total.losses,
        "win_rate": summary["win_rate"],
        "max_drawdown": _rupees(drawdown),
    }
    return {
        "day": day_dir.name,
        "generated_at": datetime.now(IST).isoformat(timespec="seconds"),
        "product": product,
        "totals": totals,
        "by_engine": {name: t.out() for name, t in sorted(by_engine.items())},
        "by_strategy": {name: t.out() for name, t in sorted(by_strategy.items())},
        "by_symbol": {name: t.out() for name, t in sorted(by_symbol.items())},
        "positions": open_positions,
        "by_portfolio": by_portfolio(read_allocations(day_dir), marks),
    }


_CHARGES = {"brokerage": "Brokerage", "stt": "STT", "transaction": "Exchange transaction", "sebi": "SEBI fees",
            "stamp": "Stamp duty", "gst": "GST", "total": "Total"}


def _money(amount: float) -> str:
    return f"{amount:,.2f}"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]], names: int = 1) -> list[str]:
    """A Markdown table: the first ``names`` columns left-aligned, the numbers after them right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * names + "---:|" * (len(header) - names)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _groups(title: str, column: str, groups: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"## {title}", ""]
    if not groups:
        return lines + ["No fills.", ""]
    header = (column, "net P&L", "gross P&L", "realised", "unrealised", "charges", "fills", "turnover", "trades",
              "win rate", "open qty")
    rows = [
        (name, _money(g["net_pnl"]), _money(g["gross_pnl"]), _money(g["realised"]), _money(g["unrealised"]),
         _money(g["charges"]), g["fills"], _money(g["turnover"]), g["trades"], f"{g['win_rate']:.1%}",
         g["open_quantity"])
        for name, g in groups.items()
    ]
    return lines + _table(header, rows) + [""]


def _portfolios(groups: dict[str, dict[str, Any]]) -> list[str]:
    """Only on a fleet with portfolios: their P&L before charges (charges are per exchange order)."""
    if not groups:
        return []
    header = ("portfolio", "gross P&L", "realised", "unrealised", "fills", "turnover", "trades", "win rate", "open qty")
    rows = [(name, _money(g["gross_pnl"]), _money(g["realised"]), _money(g["unrealised"]), g["fills"],
             _money(g["turnover"]), g["trades"], f"{g['win_rate']:.1%}", g["open_quantity"]) for name, g in groups.items()]
    return ["## By portfolio", "", "Before charges, which are per exchange order and not shared out.", "",
            *_table(header, rows), ""]


def render_markdown(report: dict[str, Any]) -> str:
    """The report for people: what the day made, where, at what cost, and what is still open."""
    t = report["totals"]
    lines = [
        f"# End-of-day report: {report['day']}",
        "",
        f"Generated {report['generated_at']} from the journal. Amounts in rupees; "
        f"equity charged at {report['product']} rates.",
        "",
        "## Totals",
        "",
        *_table(("", "value"), [
            ("Net P&L", _money(t["net_pnl"])),
            ("Gross P&L", _money(t["gross_pnl"])),
            ("Realised", _money(t["realised"])),
            ("Unrealised", _money(t["unrealised"])),
            ("Charges (estimated)", _money(t["charges"]["total"])),
            ("Fills", t["fills"]),
            ("Orders executed", t["orders"]),
            ("Orders rejected", t["rejected"]),
            ("Orders cancelled", t["cancelled"]),
            ("Buy value", _money(t["buy_value"])),
            ("Sell value", _money(t["sell_value"])),
            ("Turnover", _money(t["turnover"])),
            ("Closed trades", t["trades"]),
            ("Wins / losses", f"{t['wins']} / {t['losses']}"),
            ("Win rate", f"{t['win_rate']:.1%}"),
            ("Max drawdown (realised)", _money(t["max_drawdown"])),
        ]),
        "",
        *_groups("By engine", "engine", report["by_engine"]),
        *_groups("By strategy", "strategy", report["by_strategy"]),
        *_groups("By symbol", "symbol", report["by_symbol"]),
        *_portfolios(report["by_portfolio"]),
        "## Open positions",
        "",
    ]
    if report["positions"]:
        lines += _table(("engine", "strategy", "symbol", "quantity", "average", "mark", "unrealised"), [
            (p["engine"], p["strategy"], p["symbol"], p["quantity"], _money(p["average"]), _money(p["mark"]),
             _money(p["unrealised"]))
            for p in report["positions"]
        ], names=3)
    else:
        lines.append("None: every position was closed.")
    lines += [
        "",
        "## Charges",
        "",
        *_table(("charge", "amount"), [(_CHARGES[name], _money(amount)) for name, amount in t["charges"].items()]),
        "",
        "_Charges are estimates from Zerodha's published rates (daemons/eod/charges.py), "
        "not the contract note._",
        "",
    ]
    return "\n".join(lines)
