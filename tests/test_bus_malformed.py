"""Malformed envelopes from a hostile or buggy publisher, through a real broker, in the same read as
valid events: each is counted and skipped; its neighbours and the subscriber's connection survive."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from daemons.runtime import wire
from daemons.runtime.envelope import Event
from daemons.runtime.metrics import BusClientCollector
from tests.test_bus import client, run, start_broker, until

TOPICS = ("execution.fill", "marketdata.tick")


def valid(topic: str, seq: int) -> dict[str, object]:
    return {"id": f"fuzz-1-{seq}", "ts": 1_700_000_000_000_000_000, "type": topic, "source": "fuzz", "seq": seq,
            "trace": f"fuzz-1-{seq}", "payload": {"n": seq, "topic": topic}}


def _set(key: str, value: object) -> Callable[[dict[str, object]], bytes]:
    return lambda env: orjson.dumps({**env, key: value})


def _drop(key: str) -> Callable[[dict[str, object]], bytes]:
    return lambda env: orjson.dumps({k: v for k, v in env.items() if k != key})


def _raw(key: str, text: bytes) -> Callable[[dict[str, object]], bytes]:
    """A value orjson would not produce: the key's JSON replaced by ``text``."""
    return lambda env: orjson.dumps({**env, key: "@@"}).replace(b'"@@"', text)


# Every way an envelope can be wrong while still looking like a JSON object to the broker.
MUTATIONS: list[Callable[[dict[str, object]], bytes]] = [
    _set("seq", [1]), _set("seq", "7"), _set("seq", 1.5), _set("seq", True), _set("seq", None), _set("seq", 0),
    _set("seq", -3), _raw("seq", b"123456789012345678901234567890"), _raw("seq", b"1e400"),
    _set("type", {"a": 1}), _set("type", 5), _set("type", ["x"]), _set("type", "risk.approved"),
    _set("ts", "yesterday"), _set("ts", 1.5), _set("ts", None), _set("ts", [1]),
    _set("payload", [1, 2]), _set("payload", "x"), _set("payload", None), _set("payload", 3),
    _set("source", {"x": 1}), _set("source", ["a"]), _set("source", 7), _set("id", 5), _set("trace", ["t"]),
    *(_drop(k) for k in ("id", "ts", "type", "source", "seq", "trace", "payload")),
    lambda env: b"{not json}", lambda env: b'{"seq": 1,}', lambda env: b"{\xff\xfe}", lambda env: b'{"a": "\\ud800"}',
    lambda env: b"{}", lambda env: b'{"seq": 1} {"seq": 2}',
]


def read_batch(seed: int, count: int) -> tuple[bytes, dict[str, list[int]], dict[str, int]]:
    """One write of ``count`` frames: valid events (consecutive seq per topic) and malformed ones."""
    rng = random.Random(seed)
    seqs = dict.fromkeys(TOPICS, 0)
    expected: dict[str, list[int]] = {t: [] for t in TOPICS}
    bad = dict.fromkeys(TOPICS, 0)
    frames = []
    for _ in range(count):
        topic = rng.choice(TOPICS)
        if rng.random() < 0.4:
            body = rng.choice(MUTATIONS)(valid(topic, seqs[topic] + 1))
            bad[topic] += 1
        else:
            seqs[topic] += 1
            expected[topic].append(seqs[topic])
            body = orjson.dumps(valid(topic, seqs[topic]))
        frames.append(wire.encode(wire.PUBLISH, topic.encode(), body, b"256265"))
    return b"".join(frames), expected, bad


@pytest.mark.parametrize("seed", range(6))
def test_malformed_envelopes_are_skipped_and_their_neighbours_delivered(
    seed: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, expected, bad = read_batch(seed, 300)

    async def go(path: Path) -> None:
        broker = await start_broker(path)
        sub = await client(path, "journal")
        got: dict[str, list[Event]] = {t: [] for t in TOPICS}
        for topic in TOPICS:
            sub.subscribe(topic, got[topic].append)
        await until(lambda: broker.subscriptions == len(TOPICS))
        publisher = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await asyncio.get_running_loop().sock_connect(publisher, str(path))
        publisher.sendall(data)  # one write: the broker forwards each same-topic run as one slice
        want = sum(map(len, expected.values()))
        await until(lambda: sum(map(len, got.values())) == want and sub.received == 300)
        await asyncio.sleep(0.05)  # nothing more arrives, nothing was dropped late
        for topic in TOPICS:
            assert [e.seq for e in got[topic]] == expected[topic]
            assert [e.payload for e in got[topic]] == [{"n": s, "topic": topic} for s in expected[topic]]
            assert sub.malformed[topic] == bad[topic]
        assert sub.connected and sub.transport.reconnects == 0, "the connection must survive"
        assert sub.gaps == 0 and sub.handler_errors == 0
        scrape = generate_latest(registry(sub)).decode()
        for topic in TOPICS:
            assert f'algo_bus_client_malformed_total{{topic="{topic}"}} {float(bad[topic])}' in scrape
        assert f'algo_bus_client_dropped_total{{reason="undecodable"}} {float(sum(bad.values()))}' in scrape
        publisher.close()
        await sub.close()
        await broker.close()

    with caplog.at_level(logging.WARNING, "algo.bus"):
        run(go, tmp_path)
    lines = [r for r in caplog.records if r.getMessage().startswith("malformed ")]
    assert lines, "a malformed event is logged"
    messages = [r.getMessage() for r in lines]
    assert len(messages) == len(set(messages)) <= len(TOPICS) * len(MUTATIONS), "one line per kind, not per event"


def registry(sub: object) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(BusClientCollector(sub))  # type: ignore[arg-type]
    return reg


def test_a_flood_of_one_malformed_kind_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def go(path: Path) -> None:
        broker = await start_broker(path)
        sub = await client(path, "journal")
        got: list[Event] = []
        sub.subscribe("execution.fill", got.append)
        await until(lambda: broker.subscriptions == 1)
        publisher = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await asyncio.get_running_loop().sock_connect(publisher, str(path))
        bad = orjson.dumps({**valid("execution.fill", 1), "seq": [1]})
        publisher.sendall(b"".join(wire.encode(wire.PUBLISH, b"execution.fill", bad) for _ in range(500))
                          + wire.encode(wire.PUBLISH, b"execution.fill", orjson.dumps(valid("execution.fill", 1))))
        await until(lambda: len(got) == 1)
        assert sub.malformed["execution.fill"] == 500 and sub.connected
        publisher.close()
        await sub.close()
        await broker.close()

    with caplog.at_level(logging.WARNING, "algo.bus"):
        run(go, tmp_path)
    assert len([r for r in caplog.records if r.getMessage().startswith("malformed ")]) == 1
