"""A throwaway PostgreSQL cluster for tests: initdb into a short directory under /var/tmp, listening
only on a Unix socket there, fsync off; stopped and removed afterwards.

initdb and postgres refuse to run as root, so both run as the postgres user (runuser), which the
Debian package creates: the tests need root, and skip without it unless CI=true, where they fail.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.helpers import unavailable

USER = "postgres"


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


def unavailable_reason() -> str | None:
    if _bin_dir() is None:
        return "PostgreSQL is not installed (Debian: apt-get install postgresql; scripts/test.sh installs it)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"there is no {USER} user to run the server as"
    if os.geteuid() != 0:
        return "starting a throwaway PostgreSQL cluster needs root (initdb runs as the postgres user via runuser)"
    return None


def require_postgres() -> None:
    reason = unavailable_reason()
    if reason is not None:
        unavailable("PostgreSQL tests", reason)


class Cluster:
    def __init__(self, directory: Path) -> None:
        self.directory = directory  # also the socket's directory: keep it short (108 bytes)
        self._names = itertools.count(1)

    def create_database(self) -> str:
        """A new empty database; its SQLAlchemy URL."""
        name = f"t{next(self._names)}"
        with psycopg.connect(host=str(self.directory), user=USER, dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://{USER}@/{name}?host={self.directory}"


def _as_postgres(*cmd: str | Path) -> None:
    done = subprocess.run(["runuser", "-u", USER, "--", *map(str, cmd)], capture_output=True, text=True, timeout=120,
                          check=False, cwd="/")
    assert done.returncode == 0, f"{cmd}: {done.stdout}{done.stderr}"


@contextmanager
def cluster() -> Iterator[Cluster]:
    bin_dir = _bin_dir()
    assert bin_dir is not None
    directory = Path(tempfile.mkdtemp(prefix="algo-pg-", dir="/var/tmp"))
    shutil.chown(directory, USER)
    data = directory / "data"
    try:
        _as_postgres(bin_dir / "initdb", "-D", data, "-U", USER, "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8",
                     "--no-sync")
        _as_postgres(bin_dir / "pg_ctl", "-D", data, "-l", directory / "log", "-w", "-o",
                     f"-k {directory} -c listen_addresses='' -c fsync=off", "start")
        try:
            yield Cluster(directory)
        finally:
            _as_postgres(bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
