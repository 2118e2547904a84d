#!/usr/bin/env bash
# Run the paper-trading fleet under systemd, show it trading, and write today's report.
# On a systemd host the units go to /run/systemd/system (gone at reboot; `ansible-playbook
# deploy.yml` is the permanent install). Elsewhere the fleet runs in the private-systemd sandbox
# (algoctl sandbox ...), its state under /var/tmp/algo-sandbox/state.
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
    [[ -f /etc/algo/fleet.toml ]] || install -m 0644 "$ROOT/configs/paper.toml" /etc/algo/fleet.toml
    install -d -m 0755 /etc/algo/instruments && install -m 0644 "$ROOT"/configs/instruments/*.csv /etc/algo/instruments/
    "$ALGOCTL" units /run/systemd/system --venv "$VENV" >/dev/null
    systemctl daemon-reload
    inside() { "$@"; }
    STATE=/var/lib/algo
    HOW="systemctl status algo-fno | journalctl -u 'algo-*' -f | $ALGOCTL status | systemctl stop algo.target"
else
    "$ALGOCTL" sandbox stop >/dev/null 2>&1 || true
    "$ALGOCTL" sandbox start --config "$ROOT/configs/paper.toml"
    inside() { "$ALGOCTL" sandbox run "$@"; }
    STATE=/var/tmp/algo-sandbox/state
    HOW="$ALGOCTL sandbox status | $ALGOCTL sandbox journalctl -u algo-execution -f | $ALGOCTL sandbox run $ALGOCTL pause fno | $ALGOCTL sandbox stop"
    echo "PID 1 here is not systemd, so the fleet runs in a private systemd sandbox."
fi

inside systemctl start algo.target
DAY=$(TZ=Asia/Kolkata date +%F)
FILLS=$STATE/journal/$DAY/fills.csv
echo "Waiting for the first fills (a whole session takes 10 minutes of paper time)..."
for _ in $(seq 120); do
    [[ -f $FILLS && $(wc -l <"$FILLS") -gt 3 ]] && break
    sleep 1
done
echo
inside "$ALGOCTL" status
echo
echo "== the latest fills ($FILLS) =="
tail -n 5 "$FILLS" | cut -d, -f3,6-12
inside systemctl start algo-eod.service
echo
echo "== today's report so far (algo-eod.timer writes it after every weekday's close) =="
sed -n '1,25p' "$STATE/reports/$DAY.md"
echo
echo "Report: $STATE/reports/$DAY.md and .json   Journal: $STATE/journal/$DAY/"
echo "Next:   ${HOW//|/$'\n        '}"
