#!/usr/bin/env bash
# Run the paper-trading fleet under systemd. On a systemd host the units go to /run/systemd/system
# (gone at reboot; `ansible-playbook deploy.yml` is the permanent install). Elsewhere the fleet
# runs in the private-systemd sandbox (algoctl sandbox ...).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
need_debs "${BASE_DEBS[@]}"
make_venv test
ALGOCTL=$VENV/bin/algoctl
"$ALGOCTL" config validate "$ROOT/configs/paper.toml"

if [[ -d /run/systemd/system && $(ps -p 1 -o comm=) == systemd ]]; then
    getent group algo >/dev/null || groupadd --system algo
    getent passwd algo >/dev/null || useradd --system --gid algo --home-dir /nonexistent --shell /usr/sbin/nologin algo
    install -d -m 0755 /etc/algo
    [[[ -f /etc/algo/fleet.toml ]] || install -m 0644 "$ROOT/configs/paper.toml" /etc/algo/fleet.toml
    install -d -m 0755 /etc/algo/instruments && install -m 0644 "$ROOT"/configs/instruments/*.csv /etc/algo/instruments/
    "$ALGOCTL" units /run/systemd/system --venv "$VENV" >/dev/null
    systemctl daemon-reload
    systemctl start algo.target
    sleep 2
    systemctl --no-pager status 'algo-*' || true
    echo
    echo "The fleet runs under this host's systemd. Try:"
    echo "  systemctl status algo-heartbeat        journalctl -u 'algo-*' -f"
    echo "  systemctl stop algo.target"
else
    "$ALGOCTL" sandbox stop >/dev/null 2>&1 || true
    "$ALGOCTL" sandbox start --config "$ROOT/configs/paper.toml"
    "$ALGOCTL" sandbox systemctl start algo.target
    sleep 2
    "$ALGOCTL" sandbox systemctl status 'algo-*' || true
    echo
    echo "PID 1 here is not systemd, so the fleet runs in a private systemd sandbox. Try:"
    echo "  $ALGOCTL sandbox status"
    echo "  $ALGOCTL sandbox journalctl -u algo-heartbeat -f"
    echo "  $ALGOCTL sandbox systemctl restart algo-bus.service"
    echo "  $ALGOCTL sandbox stop"
fi
