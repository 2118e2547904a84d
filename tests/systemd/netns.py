"""A network namespace with nothing but its loopback, for a sandbox whose fleet must not share the host's ports
or reach beyond itself (scripts/test.sh runs such sandboxes beside the shared one)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def loopback_only(name: str) -> Iterator[str]:
    """``name`` made afresh (one a killed run left is removed first), its loopback up; deleted afterwards."""
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
