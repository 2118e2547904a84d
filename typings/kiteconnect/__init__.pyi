from kiteconnect.connect import KiteConnect as KiteConnect
from kiteconnect.ticker import KiteTicker as KiteTicker

__all__ = ["KiteConnect", "KiteTicker"]
