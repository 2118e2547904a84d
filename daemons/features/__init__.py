"""Candles and features, computed once for the whole fleet (by algo-marketdata) from the ticks it publishes.

A library, not a daemon: pure computation keyed on exchange time, so a replayed day gives the same bars
and features as the original run. docs/ARCHITECTURE.md, "Candles and features".
"""
