"""algo-gateway benchmarks (README.md)."""
