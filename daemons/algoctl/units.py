"""Render the fleet's unit files for an install location other than /opt/algo/venv."""

from __future__ import annotations

import sys
from pathlib import Path

PRODUCTION_VENV = "/opt/algo/venv"
PRODUCTION_DOCS = "/opt/algo/docs"


def source_dir() -> Path:
    """units/ of this checkout (the package is installed editable from it)."""
    return Path(__file__).resolve().parents[2] / "units"


def render_units(dest: Path, venv: str = sys.prefix, src: Path | None = None) -> list[Path]:
    """Copy every unit (and drop-in dir) into ``dest`` with the venv path substituted."""
    src = src or source_dir()
    docs = str(src.parent / "docs")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for unit in sorted(src.iterdir()):
        if unit.is_file() and unit.suffix in {".service", ".socket", ".target", ".timer"}:
            text = unit.read_text().replace(PRODUCTION_VENV, venv).replace(PRODUCTION_DOCS, docs)
            out = dest / unit.name
            out.write_text(text)
            written.append(out)
    return written
