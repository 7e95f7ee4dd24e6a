"""Protobuf message descriptors as typed columns, and decoded messages as their values:
scalars, enums, maps, repeated fields, oneofs, well-known types, recursion (no registry:
descriptors built here)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)

from wal_bridge.conversion import protobuf, typed
from wal_bridge.schema import FieldType

T = descriptor_pb2.FieldDescriptorProto


def _message_class(fields: list[tuple[str, int, int, int, str | None]],
                   *, oneof: set[str] = frozenset(), nested: str | None = None) -> Any:
    """A message ``M`` with ``fields`` (name, number, type, label, type name), built at run
    time like the registry's; ``nested`` adds ``message N {int32 depth = 1; M again = 2}``."""
    proto = descriptor_pb2.FileDescriptorProto(
        name="test/m.proto", package="t", syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto",
                    "google/protobuf/struct.proto", "google/protobuf/duration.proto"])
    kind = proto.enum_type.add(name="Kind")
    kind.value.add(name="KIND_ZERO", number=0)
    kind.value.add(name="KIND_ONE", number=1)
    message = proto.message_type.add(name="M")
    entry = message.nested_type.add(name="CountsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=T.TYPE_INT64, label=T.LABEL_OPTIONAL)
    if oneof:
        message.oneof_decl.add(name="choice")
    for name, number, kind_, label, type_name in fields:
        f = message.field.add(name=name, number=number, type=kind_, label=label)
        if type_name:
            f.type_name = type_name
        if name in oneof:
            f.oneof_index = 0
    if nested:
        inner = proto.message_type.add(name="N")
        inner.field.add(name="again", number=2, type=T.TYPE_MESSAGE, label=T.LABEL_OPTIONAL,
                        type_name=".t.M")
    pool = descriptor_pool.DescriptorPool()
    for module in (timestamp_pb2, wrappers_pb2, struct_pb2, duration_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.M"))


OPT, REP = T.LABEL_OPTIONAL, T.LABEL_REPEATED
FIELDS = [
    ("i32", 1, T.TYPE_INT32, OPT, None), ("u64", 2, T.TYPE_UINT64, OPT, None),
    ("d", 3, T.TYPE_DOUBLE, OPT, None), ("b", 4, T.TYPE_BOOL, OPT, None),
    ("s", 5, T.TYPE_STRING, OPT, None), ("raw", 6, T.TYPE_BYTES, OPT, None),
    ("kind", 7, T.TYPE_ENUM, OPT, ".t.Kind"),
    ("at", 8, T.TYPE_MESSAGE, OPT, ".google.protobuf.Timestamp"),
    ("maybe", 9, T.TYPE_MESSAGE, OPT, ".google.protobuf.Int64Value"),
    ("meta", 10, T.TYPE_MESSAGE, OPT, ".google.protobuf.Struct"),
    ("took", 11, T.TYPE_MESSAGE, OPT, ".google.protobuf.Duration"),
    ("many", 12, T.TYPE_STRING, REP, None), ("counts", 13, T.TYPE_MESSAGE, REP, ".t.M.CountsEntry"),
    ("room", 14, T.TYPE_STRING, OPT, None), ("rack", 15, T.TYPE_INT64, OPT, None),
]


@pytest.fixture(scope="module")
def m() -> Any:
    return _message_class(FIELDS, oneof={"room", "rack"})


def test_each_protobuf_field_has_its_column(m: Any) -> None:
    """Scalars, enums, well-known types, repeated fields and maps map to the documented
    column types."""
    columns = {c.field.name: c.field.to_dict() for c in protobuf.columns(m.DESCRIPTOR)}
    assert {n: c["type"] for n, c in columns.items()} == {
        "i32": "int64", "u64": "int64", "d": "float64", "b": "bool", "s": "string",
        "raw": "bytes", "kind": "string", "at": "timestamp", "maybe": "int64", "meta": "json",
        "took": "record", "many": "string", "counts": "record", "room": "string",
        "rack": "int64"}
    assert columns["many"]["mode"] == "REPEATED"
    assert columns["counts"] == {"name": "counts", "type": "record", "mode": "REPEATED",
                                 "fields": [{"name": "key", "type": "string"},
                                            {"name": "value", "type": "int64"}]}
    assert [f["name"] for f in columns["took"]["fields"]] == ["seconds", "nanos"]


def test_message_values_fill_their_columns(m: Any) -> None:
    """A decoded message gives exact values: Timestamp in microseconds, wrappers unwrapped,
    enums by name, the unset oneof member and unset messages NULL."""
    message = m(i32=-5, u64=7, d=1.5, b=True, s="x", raw=b"\x00", kind=1, many=["a", "b"],
                counts={"k": 3}, room="r1")
    message.at.FromDatetime(dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC))
    message.maybe.value = 0
    message.meta.update({"a": [1, "two"]})
    message.took.seconds = 90
    columns = protobuf.columns(m.DESCRIPTOR)
    table = typed.first_schema(columns)
    values, extra = typed.Plan.of(columns, table).row(protobuf.to_raw(message))
    row = {n: a.to_pylist()[0] for n, a in typed.arrays(table, [values], [extra]).items()}
    assert row["at"] == dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert (row["i32"], row["u64"], row["d"], row["b"], row["s"], row["raw"]) == (
        -5, 7, 1.5, True, "x", b"\x00")
    assert (row["kind"], row["maybe"], row["many"]) == ("KIND_ONE", 0, ["a", "b"])
    assert json.loads(row["meta"]) == {"a": [1, "two"]}
    assert row["took"] == {"seconds": 90, "nanos": 0}
    assert row["counts"] == [{"key": "k", "value": 3}]
    assert (row["room"], row["rack"]) == ("r1", None)
    assert row["_extra"] is None
    empty = protobuf.to_raw(m())
    assert (empty["at"], empty["maybe"], empty["took"], empty["i32"]) == (None, None, None, 0)


def test_values_bigquery_cannot_hold_go_to_extra(m: Any) -> None:
    """A uint64 over INT64's largest value and an unknown enum number are kept exactly."""
    message = m(u64=2**64 - 1, kind=7)
    columns = protobuf.columns(m.DESCRIPTOR)
    table = typed.first_schema(columns)
    values, extra = typed.Plan.of(columns, table).row(protobuf.to_raw(message))
    assert values[[f.name for f in table.fields].index("u64")] is None
    assert values[[f.name for f in table.fields].index("kind")] == "7"
    assert json.loads(extra or "") == {"u64": 2**64 - 1}


def test_recursive_messages_are_json_columns() -> None:
    """A message reachable from itself is a json column (no fixed STRUCT holds it)."""
    m = _message_class([("child", 1, T.TYPE_MESSAGE, OPT, ".t.N")], nested="N")
    (column,) = protobuf.columns(m.DESCRIPTOR)
    assert column.field.type is FieldType.RECORD
    (again,) = column.field.fields
    assert again.type is FieldType.JSON
