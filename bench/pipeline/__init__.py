"""The pipeline benchmark: tick -> order through the real fleet under systemd (README.md)."""
