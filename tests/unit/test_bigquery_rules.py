"""BigQuery's rules for every column the bridge writes: names, and TIMESTAMP's range.

Sources: BigQuery, "Specify a schema" (column names: letters, digits, underscores, not starting
with a digit, at most 300 characters, none of the reserved prefixes in any case) and "Data types"
(TIMESTAMP: 0001-01-01 00:00:00 to 9999-12-31 23:59:59.999999 UTC).
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from tests.unit.test_parquet import GOOD, SCHEMA, batch, seal_of
from wal_bridge.conversion import Converter
from wal_bridge.conversion.casting import cast_fragments
from wal_bridge.parquet import DEAD_LETTER_SCHEMA, METADATA_FIELDS, data_schema
from wal_bridge.schema import (
    Field,
    FieldType,
    PayloadSchema,
    bigquery_name_problem,
)

ALL_TYPES = PayloadSchema(tuple(Field(f"c_{t.value}", t) for t in FieldType))


def _names(schema: pa.Schema) -> list[str]:
    """Every column and nested field name of ``schema``, depth first."""
    out: list[str] = []

    def walk(kind: pa.DataType) -> None:
        if pa.types.is_struct(kind):
            for i in range(kind.num_fields):
                out.append(kind.field(i).name)
                walk(kind.field(i).type)
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            walk(kind.value_type)

    for f in schema:
        out.append(f.name)
        walk(f.type)
    return out


@pytest.mark.parametrize("kind", ["data with every SCHEMA_FILE type", "data without a schema",
                                  "dead letter"])
def test_every_column_of_every_file_kind_has_a_name_bigquery_accepts(kind: str) -> None:
    """Payload, metadata and dead-letter columns, nested fields included, pass the one rule."""
    schema = {"data with every SCHEMA_FILE type": data_schema(ALL_TYPES),
              "data without a schema": data_schema(None),
              "dead letter": DEAD_LETTER_SCHEMA}[kind]
    problems = {name: p for name in _names(schema) if (p := bigquery_name_problem(name))}
    assert problems == {}


def test_converted_files_carry_exactly_the_checked_columns() -> None:
    """What conversion writes is the schema checked above: no column escapes the rule."""
    b = batch([*GOOD, b"not json"])
    out = Converter(1024, SCHEMA).convert([b], seal_of(b))
    assert out.data.schema.names == data_schema(SCHEMA).names
    assert out.dead_letters.schema.names == DEAD_LETTER_SCHEMA.names


@pytest.mark.parametrize("name", ["_partition", "_PARTITIONTIME", "_Partition_date", "_table_x",
                                  "_FILE_NAME", "_row_timestamp", "__root__", "__ROOT__x",
                                  "_colidentifier", "_COLIDENTIFIER_7"])
def test_reserved_prefixes_are_refused_in_any_case(name: str) -> None:
    """The six prefixes of Google's page are refused whatever their case."""
    problem = bigquery_name_problem(name)
    assert problem is not None
    assert "prefix BigQuery reserves" in problem


@pytest.mark.parametrize("name", ["_kafka_partition", "partition", "_colon_", "_files",
                                  "x" * 300, "_"])
def test_names_outside_the_reserved_prefixes_are_accepted(name: str) -> None:
    """Names that merely resemble a reserved prefix, and 300 characters, are fine."""
    assert bigquery_name_problem(name) is None


@pytest.mark.parametrize("name", ["", "1st", "a-b", "é", "x" * 301])
def test_names_outside_the_character_rules_are_refused(name: str) -> None:
    """Empty, leading digit, punctuation, non-ASCII and over 300 characters are refused."""
    assert bigquery_name_problem(name) is not None


def test_metadata_columns_are_the_kafka_family() -> None:
    """The bridge's own identity columns carry the documented names, in file order."""
    assert [f.name for f in METADATA_FIELDS] == [
        "_kafka_topic", "_kafka_partition", "_kafka_offset", "_kafka_timestamp",
        "_kafka_timestamp_ms", "_kafka_key", "_kafka_headers", "_ingested_at"]


# ------------------------------------------------------------------------- TIMESTAMP range

LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
EDGES = [
    # (JSON string, kept in the column?)
    ('"9999-12-31T23:59:59.999999Z"', True),
    ('"9999-12-31T23:59:59.999999+00:00"', True),
    ('"9999-12-31T22:59:59.999999-01:00"', True),
    ('"9999-12-31T23:00:00-01:00"', False),  # 10000-01-01T00:00:00Z
    ('"9999-12-31T23:30:00-01:00"', False),
    ('"9999-12-31T23:59:59.999999-00:01"', False),
    ('"0001-01-01T00:00:00Z"', True),
    ('"0001-01-01T01:00:00+01:00"', True),
    ('"0001-01-01T00:59:59.999999+01:00"', False),  # one microsecond before year 1
    ('"0001-01-01 00:00:00"', True),  # no offset: UTC
    ('"0000-12-31T23:59:59.999999Z"', False),
]


@pytest.mark.parametrize(("text", "kept"), EDGES, ids=[t for t, _ in EDGES])
def test_payload_timestamps_at_both_ends_of_bigquerys_range(text: str, kept: bool) -> None:
    """The last microsecond in range is kept, the next one is not, offsets applied first."""
    value = cast_fragments(FieldType.TIMESTAMP, pa.array([text])).to_pylist()[0]
    assert (value is not None) is kept


@pytest.mark.parametrize("general", [False, True], ids=["fast path", "general path"])
def test_a_payload_timestamp_outside_the_range_is_null_and_kept_in_extra(general: bool) -> None:
    """Both converters make an out-of-range timestamp NULL and keep its text in _extra."""
    schema = PayloadSchema((Field("id", FieldType.INT64), Field("at", FieldType.TIMESTAMP)))
    extra = ', "new": 1' if general else ""  # an unknown key: the general path at once
    values = [f'{{"id": 1, "at": "9999-12-31T23:59:59.999999Z"{extra}}}'.encode(),
              f'{{"id": 2, "at": "9999-12-31T23:30:00-01:00"{extra}}}'.encode()]
    b = batch(values)
    rows = Converter(1024, schema).convert([b], seal_of(b)).data.to_pylist()
    assert rows[0]["at"].isoformat() == "9999-12-31T23:59:59.999999+00:00"
    assert rows[1]["at"] is None
    assert json.loads(rows[1]["_extra"])["at"] == "9999-12-31T23:30:00-01:00"


def test_epoch_numbers_in_a_timestamp_column_are_kept_in_extra() -> None:
    """A number cannot tell seconds from milliseconds: it does not fit, and lands in _extra."""
    schema = PayloadSchema((Field("at", FieldType.TIMESTAMP),))
    b = batch([b'{"at": 253402300799}', b'{"at": 253402300799999}'])
    rows = Converter(1024, schema).convert([b], seal_of(b)).data.to_pylist()
    assert [r["at"] for r in rows] == [None, None]
    assert [json.loads(r["_extra"]) for r in rows] == [{"at": 253402300799},
                                                       {"at": 253402300799999}]


@pytest.mark.parametrize(("ms", "stamp", "raw"), [
    (LAST_MS, "9999-12-31T23:59:59.999000+00:00", None),
    (LAST_MS + 1, None, LAST_MS + 1),
    (1_767_225_600_000_000, None, 1_767_225_600_000_000),  # microseconds: year 57970
    (0, "1970-01-01T00:00:00+00:00", None),
    (-1, None, None),  # Kafka's "no timestamp"
])
def test_the_record_timestamp_outside_the_range_is_null_and_kept_in_milliseconds(
        ms: int, stamp: str | None, raw: int | None) -> None:
    """_kafka_timestamp holds what BigQuery can; the rest is NULL there, exact in _ms."""
    b = batch([GOOD[0]], timestamp=ms)
    out = Converter(1024, SCHEMA).convert([b], seal_of(b))
    row = out.data.to_pylist()[0]
    got = row["_kafka_timestamp"].isoformat() if row["_kafka_timestamp"] else None
    assert (got, row["_kafka_timestamp_ms"]) == (stamp, raw)


def test_the_record_timestamp_rule_holds_in_dead_letter_files_too() -> None:
    """A dead letter with an out-of-range record timestamp keeps it the same way."""
    b = batch([b"not json"], timestamp=LAST_MS + 1)
    row = Converter(1024, SCHEMA).convert([b], seal_of(b)).dead_letters.to_pylist()[0]
    assert (row["_kafka_timestamp"], row["_kafka_timestamp_ms"]) == (None, LAST_MS + 1)
