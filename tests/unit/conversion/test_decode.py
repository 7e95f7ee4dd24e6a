"""The registry formats' conversion of a segment (Avro through a fake registry): rows, dead
letters with their reasons, keys, and a registry that does not answer."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pyarrow as pa
import pytest
from confluent_kafka.schema_registry import Schema

from tests.fakes import FakeRegistry
from wal_bridge.conversion import Converter
from wal_bridge.conversion.decode import Decoding
from wal_bridge.errors import RegistryError, SchemaEvolutionError
from wal_bridge.wal.codec import RecordColumns
from wal_bridge.wal.segment import SealInfo

V1 = {"type": "record", "name": "E", "fields": [{"name": "id", "type": "long"},
                                                 {"name": "name", "type": "string"}]}
V2 = {"type": "record", "name": "E", "fields": [{"name": "id", "type": "string"}]}


def wire(sid: int, schema: dict[str, Any], record: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return b"\x00" + sid.to_bytes(4, "big") + buffer.getvalue()


def segment(values: list[bytes | None], keys: list[bytes | None] | None = None,
            ) -> tuple[pa.RecordBatch, SealInfo]:
    n = len(values)
    batch = RecordColumns(["events"] * n, [0] * n, list(range(n)), [1_700_000_000_000] * n,
                          keys or [None] * n, values, [None] * n).to_arrow()
    return batch, SealInfo(1, "test", "raw/k.parquet", "dead-letter/k.parquet",
                           1_700_000_100_000, n, {})


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry({1: Schema(json.dumps(V1), "AVRO"), 2: Schema(json.dumps(V2), "AVRO"),
                         3: Schema('{"type": "object"}', "JSON"),
                         4: Schema('"string"', "AVRO")})


def converter(registry: FakeRegistry, **options: Any) -> Converter:
    return Converter(decoding=Decoding(registry, "avro", **options))  # type: ignore[arg-type]


def test_each_bad_record_is_a_dead_letter_with_its_reason(registry: FakeRegistry) -> None:
    """No magic byte, an unknown id, another format's id and a payload that does not decode
    are dead letters, byte for byte; the good records are rows, in order."""
    good = [wire(1, V1, {"id": i, "name": f"n{i}"}) for i in range(3)]
    bad = [b'{"id": 1}', b"\x00\x00\x00\x00\x09abc", b"\x00\x00\x00\x00\x03{}",
           good[0][:6], None]
    batch, seal = segment([good[0], *bad, good[1], good[2]])
    out = converter(registry).convert([batch], seal)
    assert out.data.column("id").to_pylist() == [0, 1, 2]
    assert out.data.column("_kafka_offset").to_pylist() == [0, 6, 7]
    assert out.dead_letters.column("_reason").to_pylist() == [
        "no_magic_byte", "unknown_schema_id", "format_mismatch", "not_decodable", "tombstone"]
    assert out.dead_letters.column("_value").to_pylist() == bad


def test_an_unreachable_registry_fails_the_segment_and_rejects_nothing(
        registry: FakeRegistry) -> None:
    """While the registry does not answer the whole segment waits (RegistryError); once it
    answers, the same segment converts in full."""
    batch, seal = segment([wire(1, V1, {"id": 1, "name": "a"})])
    conv = converter(registry)
    registry.down = True
    with pytest.raises(RegistryError) as caught:
        conv.convert([batch], seal)
    assert caught.value.transient
    registry.down = False
    out = conv.convert([batch], seal)
    assert (out.data.num_rows, out.dead_letters.num_rows) == (1, 0)


def test_schemas_are_fetched_once_per_id(registry: FakeRegistry) -> None:
    """A thousand records of one id cost one type lookup and one schema fetch."""
    batch, seal = segment([wire(1, V1, {"id": i, "name": "x"}) for i in range(1000)])
    converter(registry).convert([batch], seal)
    assert registry.calls == 2


def test_an_incompatible_id_names_subject_version_and_field(registry: FakeRegistry) -> None:
    """A later id changing a column's type raises SchemaEvolutionError naming them; with
    INCOMPATIBLE_SCHEMA=extra its value goes to _extra instead."""
    first, seal = segment([wire(1, V1, {"id": 1, "name": "a"})])
    conv = converter(registry)
    conv.convert([first], seal)
    later, seal = segment([wire(2, V2, {"id": "s"})])
    with pytest.raises(SchemaEvolutionError,
                       match=r"schema id 2 \(subject events-value version 2\).*field id is "
                             r"STRING in the writer's schema, INT64 in the table"):
        conv.convert([later], seal)
    lenient = Converter(schema=conv.store, decoding=Decoding(
        registry, "avro", incompatible="extra"))  # type: ignore[arg-type]
    out = lenient.convert([later], seal)
    assert out.data.column("id").to_pylist() == [None]
    assert out.data.column("_extra").to_pylist() == ['{"id":"s"}']


def test_keys_are_decoded_beside_the_raw_bytes(registry: FakeRegistry) -> None:
    """KEY_FORMAT=avro puts each key's JSON text in _kafka_key_decoded; a key that is not
    the wire format is NULL there and kept in _kafka_key."""
    keys = [wire(4, "string", "k1"), b"plain", None]  # type: ignore[arg-type]
    batch, seal = segment([wire(1, V1, {"id": i, "name": "x"}) for i in range(3)], keys)
    out = converter(registry, key_format="avro").convert([batch], seal)
    names = out.data.column_names
    assert names[names.index("_kafka_key") + 1] == "_kafka_key_decoded"
    assert out.data.column("_kafka_key_decoded").to_pylist() == ['"k1"', None, None]
    assert out.data.column("_kafka_key").to_pylist() == keys
