"""The benchmark's events Avro-encoded through a schema registry, for the Avro drain.

``scripts/bench`` with the ``bridge-avro`` contender pre-produces the same events as the JSON
backlog (``bench_events.event(i)``) into a second topic, Avro-encoded in the Confluent wire
format (magic byte 0, the 4-byte schema id, the Avro body; the bytes confluent-kafka's
``AvroSerializer`` writes), the schema registered as ``{topic}-value``. The bridge then drains that
topic with ``VALUE_FORMAT=avro``. The registry is Apicurio Registry from the services cache,
started like Kafka (or the one WAL_BRIDGE_TEST_SCHEMA_REGISTRY names).

The Avro schema has one field per JSON field, in the same order, with the types their values
have: ``ts_ms`` a ``timestamp-millis``, the rest plain Avro types.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from scripts import services
from scripts.bench_events import event
from scripts.bench_produce import produce_backlog
from scripts.services import schema_registry as registry_service

AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "BenchEvent",
    "namespace": "wal_bridge.bench",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "event_type", "type": "string"},
        {"name": "user_id", "type": "long"},
        {"name": "session_id", "type": "string"},
        {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "country", "type": "string"},
        {"name": "device", "type": "string"},
        {"name": "page", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "quantity", "type": "long"},
        {"name": "is_returning", "type": "boolean"},
    ],
}


def start_registry(stack: ExitStack, workdir: Path, say: Callable[[str], None]) -> str:
    """The Confluent-compatible URL of a schema registry: named by the environment, or an
    Apicurio Registry started from the services cache (closed by ``stack``)."""
    address = services.external("schema_registry")
    if address is not None:
        return address
    services.provision_all(("schema_registry",))
    registry = registry_service.ApicurioRegistry(
        registry_service.provision(services.cache_root()), workdir / "schema-registry")
    say(f"starting the schema registry (Apicurio Registry {registry_service.VERSION}) on "
        f"{registry.url}")
    stack.callback(registry.close)
    registry.start()
    return registry.ccompat_url


def encoder(registry_url: str, topic: str) -> tuple[int, Callable[[int], bytes]]:
    """Register AVRO_SCHEMA as ``{topic}-value``; return its id and ``value(i)``, event ``i``
    in the Confluent wire format.

    ``value`` writes the frame itself (magic byte, the id, fastavro's schemaless body): the
    bytes confluent-kafka's ``AvroSerializer`` writes, at several times its speed. The first
    events are checked against the serializer; a difference raises RuntimeError.
    """
    import io

    import fastavro
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = SchemaRegistryClient({"url": registry_url})
    schema_str = json.dumps(AVRO_SCHEMA)
    schema_id = client.register_schema(f"{topic}-value", Schema(schema_str, "AVRO"))
    parsed = fastavro.parse_schema(AVRO_SCHEMA)
    header = b"\x00" + schema_id.to_bytes(4, "big")

    def value(i: int) -> bytes:
        body = io.BytesIO()
        body.write(header)
        fastavro.schemaless_writer(body, parsed, event(i))
        return body.getvalue()

    serializer = AvroSerializer(client, schema_str, conf={"auto.register.schemas": False})
    context = SerializationContext(topic, MessageField.VALUE)
    for i in range(100):
        if value(i) != serializer(event(i), context):
            raise RuntimeError(f"event {i}: the Avro frame differs from AvroSerializer's")
    return schema_id, value


def prepare(stack: ExitStack, workdir: Path, *, bootstrap: str, topic: str, events: int,
            partitions: int, wanted: bool, say: Callable[[str], None],
            progress: Any, compression: str = "none") -> tuple[str | None, dict[str, Any] | None]:
    """For the ``bridge-avro`` contender (``wanted``): start (or find) the registry, create
    ``topic`` and produce the Avro backlog into it. Returns the registry's URL and what
    :func:`produce` returned, or ``(None, None)`` when not wanted."""
    if not wanted:
        return None, None
    from scripts.services import kafka as kafka_service

    registry_url = start_registry(stack, workdir, say)
    kafka_service.create_topic(bootstrap, topic, partitions)
    say(f"producing the same {events:,} events Avro-encoded into {topic}")
    produced = produce(bootstrap, topic, events, partitions, registry_url=registry_url,
                       progress=progress, compression=compression)
    say(f"produced in {produced['duration_s']} s ({produced['records_per_s']:,} records/s)")
    return registry_url, produced


def produce(bootstrap: str, topic: str, events: int, partitions: int, *, registry_url: str,
            progress: Any, compression: str = "none") -> dict[str, Any]:
    """Produce events ``0..events-1`` Avro-encoded, round-robin over the partitions, like the
    JSON backlog (:func:`scripts.bench_produce.produce_backlog`); ``progress`` is the
    benchmark's ``Progress``. Returns what was produced: counts, bytes, rate, the subject and
    the schema id. Raises RuntimeError as produce_backlog does."""
    schema_id, value_of = encoder(registry_url, topic)
    produced = produce_backlog(bootstrap, topic, events, partitions, value_of=value_of,
                               progress=progress, compression=compression)
    return {"topic": topic, "subject": f"{topic}-value", "schema_id": schema_id, **produced}

