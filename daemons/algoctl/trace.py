"""`algoctl trace ID`: one tick's consequences, from the journal, with the time each hop took.

ID is anything the journal knows an event by: a trace id (the tick's event id), an event id, a
client order id (journald's ORDER_ID), a broker order id, a fill id or a signal id.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from ..journal_format import reader
from ..journal_format.layout import iso
from ..runtime.calendar import IST

ORDER = ("marketdata.tick", "strategy.signal", "risk.approved", "risk.blocked", "execution.order",
         "execution.reject", "execution.fill", "portfolio.allocation")


class TraceNotFound(LookupError):
    pass


def find_chain(day_dir: Path, ident: str) -> list[dict[str, Any]]:
    if not reader.files(day_dir):
        raise TraceNotFound(f"no journal at {day_dir}")
    hits = list(reader.events(day_dir, needle=ident))
    if not hits:
        raise TraceNotFound(f"{ident!r} does not appear in {day_dir}")
    trace = next((e["trace"] for e in hits if e["trace"] == ident or e["id"] == ident), hits[0]["trace"])
    chain = [e for e in reader.events(day_dir, needle=trace) if e["trace"] == trace or e["id"] == trace]
    chain = [e for e in chain if e["type"] in ORDER]
    chain.sort(key=lambda e: e["ts"])
    return chain


def describe(event: dict[str, Any]) -> str:
    p, t = event["payload"], event["type"]
    if t == "marketdata.tick":
        when = datetime.fromtimestamp(p["exchange_ts"] / 1e9, IST).strftime("%H:%M:%S")
        return f"{p['symbol']} last {p['last_price']} (market {when})"
    if t == "strategy.signal":
        return f"{p['strategy']} {p['side']} {p['quantity']} {p['symbol']}: {p.get('reason', '')} [{p.get('signal_id')}]"
    if t == "risk.blocked":
        return f"BLOCKED {p['side']} {p['quantity']} {p['symbol']}: {p.get('block_reason')}"
    if t == "risk.approved":
        return f"approved {p['side']} {p['quantity']} {p['symbol']}"
    if t == "execution.fill":
        return f"fill {p['fill_id']}: {p['side']} {p['quantity']} {p['symbol']} at {p['price']}"
    if t == "portfolio.allocation":
        return f"fill {p['fill_id']} allocated to {len(p['portfolios'])} portfolios"
    return (f"order {p.get('client_id')} {p.get('status')} {p.get('filled_quantity', 0)}/{p.get('quantity')} "
            f"{p.get('symbol')}{(': ' + p['reason']) if p.get('reason') else ''}")


def render(chain: list[dict[str, Any]]) -> str:
    start = prev = chain[0]["ts"]
    lines = [f"trace {chain[0]['trace']}: {len(chain)} events from {iso(start)}",
             f"{'since start':>12}  {'hop':>10}  {'topic':<17} {'source':<12} what"]
    for e in chain:
        lines.append(f"{(e['ts'] - start) / 1e6:>9.3f} ms  {(e['ts'] - prev) / 1e6:>7.3f} ms  {e['type']:<17} "
                     f"{e['source']:<12} {describe(e)}")
        prev = e["ts"]
    return "\n".join(lines)
