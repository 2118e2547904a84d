"""algo-execution's metrics read at scrape time from the governor and the live broker adapter."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .governor import Governor

if TYPE_CHECKING:  # kiteconnect brings Twisted along: paper mode never imports it
    from .kite_broker import KiteBroker

KITE_EVENTS = ("rate_limited", "ambiguous", "adopted", "resent")


class BudgetCollector(Collector):
    def __init__(self, governor: Governor) -> None:
        self.governor = governor

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily("algo_execution_order_budget_remaining", "Orders the rate limits still allow",
                              labels=["window"])
        now = time.monotonic()
        for window in ("second", "minute", "day"):
            g.add_metric([window], self.governor.remaining(window, now))
        yield g


class KiteCollector(Collector):
    """Live mode only: the access token's remaining life and what the adapter had to work around."""

    def __init__(self, broker: KiteBroker) -> None:
        self.broker = broker

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily("algo_broker_token_expiry_seconds", "Seconds until the Kite access token expires "
                                "(<= 0: expired or refused by Kite)", value=self.broker.token_expiry_seconds())
        c = CounterMetricFamily("algo_execution_kite_events", "Kite API trouble worked around: rate_limited "
                                "(429, retried), ambiguous (place outcome unknown), adopted (found by tag), "
                                "resent (not found, placed again)", labels=["event"])
        for event in KITE_EVENTS:
            c.add_metric([event], self.broker.stats[event])
        yield c
