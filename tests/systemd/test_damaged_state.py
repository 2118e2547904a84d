"""A damaged write-ahead log under the real unit: exit 78, no restart loop, one crit line with the
file and byte offset as journal fields, and the file left as it was."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from daemons.algoctl.sandbox import Sandbox
from daemons.runtime.calendar import IST
from daemons.runtime.wal import encode
from tests.helpers import wait_until

pytestmark = pytest.mark.systemd

EX = "algo-execution.service"


def test_a_damaged_wal_stops_execution_with_78_and_one_crit_line(sandbox: Sandbox) -> None:
    day = datetime.now(IST).date().isoformat()
    folder = sandbox.state / "execution" / day
    folder.mkdir(parents=True)  # root's: systemd hands StateDirectory= to the unit's user at start
    lines = [encode({"op": "placed", "client_id": f"C{n}", "order_id": f"{n}"}) for n in range(4)]
    lines[1] = lines[1].replace(b'"C1"', b'"C7"')  # a flipped byte in the second record
    wal = folder / "orders.wal"
    wal.write_bytes(b"".join(lines))
    sandbox.systemctl("start", EX)  # fails: that is the point
    wait_until(lambda: sandbox.show(EX, "ActiveState")["ActiveState"] == "failed", 30, "execution to fail")
    time.sleep(1.0)  # RestartSec=200ms: a restart loop would have shown by now
    props = sandbox.show(EX, "ExecMainStatus", "NRestarts", "Result")
    assert props == {"ExecMainStatus": "78", "NRestarts": "0", "Result": "exit-code"}
    inside = f"/var/lib/algo/execution/{day}/orders.wal"
    crit = sandbox.journalctl("-u", EX, "-p", "crit", "-o", "cat").stdout.strip().splitlines()
    assert crit == [(f"execution: {inside} at byte {len(lines[0])}: damaged record (checksum mismatch); the file is "
                     "left as it is: stopped until an operator repairs it (docs/OPERATIONS.md, \"A damaged state "
                     "file\")")]
    by_field = sandbox.journalctl(f"STATE_FILE={inside}", f"STATE_OFFSET={len(lines[0])}", "-o", "cat").stdout
    assert by_field.strip() == crit[0]
    assert wal.read_bytes() == b"".join(lines)
