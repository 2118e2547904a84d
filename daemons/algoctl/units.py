"""Render the fleet's unit files for an install location other than /opt/algo/venv.

The unit files are read from ``shipped/`` next to this module: in a checkout (editable install) its
entries are symlinks to the checkout's ``units/``, ``configs/`` and ``docs/``; a wheel carries a copy
of them (package data), so a non-editable install (the Ansible role's, or bootstrap.sh's for a
checkout under /root or /home) renders the same units with no checkout at hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

PRODUCTION_VENV = "/opt/algo/venv"
PRODUCTION_DOCS = "/opt/algo/docs"
SHIPPED = Path(__file__).resolve().parent / "shipped"
UNIT_SUFFIXES = frozenset({".service", ".socket", ".target", ".timer"})
# The units that talk to Kite in live mode (they load its credentials): premarket's token check, the
# feed and execution. In live mode each gets LIVE_DROPIN, which lets it leave loopback.
KITE_UNITS = ("algo-premarket.service", "algo-marketdata.service", "algo-execution.service")
LIVE_DROPIN = "algo-kite-network.conf"


def source_dir() -> Path:
    """The unit files as installed in production (units/ of the checkout, or the wheel's copy)."""
    return SHIPPED / "units"


def configs_dir() -> Path:
    """configs/ of the checkout, or the wheel's copy (the paper configs and the instruments dumps)."""
    return SHIPPED / "configs"


def render_units(dest: Path, venv: str = sys.prefix, src: Path | None = None, *, live: bool = False) -> list[Path]:
    """Copy every unit into ``dest`` with the venv and docs paths substituted; with ``live``, also
    the drop-in that lets the Kite units leave loopback (removed again when not ``live``)."""
    src = src or source_dir()
    docs = str((SHIPPED / "docs").resolve())
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for unit in sorted(src.iterdir()):
        if unit.is_file() and unit.suffix in UNIT_SUFFIXES:
            out = dest / unit.name
            out.write_text(unit.read_text().replace(PRODUCTION_VENV, venv).replace(PRODUCTION_DOCS, docs))
            written.append(out)
    for name in KITE_UNITS:
        dropin = dest / f"{name}.d" / LIVE_DROPIN
        if live:
            dropin.parent.mkdir(exist_ok=True)
            dropin.write_text((src / LIVE_DROPIN).read_text())
            written.append(dropin)
        else:
            dropin.unlink(missing_ok=True)
    return written
