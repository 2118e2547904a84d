#!/usr/bin/env bash
# Run the whole test suite, systemd tests included (they need root; under CI=true they must run).
# Installs what it needs first. Extra arguments go to pytest, e.g. scripts/test.sh -k bus -x
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
had_sshd=$(dpkg-query -W -f='${Status}' openssh-server 2>/dev/null || true)
need_debs "${BASE_DEBS[@]}" prometheus nginx postgresql redis-server chromium openssh-server openssh-client
# promtool and a real Prometheus for the alert tests; nginx in front of the gateway; a real PostgreSQL server
# for the control plane's tests (tests/postgres.py); Redis for the bridge (tests/test_bridge.py); Chromium for
# the console's browser tests (tests/test_console.py); sshd inside the simulated hosts that Ansible deploys
# over SSH (tests/systemd/test_multihost_deploy.py). The tests need sshd's binary only: a host daemon this
# script's install started is stopped and disabled again.
if [[ $had_sshd != *"install ok installed"* ]] && [[ -d /run/systemd/system ]]; then
    systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
fi
make_venv test
make_wheelhouse
cd "$ROOT"
# The code's types and lint are part of the suite: mypy --strict (pydantic plugin, stubs in typings/)
# and ruff, as configured in pyproject.toml. Skipped when pytest arguments pick a subset.
if (($# == 0)); then
    echo "mypy --strict:" && "$VENV/bin/mypy"
    echo "ruff:" && "$VENV/bin/ruff" check .
fi
# Pytest arguments: exactly what is asked, one run.
if (($#)); then exec "$VENV/bin/python" -m pytest "$@"; fi
# The whole suite in two runs, each listing its 25 slowest steps at the end (where CI's minutes go). The
# tests outside tests/systemd/ on two workers (pytest-xdist), a file per worker at a time (a module's tests
# share its fixtures and some run in order); they take free ports and temp dirs of their own (tests/ports.py).
# Then tests/systemd/ one at a time: their private systemds share the fleet's fixed ports. Either failing
# fails the script, after both have run.
status=0
"$VENV/bin/python" -m pytest --numprocesses=2 --dist=loadfile --durations=25 --ignore=tests/systemd tests || status=$?
"$VENV/bin/python" -m pytest --durations=25 tests/systemd || status=$((status ? status : $?))
exit "$status"
