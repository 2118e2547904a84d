"""A Prometheus-style histogram as plain numbers: for code on a hot path or without a registry (the bus
client's delivery lag, a model strategy's inference times), read by a collector at scrape time."""

from __future__ import annotations


class Samples:
    __slots__ = ("bounds", "counts", "n", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.n += 1
        self.total += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative, as the exposition format wants them."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            out.append((repr(bound), running))
        out.append(("+Inf", self.n))
        return out
