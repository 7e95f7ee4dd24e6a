"""The harness's schema registry (Apicurio through its Confluent-compatible API) works with
confluent-kafka's serializers for Avro, JSON Schema and Protobuf, and survives a restart."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

if TYPE_CHECKING:
    from conftest import SchemaRegistryHandle

AVRO_SCHEMA = {
    "type": "record",
    "name": "Event",
    "namespace": "test.harness",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": "string"},
        {"name": "score", "type": ["null", "double"], "default": None},
    ],
}
JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Event",
    "type": "object",
    "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
    "required": ["id", "name"],
}
RECORD = {"id": 7, "name": "seven", "score": 0.5}


def _wire(payload: bytes) -> tuple[int, int]:
    """The Confluent wire format's magic byte and schema id of ``payload``."""
    return payload[0], int.from_bytes(payload[1:5], "big")


def _protobuf_message_class(package: str) -> Any:
    """A message class ``Event {int64 id = 1; string name = 2;}`` built at run time (no protoc)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"{package.replace('.', '/')}/event.proto", package=package, syntax="proto3"
    )
    message = proto.message_type.add(name="Event")
    message.field.add(
        name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )  # fmt: skip
    message.field.add(
        name="name", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Event"))


def test_avro_registers_and_round_trips(
    schema_registry: SchemaRegistryHandle, subject_prefix: str
) -> None:
    """An Avro record serialized through the registry decodes to the same values by its id."""
    client = schema_registry.client()
    topic = f"{subject_prefix}-avro"
    schema_id = client.register_schema(
        f"{topic}-value", Schema(json.dumps(AVRO_SCHEMA), "AVRO")
    )
    serializer = AvroSerializer(
        client, json.dumps(AVRO_SCHEMA), conf={"auto.register.schemas": False}
    )
    context = SerializationContext(topic, MessageField.VALUE)
    payload = serializer(RECORD, context)
    assert payload is not None
    assert _wire(payload) == (0, schema_id)
    fresh = schema_registry.client()  # no cache: the schema is fetched by id
    assert AvroDeserializer(fresh)(payload, context) == RECORD
    assert client.get_latest_version(f"{topic}-value").schema_id == schema_id


def test_json_schema_registers_and_round_trips(
    schema_registry: SchemaRegistryHandle, subject_prefix: str
) -> None:
    """A JSON Schema record serialized through the registry decodes to the same values."""
    client = schema_registry.client()
    topic = f"{subject_prefix}-json"
    serializer = JSONSerializer(json.dumps(JSON_SCHEMA), client)
    context = SerializationContext(topic, MessageField.VALUE)
    record = {"id": 7, "name": "seven"}
    payload = serializer(record, context)
    assert payload is not None
    magic, schema_id = _wire(payload)
    assert magic == 0
    assert client.get_latest_version(f"{topic}-value").schema_id == schema_id
    assert json.loads(payload[5:]) == record
    assert JSONDeserializer(None, schema_registry_client=schema_registry.client())(
        payload, context
    ) == record


def test_protobuf_round_trips_with_compatibility_none(
    schema_registry: SchemaRegistryHandle, subject_prefix: str
) -> None:
    """A Protobuf message serialized through the registry (subject compatibility NONE) decodes
    to the same fields."""
    client = schema_registry.client()
    topic = f"{subject_prefix}-protobuf"
    event = _protobuf_message_class(f"test.harness.p{subject_prefix[-8:]}")
    serializer = ProtobufSerializer(event, client, {"use.deprecated.format": False})
    context = SerializationContext(topic, MessageField.VALUE)
    payload = serializer(event(id=7, name="seven"), context)
    assert payload is not None
    # Apicurio keeps subject settings only for a subject that exists (404 before the first
    # version); later versions of this subject are then registered without a check.
    client.set_compatibility(f"{topic}-value", "NONE")
    assert client.get_compatibility(f"{topic}-value") == "NONE"
    magic, schema_id = _wire(payload)
    assert magic == 0
    assert client.get_latest_version(f"{topic}-value").schema_id == schema_id
    decoded = ProtobufDeserializer(event, {"use.deprecated.format": False})(payload, context)
    assert (decoded.id, decoded.name) == (7, "seven")


def test_registry_keeps_schemas_across_a_restart(
    schema_registry: SchemaRegistryHandle, subject_prefix: str
) -> None:
    """A stopped registry refuses requests, and once started again serves the same id."""
    if not schema_registry.managed:
        pytest.skip("the registry is named by the environment")
    client = schema_registry.client()
    subject = f"{subject_prefix}-restart-value"
    schema_id = client.register_schema(subject, Schema(json.dumps(AVRO_SCHEMA), "AVRO"))
    schema_registry.stop()
    assert not schema_registry.alive()
    with pytest.raises(Exception, match=r"(?i)connect|refused"):  # the HTTP client's own error
        schema_registry.client().get_schema(schema_id)
    schema_registry.start()
    fetched = schema_registry.client().get_schema(schema_id)
    assert json.loads(fetched.schema_str)["name"] == "Event"


def test_a_paused_registry_times_requests_out_and_answers_after_resume(
    schema_registry: SchemaRegistryHandle, subject_prefix: str
) -> None:
    """While paused (SIGSTOP) the registry accepts connections but never answers; resumed, it
    serves the same schema."""
    if not schema_registry.managed:
        pytest.skip("the registry is named by the environment")
    from confluent_kafka.schema_registry import SchemaRegistryClient

    client = schema_registry.client()
    schema_id = client.register_schema(
        f"{subject_prefix}-pause-value", Schema(json.dumps(AVRO_SCHEMA), "AVRO")
    )
    schema_registry.pause()
    try:
        hung = SchemaRegistryClient({"url": schema_registry.url, "timeout": 2,
                                     "max.retries": 0})
        with pytest.raises(Exception) as raised:  # noqa: PT011 - the HTTP client's own type
            hung.get_schema(schema_id)
        assert "timeout" in type(raised.value).__name__.lower(), repr(raised.value)
    finally:
        schema_registry.resume()
    assert json.loads(schema_registry.client().get_schema(schema_id).schema_str)["name"] == "Event"
