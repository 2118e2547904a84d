"""The frame format: whole buffers parse into every complete frame; bad input is named. The envelope's decoder."""

from __future__ import annotations

import struct

import msgspec
import orjson
import pytest

from daemons.runtime import wire
from daemons.runtime.envelope import Event


def test_frames_split_anywhere_reassemble() -> None:
    frames = [wire.encode(wire.PUBLISH, b"marketdata.tick", b'{"i":%d}' % i, b"256265") for i in range(50)]
    stream = b"".join(frames)
    for chunk in (1, 3, 7, 64, len(stream)):
        reader = wire.FrameReader(1 << 20)
        got = []
        for i in range(0, len(stream), chunk):
            got += reader.feed(stream[i : i + chunk])
        assert [f.raw for f in got] == frames
        assert got[7] == (wire.PUBLISH, b"marketdata.tick", b"256265", frames[7], len(frames[7]) - 7)
        assert got[7].body == b'{"i":7}'
        assert reader.pending == 0


def test_partial_frame_is_pending_not_lost() -> None:
    frame = wire.encode(wire.SUBSCRIBE, b"risk.*")
    reader = wire.FrameReader(1024)
    assert reader.feed(frame[:-1]) == [] and reader.pending == len(frame) - 1
    assert reader.feed(frame[-1:])[0].topic == b"risk.*"


@pytest.mark.parametrize(
    "data, reason",
    [
        (struct.pack("!IBBB", 10 << 20, 1, 1, 0), "oversized"),
        (struct.pack("!IBBB", 3, 99, 0, 0), "malformed"),
        (struct.pack("!IBBB", 5, 1, 200, 0) + b"xx", "malformed"),
        (struct.pack("!I", 1) + b"\x01", "malformed"),
    ],
)
def test_bad_headers_raise_protocol_errors(data: bytes, reason: str) -> None:
    with pytest.raises(wire.ProtocolError) as err:
        wire.FrameReader(1 << 20).feed(data + b"\x00" * 8)
    assert err.value.reason == reason


@pytest.mark.parametrize("topic, body", [(b"Bad Topic", b"{}"), (b"ok.topic", b"[1]"), (b"ok", b""), (b"", b"{}")])
def test_publish_checks(topic: bytes, body: bytes) -> None:
    frame = wire.FrameReader(1024).feed(wire.encode(wire.PUBLISH, topic, body))[0]
    with pytest.raises(wire.ProtocolError):
        wire.check_topic(frame.topic)
        wire.check_body(frame.raw, frame.offset)


def test_patterns() -> None:
    assert wire.matches("*", "anything.at.all")
    assert wire.matches("control.*", "control.kill_switch") and not wire.matches("control.*", "controls.x")
    assert wire.matches("risk.blocked", "risk.blocked") and not wire.matches("risk.blocked", "risk.blocked.x")
    for bad in (b"a*", b"*.x", b"x.*.y", b"UPPER"):
        with pytest.raises(wire.ProtocolError):
            wire.check_pattern(bad)


def test_the_envelope_decoder_checks_types_and_takes_the_key_from_the_header_only() -> None:
    good = {"id": "a-1", "ts": 1, "type": "x.y", "source": "a", "seq": 1, "trace": "a-1", "payload": {"n": 1}}
    assert Event.decode(orjson.dumps({**good, "key": "smuggled"})).key == ""
    assert Event.decode(orjson.dumps({**good, "key": "smuggled"}), "256265").key == "256265"
    assert Event.decode(orjson.dumps(good)) == Event("x.y", "a", 1, {"n": 1}, "a-1", 1, "a-1")
    for bad in ({"seq": True}, {"seq": 0}, {"seq": 2**63}, {"ts": 1.5}, {"payload": [1]}, {"trace": None}):
        with pytest.raises(msgspec.ValidationError):
            Event.decode(orjson.dumps({**good, **bad}))
