"""A Kite Connect emulator: REST routes, order book and binary ticker on loopback, with fault switches.

Tests run the real ``kiteconnect`` client against it; a trader runs ``algo-kite-emulator`` to try
live mode offline. Design and limits: docs/KITE_EMULATOR.md.
"""

from .book import OrderRule
from .emulator import Emulator
from .packets import Level, Tick

__all__ = ["Emulator", "Level", "OrderRule", "Tick"]
