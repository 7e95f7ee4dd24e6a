"""The files' columns as a BigQuery table schema: what the external table is created with.

BigQuery takes a table schema as a JSON list of ``{"name", "type", "mode", "fields"?,
"description"?}`` objects (the form ``bq show --schema`` prints, ``bq mk --schema`` and the
Terraform provider's ``schema`` argument take). Each Arrow type the bridge writes has one
BigQuery type, the one BigQuery itself gives that Parquet type (BigQuery, "Loading Parquet data",
"Parquet conversions"; lists in Parquet's standard LIST layout become REPEATED fields with
``enable_list_inference``):

=========================  =========================
Arrow / Parquet            BigQuery
=========================  =========================
string                     STRING
int32, int64               INTEGER
double                     FLOAT
bool                       BOOLEAN
timestamp (UTC)            TIMESTAMP
timestamp (no zone)        DATETIME
date32                     DATE
time64                     TIME
decimal(p, s)              NUMERIC (p - s <= 29, s <= 9), else BIGNUMERIC
binary                     BYTES
struct                     RECORD
list<T>                    T, mode REPEATED
=========================  =========================

The hive partition column ``dt`` is not part of it: BigQuery adds it from the folder names.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from wal_bridge.parquet import DEAD_LETTER_SCHEMA, data_schema
from wal_bridge.schema import KEY, KEY_DECODED, FieldType, PayloadSchema

DESCRIPTIONS = {
    "_extra": "JSON object of the fields without a column and of values that did not fit theirs",
    "_kafka_topic": "the record's topic",
    "_kafka_partition": "the record's partition",
    "_kafka_offset": "the record's offset",
    "_kafka_timestamp": "the broker's timestamp; NULL when none, or outside TIMESTAMP's range",
    "_kafka_timestamp_ms": "the broker's timestamp in Unix ms when _kafka_timestamp cannot hold it",
    "_kafka_key": "the record's key",
    "_kafka_key_decoded": "the key decoded by its writer's schema (KEY_FORMAT), as JSON text",
    "_kafka_headers": "the record's headers",
    "_ingested_at": "when the bridge sealed the record's segment",
    "_value": "the record's value, byte for byte",
    "_reason": "why the record is not a row (a reason code)",
    "_detail": "the reason in words",
}


def _column(field: pa.Field, description: str | None = None) -> dict[str, Any]:
    kind, mode = field.type, "NULLABLE"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        kind, mode = kind.value_type, "REPEATED"
    column: dict[str, Any] = {"name": field.name, "type": _type(kind), "mode": mode}
    if pa.types.is_struct(kind):
        column["fields"] = [_column(kind.field(i)) for i in range(kind.num_fields)]
    if pa.types.is_decimal(kind):
        column["precision"], column["scale"] = kind.precision, kind.scale
    if description:
        column["description"] = description
    return column


_TYPES = (
    (pa.types.is_string, "STRING"), (pa.types.is_large_string, "STRING"),
    (pa.types.is_integer, "INTEGER"), (pa.types.is_floating, "FLOAT"),
    (pa.types.is_boolean, "BOOLEAN"),
    (lambda kind: pa.types.is_timestamp(kind) and kind.tz is None, "DATETIME"),
    (pa.types.is_timestamp, "TIMESTAMP"),
    (pa.types.is_date32, "DATE"), (pa.types.is_time64, "TIME"),
    (lambda kind: pa.types.is_decimal(kind) and kind.precision - kind.scale <= 29
     and kind.scale <= 9, "NUMERIC"),
    (pa.types.is_decimal, "BIGNUMERIC"),
    (pa.types.is_binary, "BYTES"), (pa.types.is_large_binary, "BYTES"),
    (pa.types.is_struct, "RECORD"),
)


def _type(kind: pa.DataType) -> str:
    for test, name in _TYPES:
        if test(kind):
            return name
    raise ValueError(f"no BigQuery type for Arrow type {kind}")


def bigquery_schema(schema: pa.Schema, descriptions: dict[str, str] | None = None,
                    ) -> list[dict[str, Any]]:
    """``schema`` as BigQuery's JSON table schema, one object per column, in file order.

    Raises ValueError for an Arrow type the bridge never writes.
    """
    described = descriptions if descriptions is not None else DESCRIPTIONS
    return [_column(f, described.get(f.name)) for f in schema]


def table_schema(payload: PayloadSchema | None, *,
                 decoded_key: bool = False) -> list[dict[str, Any]]:
    """The data files' columns (payload, ``_extra``, identity) as a BigQuery table schema;
    ``json`` payload columns are STRING holding JSON text, and say so. ``decoded_key``
    (KEY_FORMAT other than raw) adds ``_kafka_key_decoded`` after ``_kafka_key``."""
    notes = {**DESCRIPTIONS, **{f.name: "JSON text" for f in (payload.fields if payload else ())
                                if f.type is FieldType.JSON}}
    schema = data_schema(payload)
    if decoded_key:
        schema = schema.insert(schema.get_field_index(KEY) + 1, pa.field(KEY_DECODED, pa.string()))
    return bigquery_schema(schema, notes)


def dead_letter_schema() -> list[dict[str, Any]]:
    """The dead-letter files' columns as a BigQuery table schema."""
    return bigquery_schema(DEAD_LETTER_SCHEMA)


def to_json(columns: list[dict[str, Any]]) -> str:
    """The schema file's text: one column per line, as ``bq show --schema`` users read it."""
    lines = ",\n".join("  " + json.dumps(c, separators=(", ", ": ")) for c in columns)
    return f"[\n{lines}\n]\n"
