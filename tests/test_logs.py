"""journald's native protocol, spoken to a real datagram socket: priorities and search fields."""

from __future__ import annotations

import logging
import socket
import struct
from pathlib import Path

from daemons.runtime.logs import FleetJournalHandler, PlainFormatter


def parse_native(datagram: bytes) -> dict[str, str]:
    """The journal's native format: KEY=value lines, or KEY\\n<u64 le length><value>\\n."""
    fields, pos = {}, 0
    while pos < len(datagram):
        nl = datagram.index(b"\n", pos)
        line = datagram[pos:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            pos = nl + 1
        else:
            (length,) = struct.unpack_from("<Q", datagram, nl + 1)
            key, value = line, datagram[nl + 9 : nl + 9 + length]
            pos = nl + 9 + length + 1
        fields[key.decode()] = value.decode()
    return fields


def test_fields_are_top_level_and_priority_follows_level(tmp_path: Path) -> None:
    path = tmp_path / "journal.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    handler = FleetJournalHandler("algo-test", socket_path=path)
    logger = logging.getLogger("algo.test.journal")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        logger.warning("order %s rejected", "X1", extra={"ORDER_ID": "X1", "SYMBOL": "INFY", "TRACE_ID": "t-9"})
        logger.info("plain line")
        first = parse_native(server.recv(65536))
        second = parse_native(server.recv(65536))
    finally:
        logger.removeHandler(handler)
        server.close()
    assert first["MESSAGE"] == "order X1 rejected"
    assert first["PRIORITY"] == "4"
    assert (first["ORDER_ID"], first["SYMBOL"], first["TRACE_ID"]) == ("X1", "INFY", "t-9")
    assert first["SYSLOG_IDENTIFIER"] == "algo-test"
    assert not any(k.startswith("EXTRA_") for k in first)
    assert second["PRIORITY"] == "6" and "ORDER_ID" not in second


def test_plain_output_carries_the_fields() -> None:
    record = logging.LogRecord("algo.x", logging.ERROR, __file__, 1, "fill for %s", ("A1",), None)
    record.ORDER_ID = "A1"
    assert PlainFormatter().format(record) == "ERROR   algo.x: fill for A1 ORDER_ID=A1"
