"""What algo-execution knows of each order, rebuilt from the write-ahead log on start. Its status
changes only through the ledger (``ledger.py``), which holds the table of allowed transitions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NEW = "NEW"  # written to the log, not yet acknowledged by the broker; the other statuses are the broker's
SIDES = ("BUY", "SELL")
ORDER_TYPES = ("MARKET", "LIMIT")


class BadOrder(ValueError):
    """An approved order that cannot be sent as it is; the reason goes back as execution.reject."""


@dataclass
class Order:
    client_id: str
    signal_id: str
    engine: str
    strategy: str
    symbol: str
    side: str
    quantity: int
    order_type: str
    limit_price: float | None
    instrument_type: str
    exchange: str  # Kite's, from the tick (live orders need it; "" on the paper broker is fine)
    trace: str
    tick_ts: int = 0
    order_id: str = ""
    status: str = NEW
    filled: int = 0
    average: float = 0.0
    reason: str = ""
    fills: dict[str, dict[str, Any]] = field(default_factory=dict)  # fill_id -> the execution.fill payload

    @classmethod
    def from_approved(cls, client_id: str, p: dict[str, Any], instrument_type: str, exchange: str,
                      trace: str) -> Order:
        """Validate an approved signal; a bad one is refused here, never half-sent."""
        try:
            order = cls(client_id, str(p["signal_id"]), str(p["engine"]), str(p["strategy"]), str(p["symbol"]),
                        p["side"], p["quantity"], p.get("order_type", "MARKET"), p.get("limit_price"),
                        instrument_type, exchange, trace, int(p.get("tick_ts") or 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadOrder(f"malformed approved order: missing or bad {exc}") from None
        if order.side not in SIDES:
            raise BadOrder(f"side {order.side!r} is not BUY or SELL")
        if not isinstance(order.quantity, int) or isinstance(order.quantity, bool) or order.quantity <= 0:
            raise BadOrder(f"quantity {order.quantity!r} is not a positive whole number")
        if order.order_type not in ORDER_TYPES:
            raise BadOrder(f"order_type {order.order_type!r} is not MARKET or LIMIT")
        if order.order_type == "LIMIT" and not (isinstance(order.limit_price, (int, float)) and order.limit_price > 0):
            raise BadOrder(f"a LIMIT order needs a positive limit_price, got {order.limit_price!r}")
        return order

    def intent(self) -> dict[str, Any]:
        """The write-ahead record: everything needed to send it again after a crash."""
        return {"op": "new", "client_id": self.client_id, "signal_id": self.signal_id, "engine": self.engine,
                "strategy": self.strategy, "symbol": self.symbol, "side": self.side, "quantity": self.quantity,
                "order_type": self.order_type, "limit_price": self.limit_price,
                "instrument_type": self.instrument_type, "exchange": self.exchange, "trace": self.trace,
                "tick_ts": self.tick_ts}

    @classmethod
    def from_intent(cls, r: dict[str, Any]) -> Order:
        return cls(r["client_id"], r["signal_id"], r["engine"], r["strategy"], r["symbol"], r["side"], r["quantity"],
                   r["order_type"], r["limit_price"], r["instrument_type"], r.get("exchange", ""), r["trace"],
                   r.get("tick_ts", 0))

    def event(self) -> dict[str, Any]:
        """The execution.order payload."""
        return {"client_id": self.client_id, "order_id": self.order_id, "signal_id": self.signal_id,
                "engine": self.engine, "strategy": self.strategy, "symbol": self.symbol,
                "instrument_type": self.instrument_type, "side": self.side, "quantity": self.quantity,
                "order_type": self.order_type, "limit_price": self.limit_price, "status": self.status,
                "filled_quantity": self.filled, "average_price": round(self.average, 4), "reason": self.reason}
