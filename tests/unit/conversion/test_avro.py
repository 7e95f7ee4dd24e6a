"""Avro writer schemas as typed columns: every kind of Avro type, BigQuery's naming and range
rules, and schema evolution against the table's schema (no registry: schemas parsed here)."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal
from typing import Any

import fastavro
import pyarrow as pa
import pytest

from wal_bridge.bigquery import table_schema
from wal_bridge.conversion import avro, typed
from wal_bridge.schema import Field, FieldType, PayloadSchema


def _columns(*fields: dict[str, Any], name: str = "R") -> list[typed.Column]:
    schema = fastavro.parse_schema({"type": "record", "name": name, "fields": list(fields)})
    return avro.columns(schema)


def _one(kind: Any) -> dict[str, Any]:
    (column,) = _columns({"name": "f", "type": kind})
    return column.field.to_dict()


KINDS = [
    ("boolean", {"type": "bool"}),
    ("int", {"type": "int64"}),
    ("long", {"type": "int64"}),
    ("float", {"type": "float64"}),
    ("double", {"type": "float64"}),
    ("string", {"type": "string"}),
    ("bytes", {"type": "bytes"}),
    ({"type": "fixed", "name": "Md5", "size": 16}, {"type": "bytes"}),
    ({"type": "enum", "name": "E", "symbols": ["A"]}, {"type": "string"}),
    (["null", "long"], {"type": "int64"}),
    (["long", "null"], {"type": "int64"}),
    (["null", "long", "string"], {"type": "json"}),
    ("null", {"type": "json"}),
    ({"type": "array", "items": "string"}, {"type": "string", "mode": "REPEATED"}),
    ({"type": "array", "items": ["null", "string"]}, {"type": "json"}),
    ({"type": "array", "items": {"type": "array", "items": "int"}}, {"type": "json"}),
    ({"type": "map", "values": "double"},
     {"type": "record", "mode": "REPEATED",
      "fields": [{"name": "key", "type": "string"}, {"name": "value", "type": "float64"}]}),
    ({"type": "record", "name": "In", "fields": [{"name": "a", "type": "int"}]},
     {"type": "record", "fields": [{"name": "a", "type": "int64"}]}),
    ({"type": "int", "logicalType": "date"}, {"type": "date"}),
    ({"type": "int", "logicalType": "time-millis"}, {"type": "time"}),
    ({"type": "long", "logicalType": "time-micros"}, {"type": "time"}),
    ({"type": "long", "logicalType": "timestamp-millis"}, {"type": "timestamp"}),
    ({"type": "long", "logicalType": "timestamp-micros"}, {"type": "timestamp"}),
    ({"type": "long", "logicalType": "timestamp-nanos"}, {"type": "int64"}),
    ({"type": "long", "logicalType": "local-timestamp-millis"}, {"type": "datetime"}),
    ({"type": "string", "logicalType": "uuid"}, {"type": "string"}),
    ({"type": "bytes", "logicalType": "decimal", "precision": 38, "scale": 9},
     {"type": "numeric", "precision": 38, "scale": 9}),
    ({"type": "bytes", "logicalType": "decimal", "precision": 40, "scale": 10},
     {"type": "bignumeric", "precision": 40, "scale": 10}),
    ({"type": "fixed", "name": "D", "size": 8, "logicalType": "decimal", "precision": 10,
      "scale": 2}, {"type": "numeric", "precision": 10, "scale": 2}),
]


@pytest.mark.parametrize(("kind", "expected"), KINDS, ids=[json.dumps(k[0]) for k in KINDS])
def test_each_avro_type_has_its_column(kind: Any, expected: dict[str, Any]) -> None:
    """Each Avro type, logical type and union shape maps to the documented column type."""
    assert _one(kind) == {"name": "f", **expected}


def test_column_types_are_the_bigquery_types_users_expect() -> None:
    """The payload columns read in BigQuery as NUMERIC, DATE, TIMESTAMP, RECORD, REPEATED."""
    columns = _columns(
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12,
                                    "scale": 2}},
        {"name": "big", "type": {"type": "bytes", "logicalType": "decimal", "precision": 50,
                                 "scale": 20}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "clock", "type": {"type": "long", "logicalType": "time-micros"}},
    )
    bq = {c["name"]: (c["type"], c["mode"]) for c in table_schema(typed.first_schema(columns))}
    assert bq["amount"] == ("NUMERIC", "NULLABLE")
    assert bq["big"] == ("BIGNUMERIC", "NULLABLE")
    assert bq["day"] == ("DATE", "NULLABLE")
    assert bq["at"] == ("TIMESTAMP", "NULLABLE")
    assert bq["tags"] == ("STRING", "REPEATED")
    assert bq["local"] == ("DATETIME", "NULLABLE")
    assert bq["clock"] == ("TIME", "NULLABLE")


def _decode(schema: dict[str, Any], record: dict[str, Any],
            table: PayloadSchema | None = None) -> tuple[list[Any], str | None, PayloadSchema]:
    """``record`` written with ``schema`` by fastavro, read back the bridge's way."""
    parsed = fastavro.parse_schema(schema)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, record)
    physical = fastavro.parse_schema(avro.physical(schema), _force=True)
    raw = fastavro.schemaless_reader(io.BytesIO(buffer.getvalue()), physical, None)
    columns = avro.columns(parsed)
    table = table or typed.first_schema(columns)
    values, extra = typed.Plan.of(columns, table).row(raw)
    return values, extra, table


TS = {"type": "long", "logicalType": "timestamp-micros"}
DAY = {"type": "int", "logicalType": "date"}


def test_logical_values_are_exact_and_out_of_range_ones_go_to_extra() -> None:
    """Timestamps and dates within BigQuery's range fill their columns; beyond it the column
    is NULL and the value is kept in _extra as written; a decimal beyond BIGNUMERIC is text."""
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "at", "type": TS}, {"name": "late", "type": TS}, {"name": "day", "type": DAY},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9,
                                    "scale": 3}},
        {"name": "huge", "type": {"type": "bytes", "logicalType": "decimal", "precision": 80,
                                  "scale": 40}},
    ]}
    far = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    record = {"at": far, "late": 253_402_300_800_000_000, "day": dt.date(1, 1, 1),
              "amount": Decimal("-12.345"), "huge": Decimal("1.5")}
    values, extra, table = _decode(schema, record)
    assert table.names == ("at", "late", "day", "amount")  # huge: no column
    arrays = typed.arrays(table, [values], [extra])
    assert arrays["at"].to_pylist() == [far]
    assert arrays["late"].to_pylist() == [None]
    assert arrays["day"].to_pylist() == [dt.date(1, 1, 1)]
    assert arrays["amount"].to_pylist() == [Decimal("-12.345")]
    assert arrays["amount"].type == pa.decimal128(9, 3)
    assert json.loads(extra or "") == {"late": 253_402_300_800_000_000,
                                       "huge": "1.5000000000000000000000000000000000000000"}


def test_names_bigquery_refuses_go_to_extra() -> None:
    """A reserved prefix, one of the bridge's own names or a second spelling differing only in
    case is no column: its values land in _extra; a nested one makes the record a json column."""
    columns = _columns(
        {"name": "_PARTITIONTIME", "type": "long"}, {"name": "_kafka_offset", "type": "long"},
        {"name": "id", "type": "long"}, {"name": "ID", "type": "long"},
        {"name": "inner", "type": {"type": "record", "name": "In", "fields": [
            {"name": "_file_name", "type": "string"}]}},
    )
    table = typed.first_schema(columns)
    assert [(f.name, f.type) for f in table.fields] == [("id", FieldType.INT64),
                                                       ("inner", FieldType.JSON)]
    values, extra = typed.Plan.of(columns, table).row(
        {"_PARTITIONTIME": 1, "_kafka_offset": 2, "id": 3, "ID": 4,
         "inner": {"_file_name": "x"}})
    assert values == [3, '{"_file_name":"x"}']
    assert json.loads(extra or "") == {"_PARTITIONTIME": 1, "_kafka_offset": 2, "ID": 4}


def test_recursive_records_are_json_columns() -> None:
    """A record that contains itself cannot be a fixed STRUCT: it is a json column."""
    (column,) = _columns({"name": "next", "type": ["null", "Node"]}, name="Node")
    assert column.field == Field("next", FieldType.JSON)
    assert column.convert({"next": None}) == '{"next":null}'


V1 = {"type": "record", "name": "R", "fields": [
    {"name": "id", "type": "long"}, {"name": "gone", "type": "string", "default": ""},
    {"name": "inner", "type": {"type": "record", "name": "In", "fields": [
        {"name": "a", "type": "int"}]}}]}


def test_compatible_versions_keep_one_table_schema() -> None:
    """A field added (top level or nested) lands in _extra, a field removed is NULL, and the
    table's schema stays the first version's."""
    _, _, table = _decode(V1, {"id": 1, "gone": "g", "inner": {"a": 1}})
    v2 = {**V1, "fields": [
        V1["fields"][0],
        {"name": "inner", "type": {"type": "record", "name": "In", "fields": [
            {"name": "a", "type": "int"}, {"name": "b", "type": "int", "default": 0}]}},
        {"name": "added", "type": "string", "default": "x"}]}
    values, extra, same = _decode(v2, {"id": 2, "inner": {"a": 5, "b": 6}, "added": "y"}, table)
    assert same is table
    row = {n: a.to_pylist()[0] for n, a in typed.arrays(table, [values], [extra]).items()}
    assert (row["id"], row["gone"], row["inner"]) == (2, None, {"a": 5})
    assert json.loads(extra or "") == {"inner": {"a": 5, "b": 6}, "added": "y"}


def test_a_changed_type_is_incompatible_and_names_the_field() -> None:
    """A field whose type changed never fills its column: Incompatible names it."""
    _, _, table = _decode(V1, {"id": 1, "gone": "g", "inner": {"a": 1}})
    v3 = {**V1, "fields": [V1["fields"][0], V1["fields"][1], {
        "name": "inner", "type": {"type": "record", "name": "In", "fields": [
            {"name": "a", "type": "string"}]}}]}
    with pytest.raises(typed.Incompatible,
                       match=r"field inner\.a is STRING in the writer's schema, INT64 in the "
                             r"table"):
        typed.Plan.of(avro.columns(fastavro.parse_schema(v3)), table)


def test_a_non_record_writer_schema_is_one_value_column() -> None:
    """A top-level type that is no record (a string, a map) is one column named value."""
    assert [c.field for c in avro.columns(fastavro.parse_schema("string"))] == [
        Field("value", FieldType.STRING)]
    assert avro.is_record(fastavro.parse_schema(V1))
    assert not avro.is_record(fastavro.parse_schema("string"))


def test_physical_drops_only_logical_types() -> None:
    """Reading by the physical schema gives the written integers and bytes, nothing else."""
    schema = {"type": "record", "name": "R", "fields": [{"name": "at", "type": TS}]}
    assert avro.physical(schema)["fields"][0]["type"] == {"type": "long"}
    assert schema["fields"][0]["type"] == TS  # the caller's schema is untouched


def test_incompatible_fields_go_to_extra_when_the_operator_says_so() -> None:
    """With INCOMPATIBLE_SCHEMA=extra a changed field's column is NULL and its value is kept
    in _extra; the other fields fill their columns."""
    _, _, table = _decode(V1, {"id": 1, "gone": "g", "inner": {"a": 1}})
    v3 = {**V1, "fields": [{"name": "id", "type": "string"}, *V1["fields"][1:]]}
    plan = typed.Plan.of(avro.columns(fastavro.parse_schema(v3)), table, incompatible="extra")
    values, extra = plan.row({"id": "s1", "gone": "g", "inner": {"a": 2}})
    assert plan.changed == ["id"]
    assert values == [None, "g", {"a": 2}]
    assert json.loads(extra or "") == {"id": "s1"}


def test_decoded_keys_have_their_column_after_the_raw_key() -> None:
    """With KEY_FORMAT set, the BigQuery schema has _kafka_key_decoded right after _kafka_key,
    and a payload field of that name is no column."""
    names = [c["name"] for c in table_schema(PayloadSchema((Field("id", FieldType.INT64),)),
                                             decoded_key=True)]
    assert names[names.index("_kafka_key") + 1] == "_kafka_key_decoded"
    assert typed.first_schema(_columns({"name": "_kafka_key_decoded", "type": "long"})).names == ()
