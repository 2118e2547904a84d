"""Vectorised portfolios against a per-portfolio loop (README.md)."""
