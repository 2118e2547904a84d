"""An approval (``risk.approved``) becomes an order: decoded, given its deterministic client id, deduplicated,
checked, written to the ledger before the broker hears of it, then handed to the send path; or adopted, when
the broker has it already. Whatever refuses it is told (``execution.reject``) with the reason, never dropped.
"""

from __future__ import annotations

import logging

from ..runtime.envelope import Event
from ..runtime.instrument import InstrumentFacts
from ..runtime.tick_watch import TickWatch
from .bookkeeper import Bookkeeper
from .clientid import client_id
from .orders import BadOrder, Order
from .outcomes import Outcomes
from .refusals import DAY_UNOPENED_REFUSAL, DISK_FULL_REFUSAL
from .sender import Sender
from .unclaimed import Unclaimed

log = logging.getLogger("algo.execution")


class Intake:
    """Approvals into the send path's open day (``sender.day``)."""

    def __init__(self, sender: Sender, keeper: Bookkeeper, tell: Outcomes, unclaimed: Unclaimed,
                 watch: TickWatch) -> None:
        self.sender = sender
        self.keeper = keeper
        self.tell = tell
        self.unclaimed = unclaimed
        self.watch = watch

    def take(self, event: Event, unopened: str) -> None:
        """One approval. ``unopened``: why today's files could not be opened ("" while they are)."""
        if unopened:
            self.tell.refused(event, DAY_UNOPENED_REFUSAL.format(unopened))
            return
        if (day := self.sender.day) is None:  # a standby: the active sends it (a takeover asks risk again)
            return
        p = event.payload
        signal_id = p.get("signal_id")
        if not signal_id:
            self.tell.refused(event, "approved order without a signal_id (no deterministic client id possible)")
            return
        cid = client_id(str(signal_id))
        if cid in day.orders:  # the same approval delivered twice (a replayed or re-sent event)
            log.info("order %s already known; not sent again", cid, extra={"ORDER_ID": cid, "TRACE_ID": event.trace})
            return
        try:
            facts = InstrumentFacts.of_order(p) or self.sender.instruments.get(str(p.get("symbol")))
            order = Order.from_approved(cid, p, facts.type if facts else "", facts.exchange if facts else "",
                                        event.trace)
        except BadOrder as exc:
            self.tell.refused(event, str(exc))
            return
        except ValueError as exc:
            self.tell.refused(event, f"malformed approved order: {exc}")
            return
        self.watch.add(order.symbol)  # its fills (paper) and margin marks from now on
        if facts is not None:
            self.sender.learn(order.symbol, facts)
            self.sender.margin_model.first_mark(order.symbol, p.get("tick_price"), facts.strike)
        found = self.unclaimed.claim(cid)  # the broker has it already: adopted, whatever its age
        if found is None and (why := self.sender.unsendable(order)):
            self.tell.refused(event, why, cid)
            return
        try:
            day.ledger.add(order)  # written before the broker hears of it
        except OSError as exc:
            self.tell.refused(event, DISK_FULL_REFUSAL.format(exc.strerror or exc), cid)
            return
        if found is not None:
            self.keeper.adopt(order, *found)
        else:
            self.sender.when_known(order)
