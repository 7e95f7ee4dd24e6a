"""Registry formats end to end: records produced with confluent-kafka's own serializers (Avro,
Protobuf, JSON Schema) through the harness's schema registry, the bridge as a subprocess with
VALUE_FORMAT set, and every record read back from the bucket: typed columns, schema evolution,
dead letters with their reasons, and a registry stopped mid-run."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from tests.native import free_port
from tests.support import BridgeProcess, bridge_env, produce, read_gcs, wait_for

if TYPE_CHECKING:
    from conftest import GcsHandle, KafkaHandle, SchemaRegistryHandle

UTC = dt.UTC
V1 = {
    "type": "record", "name": "Order", "namespace": "test.bridge",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "customer", "type": "string"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12,
                                    "scale": 2}},
        {"name": "status", "type": {"type": "enum", "name": "Status",
                                    "symbols": ["NEW", "PAID"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "ship_to", "type": {"type": "record", "name": "Address", "fields": [
            {"name": "city", "type": "string"}, {"name": "zip", "type": ["null", "int"]}]}},
        {"name": "legacy", "type": "string", "default": ""},
    ],
}
# Version 2: a field added with a default, a field removed (backward compatible).
V2 = {**V1, "fields": [f for f in V1["fields"] if f["name"] != "legacy"]
      + [{"name": "channel", "type": "string", "default": "web"}]}
# Version 3: a field's type changed (incompatible: registered with compatibility NONE).
V3 = {**V1, "fields": [{"name": "id", "type": "string"} if f["name"] == "id" else f
                       for f in V1["fields"]]}


def order(i: int, version: int = 1) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": i, "customer": f"c-{i % 7}", "note": None if i % 2 else f"n{i}",
        "placed_at": dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=i),
        "day": dt.date(2026, 1, 1) + dt.timedelta(days=i % 30),
        "amount": Decimal(i) / 4, "status": "PAID" if i % 3 else "NEW",
        "tags": [f"t{i % 4}"] * (i % 3), "attrs": {"n": i}, "ship_to": {"city": "Oslo", "zip": i},
    }
    if version == 1:
        record["legacy"] = f"l{i}"
    else:
        record["channel"] = "app"
    return record


def _bridge(kafka: KafkaHandle, gcs: GcsHandle, registry: SchemaRegistryHandle, topic: str,
            bucket: str, tmp_path: Path, value_format: str,
            key_format: str = "raw") -> BridgeProcess:
    env = bridge_env(bootstrap=kafka.bootstrap, topic=topic, destination=f"gs://{bucket}/raw",
                     wal_dir=tmp_path / "wal", emulator=gcs.url, VALUE_FORMAT=value_format,
                     KEY_FORMAT=key_format, SCHEMA_REGISTRY_URL=registry.url, BATCH_SIZE="200")
    return BridgeProcess(env, tmp_path / "bridge.log")


def _landed(gcs: GcsHandle, bucket: str, prefix: str, expected: int,
            bridge: BridgeProcess, timeout: float = 120) -> list[dict[str, Any]]:
    client = gcs.client()

    def enough() -> object:
        landed = read_gcs(client, bucket, prefix)
        return landed if landed.rows >= expected else None

    wait_for(enough, timeout, f"{expected} rows under gs://{bucket}/{prefix}", interval=1.0,
             on_timeout=lambda: bridge.log()[-6000:])
    time.sleep(2)  # anything more that would land (a duplicate) lands now
    landed = read_gcs(client, bucket, prefix)
    return [row for t in landed.tables.values() for row in t.to_pylist()]


def _readyz(port: int) -> tuple[int, str]:
    """Status and body of the bridge's /readyz (0 and "" while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _one_row_each(rows: list[dict[str, Any]], count: int) -> dict[tuple[int, int], dict]:
    by_identity = {(r["_kafka_partition"], r["_kafka_offset"]): r for r in rows}
    assert len(by_identity) == len(rows) == count, "a record landed twice, or not at all"
    return by_identity


def _avro_payloads(client: Any, topic: str, schema: dict[str, Any],
                   records: list[dict[str, Any]]) -> list[bytes]:
    serializer = AvroSerializer(client, json.dumps(schema))
    context = SerializationContext(topic, MessageField.VALUE)
    return [serializer(r, context) for r in records]  # type: ignore[misc]


def test_avro_lands_typed_evolves_and_dead_letters_bad_input(
    kafka: KafkaHandle, gcs: GcsHandle, schema_registry: SchemaRegistryHandle, topic: str,
    bucket: str, tmp_path: Path,
) -> None:
    """Avro records of two compatible versions land once each in one typed table schema (the
    removed field NULL, the added one in _extra), with their Avro keys decoded; bad input is a
    dead letter with its reason."""
    client = schema_registry.client()
    first = _avro_payloads(client, topic, V1, [order(i) for i in range(300)])
    second = _avro_payloads(client, topic, V2, [order(i, 2) for i in range(300, 500)])
    v1_id, v2_id = (int.from_bytes(p[1:5], "big") for p in (first[0], second[0]))
    assert v1_id != v2_id
    bad = [b'{"id": 1}', b"\x00\x7f\xff\xff\xf0" + first[0][5:], first[0][:5] + b"\xff\xff"]
    values = [*first, *bad, *second]
    key_serializer = AvroSerializer(client, '"string"')
    key_context = SerializationContext(topic, MessageField.KEY)
    keys = [key_serializer(f"k{i}", key_context) if i % 5 else b"plain" for i in range(503)]
    produce(kafka.bootstrap, topic, values, key=keys.__getitem__)
    bridge = _bridge(kafka, gcs, schema_registry, topic, bucket, tmp_path, "avro",
                     key_format="avro").start()
    rows = _one_row_each(_landed(gcs, bucket, "raw/", 500, bridge), 500)
    dead = _landed(gcs, bucket, "dead-letter/", 3, bridge)
    bridge.terminate()
    assert sorted(d["_reason"] for d in dead) == ["no_magic_byte", "not_decodable",
                                                 "unknown_schema_id"]
    assert {d["_value"] for d in dead} == set(bad)
    by_id = {r["id"]: r for r in rows.values()}
    assert sorted(by_id) == list(range(500))
    r = by_id[10]
    assert r["placed_at"] == dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    assert r["day"] == dt.date(2026, 1, 11)
    assert r["amount"] == Decimal("2.50")
    assert (r["status"], r["tags"], r["note"]) == ("PAID", ["t2"], "n10")
    assert r["attrs"] == [{"key": "n", "value": 10}]
    assert r["ship_to"] == {"city": "Oslo", "zip": 10}
    assert r["legacy"] == "l10"
    assert r["_extra"] is None
    later = by_id[410]
    assert later["legacy"] is None  # removed in version 2: a NULL column
    assert json.loads(later["_extra"]) == {"channel": "app"}  # added: where JSON puts new keys
    assert later["amount"] == Decimal("102.50")
    # KEY_FORMAT=avro: the decoded key as JSON text, the bytes kept; no wire format: NULL.
    assert (by_id[11]["_kafka_key_decoded"], by_id[11]["_kafka_key"]) == ('"k11"', keys[11])
    assert (by_id[5]["_kafka_key_decoded"], by_id[5]["_kafka_key"]) == (None, b"plain")


def test_incompatible_version_waits_in_the_wal_until_the_operator_decides(
    kafka: KafkaHandle, gcs: GcsHandle, schema_registry: SchemaRegistryHandle, topic: str,
    bucket: str, tmp_path: Path,
) -> None:
    """A version that changes a field's type stops conversion with the subject, version and
    field named, ships nothing wrong and drops nothing; the records stay in the WAL."""
    client = schema_registry.client()
    first = _avro_payloads(client, topic, V1, [order(i) for i in range(50)])
    client.set_compatibility(f"{topic}-value", "NONE")
    third = _avro_payloads(client, topic, V3, [{**order(i), "id": f"s{i}"} for i in range(50, 60)])
    produce(kafka.bootstrap, topic, first, partitions=1)
    bridge = _bridge(kafka, gcs, schema_registry, topic, bucket, tmp_path, "avro").start()
    _landed(gcs, bucket, "raw/", 50, bridge)
    produce(kafka.bootstrap, topic, third, partitions=1)
    wait_for(lambda: "schema_incompatible" in bridge.log(), 60, "the incompatible change",
             on_timeout=lambda: bridge.log()[-4000:])
    line = next(ln for ln in bridge.log().splitlines() if "schema_incompatible" in ln)
    assert f"{topic}-value version 2" in line
    assert "field id is STRING in the writer's schema, INT64 in the table" in line
    assert bridge.terminate() == 0
    landed = read_gcs(gcs.client(), bucket, "raw/")
    assert landed.rows == 50  # the ten records of version 3 are not shipped ...
    assert read_gcs(gcs.client(), bucket, "dead-letter/").rows == 0  # ... nor dead letters
    listing = [p.name for p in (tmp_path / "wal").rglob("*") if p.is_file()]
    assert any("sealed" in n or n.endswith(".wal") for n in listing), listing  # ... but kept


def _protobuf_class(package: str) -> Any:
    """``Reading {int64 id; string sensor; Timestamp at; repeated double values;
    map<string, string> labels; Kind kind; Inner inner; oneof where {string room; int64 rack}}``
    built at run time."""
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"{package.replace('.', '/')}/reading.proto", package=package, syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"])
    t = descriptor_pb2.FieldDescriptorProto
    kind = proto.enum_type.add(name="Kind")
    kind.value.add(name="KIND_UNKNOWN", number=0)
    kind.value.add(name="KIND_HEAT", number=1)
    inner = proto.message_type.add(name="Inner")
    inner.field.add(name="depth", number=1, type=t.TYPE_INT32, label=t.LABEL_OPTIONAL)
    msg = proto.message_type.add(name="Reading")
    entry = msg.nested_type.add(name="LabelsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=t.TYPE_STRING, label=t.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=t.TYPE_STRING, label=t.LABEL_OPTIONAL)
    msg.oneof_decl.add(name="where")
    fields = [
        ("id", 1, t.TYPE_INT64, t.LABEL_OPTIONAL, None, None),
        ("sensor", 2, t.TYPE_STRING, t.LABEL_OPTIONAL, None, None),
        ("at", 3, t.TYPE_MESSAGE, t.LABEL_OPTIONAL, ".google.protobuf.Timestamp", None),
        ("values", 4, t.TYPE_DOUBLE, t.LABEL_REPEATED, None, None),
        ("labels", 5, t.TYPE_MESSAGE, t.LABEL_REPEATED, f".{package}.Reading.LabelsEntry", None),
        ("kind", 6, t.TYPE_ENUM, t.LABEL_OPTIONAL, f".{package}.Kind", None),
        ("inner", 7, t.TYPE_MESSAGE, t.LABEL_OPTIONAL, f".{package}.Inner", None),
        ("room", 8, t.TYPE_STRING, t.LABEL_OPTIONAL, None, 0),
        ("rack", 9, t.TYPE_INT64, t.LABEL_OPTIONAL, None, 0),
    ]
    for name, number, kind_, label, type_name, oneof in fields:
        f = msg.field.add(name=name, number=number, type=kind_, label=label)
        if type_name:
            f.type_name = type_name
        if oneof is not None:
            f.oneof_index = oneof
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Reading"))


def test_protobuf_lands_typed_and_waits_out_a_stopped_registry(
    kafka: KafkaHandle, gcs: GcsHandle, schema_registry: SchemaRegistryHandle, topic: str,
    bucket: str, tmp_path: Path,
) -> None:
    """Protobuf records land once each as typed columns (Timestamp, repeated, map, enum, nested,
    oneof); while the registry is stopped nothing lands and nothing is a dead letter."""
    client = schema_registry.client()
    reading = _protobuf_class(f"test.bridge.p{topic[-8:]}")
    serializer = ProtobufSerializer(reading, client, {"use.deprecated.format": False})
    context = SerializationContext(topic, MessageField.VALUE)
    values = []
    for i in range(400):
        message = reading(id=i, sensor=f"s{i % 5}", values=[i / 2, 1.5], labels={"a": str(i)},
                          kind=i % 2, inner={"depth": i})
        message.at.FromDatetime(dt.datetime(2026, 2, 1, tzinfo=UTC) + dt.timedelta(minutes=i))
        if i % 2:
            message.room = f"r{i}"
        else:
            message.rack = i
        values.append(serializer(message, context))
    client.set_compatibility(f"{topic}-value", "NONE")
    produce(kafka.bootstrap, topic, values)
    schema_registry.stop()
    bridge = _bridge(kafka, gcs, schema_registry, topic, bucket, tmp_path, "protobuf").start()
    wait_for(lambda: "registry_retrying" in bridge.log(), 60, "conversion waiting",
             on_timeout=lambda: bridge.log()[-4000:])
    time.sleep(3)
    assert read_gcs(gcs.client(), bucket, "raw/").rows == 0
    assert read_gcs(gcs.client(), bucket, "dead-letter/").rows == 0
    schema_registry.start()
    rows = _one_row_each(_landed(gcs, bucket, "raw/", 400, bridge), 400)
    bridge.terminate()
    assert read_gcs(gcs.client(), bucket, "dead-letter/").rows == 0
    by_id = {r["id"]: r for r in rows.values()}
    assert sorted(by_id) == list(range(400))
    r = by_id[7]
    assert r["at"] == dt.datetime(2026, 2, 1, 0, 7, tzinfo=UTC)
    assert (r["sensor"], r["values"], r["kind"]) == ("s2", [3.5, 1.5], "KIND_HEAT")
    assert r["labels"] == [{"key": "a", "value": "7"}]
    assert r["inner"] == {"depth": 7}
    assert (r["room"], r["rack"]) == ("r7", None)
    assert (by_id[8]["room"], by_id[8]["rack"]) == (None, 8)


JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "Click", "type": "object",
    "properties": {"id": {"type": "integer"}, "page": {"type": "string"},
                   "ms": {"type": "number"}},
    "required": ["id", "page"],
}


def test_json_schema_feeds_the_json_path_and_auto_reads_each_id(
    kafka: KafkaHandle, gcs: GcsHandle, schema_registry: SchemaRegistryHandle, topic: str,
    bucket: str, tmp_path: Path,
) -> None:
    """JSON Schema records (VALUE_FORMAT=auto) are validated and land as JSON rows once each;
    an Avro record in the same topic is a format_mismatch dead letter, kept byte for byte."""
    client = schema_registry.client()
    serializer = JSONSerializer(json.dumps(JSON_SCHEMA), client)
    context = SerializationContext(topic, MessageField.VALUE)
    values = [serializer({"id": i, "page": f"/p{i % 9}", "ms": i * 1.5}, context)
              for i in range(300)]
    stray = _avro_payloads(client, f"{topic}-other", V1, [order(1)])[0]
    produce(kafka.bootstrap, topic, [*values, stray], partitions=1)
    bridge = _bridge(kafka, gcs, schema_registry, topic, bucket, tmp_path, "auto").start()
    rows = _one_row_each(_landed(gcs, bucket, "raw/", 300, bridge), 300)
    dead = _landed(gcs, bucket, "dead-letter/", 1, bridge)
    bridge.terminate()
    by_id = {r["id"]: r for r in rows.values()}
    assert sorted(by_id) == list(range(300))
    assert (by_id[10]["page"], by_id[10]["ms"]) == ("/p1", 15.0)
    assert [(d["_reason"], d["_value"]) for d in dead] == [("format_mismatch", stray)]
    assert pa.types.is_int64(pa.array([by_id[1]["id"]]).type)


def test_a_new_version_met_while_the_registry_is_down_waits_for_it(
    kafka: KafkaHandle, gcs: GcsHandle, schema_registry: SchemaRegistryHandle, topic: str,
    bucket: str, tmp_path: Path,
) -> None:
    """The registry stopped mid-run: records of a schema id the bridge has not fetched yet wait
    (no dead letter, nothing shipped wrong), consuming pauses (records produced meanwhile stay
    in Kafka) and resumes when it is back, and every record lands once."""
    client = schema_registry.client()
    first = _avro_payloads(client, topic, V1, [order(i) for i in range(100)])
    second = _avro_payloads(client, topic, V2, [order(i, 2) for i in range(100, 250)])
    third = _avro_payloads(client, topic, V2, [order(i, 2) for i in range(250, 400)])
    port = free_port()
    bridge = _bridge(kafka, gcs, schema_registry, topic, bucket, tmp_path, "avro").start(
        METRICS_PORT=str(port))
    produce(kafka.bootstrap, topic, first)
    _landed(gcs, bucket, "raw/", 100, bridge)
    schema_registry.stop()
    produce(kafka.bootstrap, topic, second)
    wait_for(lambda: "registry_retrying" in bridge.log(), 60, "conversion waiting",
             on_timeout=lambda: bridge.log()[-4000:])
    paused = wait_for(lambda: bridge.events("consumer_paused"), 30, "consumer_paused",
                      on_timeout=lambda: bridge.log()[-4000:])
    assert paused[0]["reason"].startswith("schema registry unreachable: "), paused[0]
    status, body = _readyz(port)
    assert status == 503
    assert "consumer paused: schema registry unreachable: " in body, body
    assert read_gcs(gcs.client(), bucket, "raw/").rows == 100
    produce(kafka.bootstrap, topic, third)
    time.sleep(4)  # two BATCH_TIMEOUTs: a consumer still reading would seal them now
    assert not bridge.events("consumer_resumed")
    sealed = sum(e["records"] for e in bridge.events("segment_sealed"))
    assert sealed <= 250, f"{sealed} records sealed while paused (the third batch was read)"
    schema_registry.start()
    rows = _one_row_each(_landed(gcs, bucket, "raw/", 400, bridge), 400)
    ready = _readyz(port)
    bridge.terminate()
    assert bridge.events("consumer_resumed")
    assert ready == (200, "ready\n"), ready
    assert read_gcs(gcs.client(), bucket, "dead-letter/").rows == 0
    by_id = {r["id"]: r for r in rows.values()}
    assert sorted(by_id) == list(range(400))
    assert json.loads(by_id[200]["_extra"]) == {"channel": "app"}
    assert by_id[200]["placed_at"] == dt.datetime(2026, 1, 1, 0, 3, 20, tzinfo=UTC)
    assert json.loads(by_id[399]["_extra"]) == {"channel": "app"}
