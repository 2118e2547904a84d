"""`algoctl status`: the whole fleet on one screen, from systemd's own view of it."""

from __future__ import annotations

import subprocess

PROPS = ("Id", "ActiveState", "SubState", "MainPID", "NRestarts", "StatusText", "Result")


def fleet_status() -> str:
    units = subprocess.run(["systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager",
                            "algo-*", "algo.target"], capture_output=True, text=True)
    names = [line.split()[0] for line in units.stdout.splitlines() if line.strip()]
    if not names:
        return "no algo-* units loaded (is the fleet installed? see README)"
    show = subprocess.run(["systemctl", "show", "--no-pager", *(f"--property={p}" for p in PROPS), *names],
                          capture_output=True, text=True, check=True)
    rows = []
    for block in show.stdout.strip().split("\n\n"):
        u = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        state = f"{u.get('ActiveState', '?')}/{u.get('SubState', '?')}"
        if u.get("Result") not in (None, "", "success"):
            state += f" ({u['Result']})"
        pid = u.get("MainPID", "0")
        rows.append((u.get("Id", "?"), state, "-" if pid == "0" else pid, u.get("NRestarts", "-"),
                     u.get("StatusText", "")))
    rows.sort()
    widths = [max(len(r[i]) for r in rows + [("UNIT", "STATE", "PID", "RESTARTS", "")]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(("UNIT", "STATE", "PID", "RESTARTS"), widths, strict=True)) + "  STATUS"]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return "\n".join(lines)
