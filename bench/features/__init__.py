"""Candles and features: CPU per tick and payload encodings (README.md)."""
