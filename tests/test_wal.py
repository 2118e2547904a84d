"""The write-ahead order log under damage: no fully written record is ever deleted or taken for
another. A torn last line (a crash mid-append) is cut off, exactly it; damage anywhere else stops
algo-execution with exit 78 and one crit line naming the file and the byte offset, and the file
stays byte for byte as it was. Seeded, bounded fuzzing, on real files and the real daemon."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemons.runtime.calendar import IST
from daemons.runtime.integrity import DamagedFile
from daemons.runtime.wal import RecordLog
from tests.ports import free_port

SEED = 20261204
ROUNDS = 1500
BUDGET_SEC = 30.0
WORDS = ["INFY", "NIFTY26NOVFUT", "rsi-infy", "ema \"nifty\"", "line\nbreak", "back\\slash", "₹ 1,573.70", "{}", ""]


def record(rng: random.Random, n: int) -> dict[str, Any]:
    """A record as execution writes them: an intent, the broker's answer, a fill, a close."""
    cid = f"C{rng.randrange(10**6):019d}"
    op = rng.choice(["new", "placed", "fill", "rejected", "cancelled"])
    if op == "new":
        return {"op": op, "client_id": cid, "signal_id": f"{rng.choice(WORDS)}:{n}", "engine": "equity",
                "strategy": rng.choice(WORDS), "symbol": rng.choice(WORDS), "side": rng.choice(["BUY", "SELL"]),
                "quantity": rng.randrange(1, 10**4), "order_type": "LIMIT", "limit_price": rng.randrange(1, 10**7) / 20,
                "instrument_type": "EQ", "exchange": "NSE", "trace": f"t{n}", "tick_ts": time.time_ns()}
    if op == "fill":
        fill = {"fill_id": f"F{n}", "quantity": rng.randrange(1, 100), "price": rng.randrange(1, 10**7) / 20,
                "symbol": rng.choice(WORDS)}
        return {"op": op, "client_id": cid, "fill": fill}
    return {"op": op, "client_id": cid, "order_id": str(rng.randrange(10**15)), "reason": rng.choice(WORDS)}


def written(path: Path, records: list[dict[str, Any]], legacy: bool = False) -> bytes:
    """The records appended by RecordLog, or as today's main wrote them (one bare JSON object a line)."""
    if legacy:
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    else:
        log = RecordLog(path, fsync=False)
        for r in records:
            log.append(r)
        log.close()
    return path.read_bytes()


def damage(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """One to three kinds of damage, at random places."""
    out = bytearray(data)
    kinds = [rng.choice(["flip", "truncate", "insert", "replace", "newline"]) for _ in range(rng.choice([1, 1, 2, 3]))]
    for kind in kinds:
        if not out:
            break
        if kind == "flip":
            for _ in range(rng.randrange(1, 4)):
                out[rng.randrange(len(out))] ^= rng.randrange(1, 256)
        elif kind == "truncate":
            del out[rng.randrange(len(out)):]
        elif kind == "insert":
            at = rng.randrange(len(out) + 1)
            out[at:at] = rng.randbytes(rng.randrange(1, 40))
        elif kind == "replace":  # a whole line becomes a JSON value that is no record
            lines = bytes(out).split(b"\n")
            k = rng.randrange(len(lines))
            lines[k] = rng.choice([b"{}", b"[1,2,3]", b"null", b'"new"', b""])
            out = bytearray(b"\n".join(lines))
        elif kind == "newline":  # the last record's newline is no longer one
            at = bytes(out).rfind(b"\n")
            if at >= 0:
                out[at] = rng.choice([ord(" "), ord("}"), 0])
    return "+".join(kinds), bytes(out)


def load_after_damage(path: Path, original: bytes, records: list[dict[str, Any]], damaged: bytes,
                      strict: bool = True) -> str:
    """Load ``damaged``: either every whole record intact (at most a torn tail cut off), or
    DamagedFile naming the file and the offset of the first damaged line, the file untouched."""
    path.write_bytes(damaged)
    try:
        log = RecordLog(path, fsync=False)
    except DamagedFile as exc:
        assert path.read_bytes() == damaged, "a damaged file was changed"
        assert exc.path == path and exc.offset is not None
        assert exc.offset == 0 or damaged[exc.offset - 1:exc.offset] == b"\n", "the offset is not a line's start"
        assert not strict or damaged[:exc.offset] == original[:exc.offset], "damage before the offset named"
        assert f"{path} at byte {exc.offset}: damaged record" in str(exc)
        return "refused"
    log.close()
    kept = path.read_bytes()
    assert kept == damaged[:damaged.rfind(b"\n") + 1], "more than a torn tail was cut off"
    if strict:  # with checksums nothing damaged passes for a record
        assert original.startswith(kept) and log.records == records[:kept.count(b"\n")]
    return "loaded" if kept == damaged else "torn tail cut"


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_no_fully_written_record_is_ever_deleted(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + BUDGET_SEC / 2
    for n in range(ROUNDS):
        if time.monotonic() > deadline:
            break
        path = tmp_path / f"{n}.wal"
        records = [record(rng, k) for k in range(rng.randrange(1, 30))]
        original = written(path, records)
        _, damaged = damage(rng, original)
        outcomes[load_after_damage(path, original, records, damaged)] += 1
    assert sum(outcomes.values()) >= ROUNDS // 4, outcomes
    assert outcomes["refused"] and outcomes["torn tail cut"] and outcomes["loaded"], outcomes


def test_files_written_before_checksums_still_load_and_stay_in_their_format(tmp_path: Path) -> None:
    path = tmp_path / "orders.wal"
    rng = random.Random(SEED)
    records = [record(rng, k) for k in range(5)]
    written(path, records, legacy=True)
    with open(path, "ab") as f:
        f.write(b'{"op":"placed","cli')  # torn
    log = RecordLog(path, fsync=False)
    assert log.records == records and not log.checksums
    log.append(records[0])  # the day goes on in the format it began in: no file mixes the two
    log.close()
    assert path.read_bytes().splitlines()[-1] == orjson.dumps(records[0])
    assert RecordLog(path).records == records + records[:1]


@pytest.mark.parametrize("seed", [SEED, SEED + 1])
def test_files_written_before_checksums_never_lose_a_whole_record(tmp_path: Path, seed: int) -> None:
    """Without checksums a damaged line that still parses cannot be told; still nothing is deleted."""
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    for n in range(ROUNDS // 4):
        path = tmp_path / f"{n}.wal"
        records = [record(rng, k) for k in range(rng.randrange(1, 30))]
        original = written(path, records, legacy=True)
        outcomes[load_after_damage(path, original, records, damage(rng, original)[1], strict=False)] += 1
    assert outcomes["refused"] and outcomes["torn tail cut"], outcomes


@pytest.mark.parametrize("name, line", [
    ("orders.wal", b"{}"), ("orders.wal", b"[1,2,3]"), ("orders.wal", b'{"op":"new","client_id":"X"}'),
    ("orders.wal", b'{"client_id":"X"}'), ("broker.jsonl", b'{"kind":"order","order":{"tag":"X"}}'),
])
def test_a_legacy_line_that_is_no_record_stops_execution_named_by_offset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, line: bytes) -> None:
    """Lines without checksums are taken only if execution can replay them."""
    from daemons.execution.main import ExecutionDaemon
    from daemons.runtime.config import FleetConfig
    from daemons.runtime.metrics import DaemonMetrics

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    path = tmp_path / "2026-11-20" / name
    path.parent.mkdir()
    good = orjson.dumps({"op": "placed", "client_id": "A", "order_id": "1"} if name == "orders.wal" else
                        {"kind": "instrument", "symbol": "INFY", "lot_size": 1, "tick_size": 0.05}) + b"\n"
    path.write_bytes(good + line + b"\n")
    d = ExecutionDaemon(FleetConfig(), DaemonMetrics("execution"))
    with pytest.raises(DamagedFile) as err:
        asyncio.run(d._open_day(date(2026, 11, 20)))
    assert (err.value.path, err.value.offset) == (path, len(good))
    assert path.read_bytes() == good + line + b"\n"


def test_a_failed_append_leaves_only_whole_records(tmp_path: Path) -> None:
    """A write the disk cuts short (here the file size limit: the first write is short, the next
    fails) is taken back, so appends after it do not sit behind half a line."""
    path = tmp_path / "orders.wal"
    code = f"""
import resource, signal
from pathlib import Path
from daemons.runtime.wal import RecordLog
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
log = RecordLog(Path({str(path)!r}))
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
failed = 0
for n in range(40):
    try:
        log.append({{"op": "placed", "client_id": f"C{{n}}", "order_id": "x" * 30}})
    except OSError:
        failed += 1
print(failed)
"""
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 0
    data = path.read_bytes()
    assert data.endswith(b"\n") and len(data) <= 1000
    assert [r["client_id"] for r in RecordLog(path).records] == [f"C{n}" for n in range(data.count(b"\n"))]


# -- the daemon ---------------------------------------------------------------------------------


def run_execution(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``algo-execution`` as systemd runs it, its state directory in ``tmp_path``."""
    config = tmp_path / "fleet.toml"
    config.write_text(f'[bus]\nsocket = "{tmp_path}/bus.sock"\n\n[daemons.execution]\nmetrics_port = {free_port()}\n')
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")}
    env.pop("NOTIFY_SOCKET", None)
    script = Path(sys.executable).parent / "algo-execution"
    return subprocess.run([str(script), "--config", str(config)], check=False, env=env, capture_output=True, text=True,
                          timeout=60)


def todays_wal(tmp_path: Path) -> Path:
    folder = tmp_path / "state" / datetime.now(IST).date().isoformat()
    folder.mkdir(parents=True)
    return folder / "orders.wal"


def test_a_flipped_byte_mid_file_stops_execution_with_78_and_one_crit_line(tmp_path: Path) -> None:
    path = todays_wal(tmp_path)
    rng = random.Random(SEED)
    records = [record(rng, k) for k in range(6)]
    data = bytearray(written(path, records))
    third = sum(len(line) + 1 for line in bytes(data).split(b"\n")[:2])
    data[third + 20] ^= 0x01  # the third record: the three after it are whole and must stay
    path.write_bytes(bytes(data))
    result = run_execution(tmp_path)
    assert result.returncode == 78, result.stderr
    crit = [line for line in result.stderr.splitlines() if line.startswith("CRITICAL")]
    assert crit == [(f"CRITICAL algo.runtime: execution: {path} at byte {third}: damaged record (checksum mismatch); "
                     "the file is left as it is: stopped until an operator repairs it (docs/OPERATIONS.md, "
                     f"\"A damaged state file\") STATE_FILE={path} STATE_OFFSET={third}")]
    assert "Traceback" not in result.stderr
    assert path.read_bytes() == bytes(data)


def test_a_wal_that_is_a_directory_stops_execution_with_78(tmp_path: Path) -> None:
    path = todays_wal(tmp_path)
    path.mkdir()
    result = run_execution(tmp_path)
    assert result.returncode == 78, result.stderr
    crit = [line for line in result.stderr.splitlines() if line.startswith("CRITICAL")]
    assert len(crit) == 1 and f"{path}: cannot be read as a log: Is a directory" in crit[0], result.stderr
    assert "Traceback" not in result.stderr and path.is_dir()


# -- the operator's tools -----------------------------------------------------------------------


def algoctl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from daemons.algoctl.main import main

    with pytest.raises(SystemExit) as done:
        main(["wal", *args])
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out + out.err


def test_the_operator_finds_repairs_and_seals_a_damaged_line(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "orders.wal"
    records = [{"op": "placed", "client_id": f"C{n}", "order_id": f"26112000000000{n}"} for n in range(1, 7)]
    lines = written(path, records).split(b"\n")
    lines[2] = lines[2].replace(b"000003", b"000008")  # a flipped bit: a wrong broker order id
    path.write_bytes(b"\n".join(lines))
    at = len(lines[0]) + len(lines[1]) + 2
    assert algoctl(capsys, "check", str(path)) == (
        1, f"algoctl wal check: {path}: line 3 (byte {at}): damaged record (checksum mismatch): {lines[2]!r}\n")

    damaged = path.read_bytes()
    lines[2] = orjson.dumps(records[2])  # repaired by hand, from the broker's order book
    path.write_bytes(b"\n".join(lines))
    code, out = algoctl(capsys, "seal", str(path), "3")
    assert code == 0 and out.endswith(f"{path}: OK, 6 records, checksummed\n"), out
    assert RecordLog(path).records == records and path.stat().st_mode & 0o777 == 0o600
    [backup] = tmp_path.glob("orders.wal.before-seal-*")
    assert backup.read_bytes() == b"\n".join(lines) and backup.read_bytes() != damaged

    sealed = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b'{"op":"placed","cli')
    code, out = algoctl(capsys, "check", str(path))
    assert code == 0
    assert out == (f"{path}: OK, 6 records, checksummed; a torn last record of 19 bytes at byte {sealed}, which "
                   "its daemon cuts off when it starts\n")
    assert algoctl(capsys, "seal", str(path), "9")[0] == 1


def test_a_file_written_before_checksums_is_repaired_without_a_seal(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "orders.wal"
    first = written(path, [{"op": "placed", "client_id": "A", "order_id": "1"}], legacy=True)
    path.write_bytes(first + b'{"op":"placed","client_id":"B"}\n')
    path.write_bytes(path.read_bytes().replace(b'"B"}', b'"B"'))  # no longer JSON
    before = path.read_bytes()
    code, out = algoctl(capsys, "check", str(path))
    assert code == 1 and f"line 2 (byte {len(first)}): damaged record (" in out, out
    assert algoctl(capsys, "seal", str(path), "2") == (
        1, f"algoctl wal seal: {path} was written before checksums: a repaired line needs no seal\n")
    assert path.read_bytes() == before


def test_an_intent_and_the_records_after_it_are_fdatasynced_together_soon_after_the_turns_events_are_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An intent is written before write_now returns (a killed process keeps it); it, the broker's answer and
    the paper book's record are fdatasync'ed together SYNC_AFTER_SEC later, so neither the order event nor the
    next approval of the same decision waits for a disk flush. ``durable`` (Kite's place call) flushes at once."""
    from daemons.execution import backlog
    from daemons.execution.backlog import BackloggedLog

    monkeypatch.setattr(backlog, "SYNC_AFTER_SEC", 0.2)  # 2 ms: a loaded machine's loop turns could outlast it
    steps: list[str] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        steps.append("fdatasync")
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    wal = BackloggedLog(RecordLog(tmp_path / "orders.wal"), "disk full (%s)", 50)
    book = BackloggedLog(RecordLog(tmp_path / "paper.wal"), "disk full (%s)", 40)

    async def turn() -> None:
        loop = asyncio.get_running_loop()
        wal.write_now({"op": "new", "client_id": "C1"})
        assert steps == [] and RecordLog(tmp_path / "orders.wal").records == [{"op": "new", "client_id": "C1"}]
        book.append({"kind": "order", "client_id": "C1"})
        wal.append({"op": "placed", "client_id": "C1", "order_id": "1"})
        wal.append({"op": "fill", "client_id": "C1"})
        loop.call_soon(steps.append, "order event written")
        for _ in range(3):
            await asyncio.sleep(0)
        assert steps == ["order event written"]  # the loop is free for the next approval
        await asyncio.sleep(backlog.SYNC_AFTER_SEC * 3)
        assert steps == ["order event written", "fdatasync", "fdatasync"]  # one per file
        wal.write_now({"op": "new", "client_id": "C2"})
        wal.durable()
        assert steps[-1] == "fdatasync" and not wal.wal.unsynced  # on disk before Kite hears of C2
        await asyncio.sleep(backlog.SYNC_AFTER_SEC * 3)
        assert len(steps) == 4, "nothing left for the timer to flush"

    asyncio.run(turn())
    assert [r["op"] for r in RecordLog(tmp_path / "orders.wal").records] == ["new", "placed", "fill", "new"]
    book.append({"kind": "trade"})  # no loop (a tool): at once
    assert steps[-1] == "fdatasync" and len(steps) == 5
