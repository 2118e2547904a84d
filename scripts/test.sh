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
# Then tests/systemd/ in two streams at once, each one test at a time: the tests whose simulated hosts have a
# network and cgroups of their own (Ansible's deployments and the multi-host fleets), beside the rest, whose
# private systemds share the host's cgroups and the fleet's fixed ports. The host directories the sandboxes
# bind over are made first (sandbox.py's MOUNTPOINTS: a sandbox that made one removes it at stop, and that
# would pull it from under the other stream's) and removed at the end. Any run failing fails the script,
# after all have run; the own-network stream's report follows the other's.
status=0
"$VENV/bin/python" -m pytest --numprocesses=2 --dist=loadfile --durations=25 --ignore=tests/systemd tests || status=$?
own=(tests/systemd/test_ansible_deploy.py tests/systemd/test_multihost_deploy.py tests/systemd/test_multihost.py)
made=()
if ((EUID == 0)); then
    mapfile -t points < <("$VENV/bin/python" -c 'from daemons.algoctl.sandbox import BARE_MOUNTPOINTS, MOUNTPOINTS
print(*MOUNTPOINTS, *BARE_MOUNTPOINTS, sep="\n")')
    for point in "${points[@]}"; do
        if [[ ! -e $point ]]; then mkdir -p "$point" && made+=("$point"); fi
    done
fi
own_log=$(mktemp)
"$VENV/bin/python" -m pytest --durations=10 "${own[@]}" >"$own_log" 2>&1 &
own_pid=$!
"$VENV/bin/python" -m pytest --durations=25 "${own[@]/#/--ignore=}" tests/systemd || status=$((status ? status : $?))
wait "$own_pid" || status=$((status ? status : $?))
echo "---- ${own[*]} (beside the above) ----"
cat "$own_log" && rm -f "$own_log"
for point in "${made[@]}"; do rmdir "$point" || true; done
exit "$status"
