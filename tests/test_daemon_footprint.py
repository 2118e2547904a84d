"""A paper fleet's daemons load none of the heavy libraries that only some configs use.

The fleet's budget is 45 MB of RSS a daemon (bench/pipeline/README.md) and a bare daemon already takes ~40
(the interpreter, asyncio, pydantic, prometheus_client). numpy (~10 MB), redis-py (~6 MB), kiteconnect with
Twisted, psycopg (~9 MB) and SQLAlchemy (~17 MB, only where the control plane's database is migrated) are
each imported by the code that needs them, when a config asks for it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "redis", "kiteconnect", "twisted", "sqlalchemy", "alembic", "psycopg", "onnxruntime")
FLEET = ("bus", "heartbeat", "marketdata", "engine", "risk", "execution", "journal", "commander")


@pytest.mark.parametrize("daemon", FLEET)
def test_a_paper_fleet_daemon_loads_no_heavy_library_it_does_not_use(daemon: str) -> None:
    code = (f"import sys; import daemons.{daemon}.main; from daemons.runtime.config import load_config; "
            f"load_config(sys.argv[1]); print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "configs" / "paper.toml")], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", f"algo-{daemon} imports {out.stdout.strip()}"


def test_the_paper_feed_loads_no_journal_reader() -> None:
    """algo-marketdata reads a journal (and imports zstandard, ~0.4 MB) only to replay one."""
    code = "import sys; import daemons.marketdata.main; print('zstandard' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_control_plane_on_sqlite_loads_neither_sqlalchemy_nor_psycopg(tmp_path: Path) -> None:
    """algo-commander and algo-gateway on the default SQLite use the stdlib's sqlite3 alone, and its
    INSERT ... ON CONFLICT still deduplicates a command id."""
    url = f"sqlite:///{tmp_path}/control.db"
    seed = ("import sys; from daemons.control_plane.drift import declared; from daemons.control_plane.store import Store; "
            "from daemons.runtime.config import load_config; s = Store.open(sys.argv[1], migrate=True); "
            "s.seed(declared(load_config(sys.argv[2])), 'deploy'); s.close()")
    subprocess.run([sys.executable, "-c", seed, url, str(REPO / "configs" / "paper.toml")], check=True)  # as the deploy
    code = ("import sys; from daemons.commander import main; from daemons.control_plane.store import Store; "
            "s = Store.open(sys.argv[1]); a = s.submit('op-1', 'ema-nifty', 'pause', {}, 'alice'); "
            "b = s.submit('op-1', 'ema-nifty', 'pause', {}, 'alice'); s.close(); "
            "print(a == b, sorted(m for m in ('sqlalchemy', 'psycopg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True []", out.stderr
