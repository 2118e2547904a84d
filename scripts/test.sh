#!/usr/bin/env bash
# Run the whole test suite, systemd tests included (they need root; under CI=true they must run).
# Installs what it needs first. Extra arguments go to pytest, e.g. scripts/test.sh -k bus -x
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
need_debs "${BASE_DEBS[@]}" prometheus nginx postgresql redis-server chromium  # promtool and a real Prometheus for the alert tests;
# nginx in front of the gateway; a real PostgreSQL server for the control plane's tests (tests/postgres.py);
# Redis for the bridge (tests/test_bridge.py); Chromium for the console's browser tests (tests/test_console.py)
make_venv test
cd "$ROOT"
# The code's types and lint are part of the suite: mypy --strict (pydantic plugin, stubs in typings/)
# and ruff, as configured in pyproject.toml. Skipped when pytest arguments pick a subset.
if (($# == 0)); then
    echo "mypy --strict:" && "$VENV/bin/mypy"
    echo "ruff:" && "$VENV/bin/ruff" check .
fi
# The whole suite lists its 25 slowest steps at the end: where CI's minutes go.
if (($# == 0)); then set -- --durations=25; fi
exec "$VENV/bin/python" -m pytest "$@"
