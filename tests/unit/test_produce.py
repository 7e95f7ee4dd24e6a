"""The test-event generator of `wal_bridge produce`: realistic, repeatable, malformed on demand."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from itertools import islice

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from wal_bridge.cli import main
from wal_bridge.commands.produce import (
    EVENT_AVRO_SCHEMA,
    EVENT_TYPES,
    MALFORMED_KINDS,
    EventStream,
    produce_events,
    stop_on_signals,
)

START = datetime(2026, 1, 1, tzinfo=UTC)


def take(n: int, **kwargs: object) -> list:  # type: ignore[type-arg]
    return list(islice(EventStream(start=START, **kwargs), n))  # type: ignore[arg-type]


def test_events_have_the_documented_shape_and_are_keyed_by_user() -> None:
    """Every field is present with its type; the key is the user id."""
    for event in take(200, seed=1):
        data = json.loads(event.value)
        assert set(data) == {"event_id", "user_id", "session_id", "event_type", "amount",
                             "currency", "ts", "device"}
        assert uuid.UUID(data["event_id"]).version == 4
        assert event.key == data["user_id"].encode()
        assert data["event_type"] in EVENT_TYPES
        assert isinstance(data["amount"], float)
        assert (data["amount"] > 0) == (data["event_type"] in ("add_to_cart", "purchase"))
        assert data["currency"] in ("EUR", "USD", "GBP")
        assert datetime.fromisoformat(data["ts"]) >= START
        assert set(data["device"]) == {"os", "os_version", "app_version", "locale"}


def test_the_same_seed_gives_the_same_stream_and_another_seed_does_not() -> None:
    """--seed (with a fixed start time) makes a run repeatable byte for byte."""
    assert take(100, seed=42) == take(100, seed=42)
    assert take(100, seed=42) != take(100, seed=43)


def test_timestamps_move_forward() -> None:
    """Events are in time order, like a real stream."""
    stamps = [json.loads(e.value)["ts"] for e in take(300, seed=5)]
    assert stamps == sorted(stamps)


def _is_malformed(value: bytes, max_bytes: int) -> bool:
    if not value or len(value) > max_bytes:
        return True
    try:
        return not isinstance(json.loads(value), dict)
    except ValueError:  # not JSON, or not UTF-8
        return True


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5])
def test_the_malformed_ratio_is_honoured_with_every_kind(ratio: float) -> None:
    """About that share is malformed, every kind appears, and each one really is malformed."""
    events = take(4000, seed=9, malformed_ratio=ratio, max_record_bytes=2048)
    kinds = Counter(e.kind for e in events)
    bad = sum(n for k, n in kinds.items() if k != "event")
    assert abs(bad / len(events) - ratio) < 0.03
    if ratio:
        assert set(kinds) - {"event"} == set(MALFORMED_KINDS)
    for event in events:
        assert _is_malformed(event.value, 2048) == (event.kind != "event"), event


def test_produce_needs_a_count_or_a_duration() -> None:
    """Without --count or --rate/--duration the command is a usage error (exit 2)."""
    result = CliRunner().invoke(main, ["produce"])
    assert result.exit_code == 2
    assert "--count" in result.output
    result = CliRunner().invoke(main, ["produce", "--duration", "5"])
    assert result.exit_code == 2
    assert "--rate" in result.output


def test_produce_without_rate_or_count_names_the_endless_mode() -> None:
    """The usage error lists --rate alone (until SIGTERM or SIGINT) among the ways to run."""
    result = CliRunner().invoke(main, ["produce"])
    assert result.exit_code == 2
    assert "--rate R (until SIGTERM or SIGINT)" in " ".join(result.output.split())
    result = CliRunner().invoke(main, ["produce", "--count", "5", "--rate", "1", "--duration", "3"])
    assert result.exit_code == 2
    assert "not both" in result.output


def test_a_signal_sets_the_stop_event_and_the_handlers_come_back() -> None:
    """Inside stop_on_signals, SIGTERM and SIGINT set the event instead of ending the process."""
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for signum in (signal.SIGTERM, signal.SIGINT):
        with stop_on_signals() as stop:
            assert not stop.is_set()
            os.kill(os.getpid(), signum)
            assert stop.wait(5)
        assert {s: signal.getsignal(s) for s in before} == before


def test_an_endless_run_stops_when_told_and_reports_what_it_sent() -> None:
    """--rate alone sends until the stop event, then flushes; undeliverable records are counted.

    The producer is a real librdkafka client with nothing listening at its address, so every
    record times out after message.timeout.ms instead of being acknowledged.
    """
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 500})
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    started = time.monotonic()
    # 1,000 events bound the run to 10 s should the event be ignored.
    events = islice(EventStream(seed=1, start=START), 1000)
    report = produce_events(producer, "t", events, None, rate=100, progress=False, stop=stop)
    timer.join()
    assert 1.0 <= time.monotonic() - started < 5
    assert 50 <= report.sent <= 150
    assert report.delivered == 0
    assert sum(report.failed.values()) == report.sent


def test_produce_events_needs_a_bound_or_a_rate() -> None:
    """Without count, duration or rate there is nothing to pace an endless run by."""
    producer = Producer({"bootstrap.servers": "127.0.0.1:9"})
    with pytest.raises(ValueError, match="count, duration or rate"):
        produce_events(producer, "t", iter(EventStream(seed=1)), None, progress=False)


def test_the_avro_schema_names_every_field_of_the_events() -> None:
    """EVENT_AVRO_SCHEMA has the events' fields (and the device's) in their order, and fastavro
    writes and reads an event with it, ts as the same instant."""
    import io

    import fastavro

    schema = fastavro.parse_schema(EVENT_AVRO_SCHEMA)
    for event in take(50, seed=3):
        data = json.loads(event.value)
        assert [f["name"] for f in EVENT_AVRO_SCHEMA["fields"]] == list(data)
        device = next(f for f in EVENT_AVRO_SCHEMA["fields"] if f["name"] == "device")
        assert [f["name"] for f in device["type"]["fields"]] == list(data["device"])
        ts = datetime.fromisoformat(data["ts"])
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, {**data, "ts": ts})
        buffer.seek(0)
        assert fastavro.schemaless_reader(buffer, schema) == {**data, "ts": ts}


def test_an_event_stream_encodes_events_with_the_encoder_it_is_given() -> None:
    """``encode`` makes the values of events; malformed records stay the same bytes."""
    plain = take(100, seed=5, malformed_ratio=0.3)
    tagged = take(100, seed=5, malformed_ratio=0.3,
                  encode=lambda event: b"E" + json.dumps(event).encode())
    for a, b in zip(plain, tagged, strict=True):
        assert b.value == (b"E" + a.value if a.kind == "event" else a.value)


def test_produce_avro_needs_a_schema_registry_url() -> None:
    """--format avro without --schema-registry-url (SCHEMA_REGISTRY_URL) is a usage error."""
    env = {"SCHEMA_REGISTRY_URL": ""}
    result = CliRunner().invoke(main, ["produce", "--count", "1", "--format", "avro"], env=env)
    assert result.exit_code == 2
    assert "--schema-registry-url or SCHEMA_REGISTRY_URL" in " ".join(result.output.split())
