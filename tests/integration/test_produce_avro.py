"""`wal_bridge produce --format avro`: the test events Avro-encoded in the Confluent wire format,
their schema registered as the topic's value subject."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.conftest import KafkaHandle, SchemaRegistryHandle
from tests.native import TopicWatch
from wal_bridge.commands.produce import EVENT_AVRO_SCHEMA, EventStream

COUNT = 300
START = "2026-01-01T00:00:00"


def _produce(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_", "SCHEMA_REGISTRY_"))}
    command = [str(Path(sys.prefix) / "bin" / "wal_bridge"), "produce", "--quiet", "--json",
               *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def _consume(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    records: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + 60
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for message in consumer.consume(500, 1.0):
                assert message.error() is None, message.error()
                records.append((message.key(), message.value()))
    finally:
        consumer.close()
    return records


def test_produce_avro_writes_the_events_in_the_wire_format(
    kafka: KafkaHandle, topic: str, schema_registry: SchemaRegistryHandle
) -> None:
    """Every record carries the magic byte and the id registered as {topic}-value, and decodes
    to the event the same seed makes, ts as the same instant."""
    done = _produce("--format", "avro", "--count", str(COUNT), "--seed", "11",
                    "--start-time", START, "--bootstrap-servers", kafka.bootstrap,
                    "--topic", topic, "--schema-registry-url", schema_registry.url)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["delivered"] == COUNT
    assert report["format"] == "avro"
    assert report["subject"] == f"{topic}-value"
    latest = schema_registry.client().get_latest_version(f"{topic}-value")
    assert report["schema_id"] == latest.schema_id
    assert json.loads(latest.schema.schema_str)["name"] == EVENT_AVRO_SCHEMA["name"]

    expected = list(islice(EventStream(11, start=datetime(2026, 1, 1, tzinfo=UTC)), COUNT))
    records = _consume(kafka.bootstrap, topic, COUNT)
    assert len(records) == COUNT
    decode = AvroDeserializer(schema_registry.client())
    context = SerializationContext(topic, MessageField.VALUE)
    by_id = {}
    for key, value in records:
        assert value[0] == 0
        assert int.from_bytes(value[1:5], "big") == latest.schema_id
        event = decode(value, context)
        assert key == event["user_id"].encode()
        by_id[event["event_id"]] = event
    for event in expected:
        data = json.loads(event.value)
        got = by_id[data["event_id"]]
        assert got == {**data, "ts": datetime.fromisoformat(data["ts"])}


def test_produce_avro_without_a_registry_says_so_and_sends_nothing(
    kafka: KafkaHandle, topic: str
) -> None:
    """A registry that cannot be reached is one clear line, a non-zero exit, and no records."""
    done = _produce("--format", "avro", "--count", "5", "--bootstrap-servers", kafka.bootstrap,
                    "--topic", topic, "--schema-registry-url", "http://127.0.0.1:9")
    assert done.returncode != 0
    assert "cannot register the events' Avro schema" in done.stderr
    assert "Traceback" not in done.stderr
    watch = TopicWatch(kafka.bootstrap, topic)
    try:
        assert watch.size() == 0
    finally:
        watch.close()
