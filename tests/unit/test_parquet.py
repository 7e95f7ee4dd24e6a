"""The Parquet files of a converted segment: their schema, footers, determinism and drift."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from wal_bridge.conversion import Converted, Converter
from wal_bridge.parquet import (
    DEAD_LETTER_SCHEMA,
    footer_metadata,
    write_parquet,
    write_table,
)
from wal_bridge.schema import Field, FieldType, PayloadSchema
from wal_bridge.wal.codec import RecordColumns
from wal_bridge.wal.segment import Range, SealInfo, batch_ranges

F = FieldType
SEALED_AT = 1_714_564_800_123  # 2024-05-01T12:00:00.123Z
SCHEMA = PayloadSchema((
    Field("id", F.INT64), Field("name", F.STRING), Field("amount", F.FLOAT64),
    Field("ok", F.BOOL), Field("at", F.TIMESTAMP), Field("ctx", F.JSON),
))
METADATA_NAMES = ["_kafka_topic", "_kafka_partition", "_kafka_offset", "_kafka_timestamp",
                  "_kafka_timestamp_ms", "_kafka_key", "_kafka_headers", "_ingested_at"]


def batch(values: Sequence[bytes | None], *, partition: int = 0, first: int = 0,
          topic: str = "events", timestamp: int = 1_714_564_700_000) -> pa.RecordBatch:
    """One polled batch as the consumer would append it; keys and headers vary per record."""
    n = len(values)
    return RecordColumns(
        [topic] * n, [partition] * n, list(range(first, first + n)),
        [timestamp + i for i in range(n)],
        [f"k{first + i}".encode() if i % 2 == 0 else None for i in range(n)],
        list(values),
        [[("trace", f"t{first + i}".encode())] if i % 3 == 0 else None for i in range(n)],
    ).to_arrow()


def seal_of(*batches: pa.RecordBatch, segment: int = 1) -> SealInfo:
    ranges: dict[tuple[str, int], Range] = {}
    for b in batches:
        for tp, rng in batch_ranges(b).items():
            ranges[tp] = ranges[tp].merge(rng) if tp in ranges else rng
    return SealInfo(segment, "bridge-0", f"raw/dt=2024-05-01/{segment}.parquet",
                    f"dead-letter/dt=2024-05-01/{segment}.parquet", SEALED_AT,
                    sum(b.num_rows for b in batches), ranges)


def convert(values: Sequence[bytes | None], schema: PayloadSchema | None = SCHEMA,
            **kwargs: int) -> Converted:
    b = batch(values, **kwargs)
    return Converter(1024, schema).convert([b], seal_of(b))


def parquet_bytes(table: pa.Table, seal: SealInfo) -> bytes:
    sink = io.BytesIO()
    write_table(table, sink, footer_metadata(seal, table))
    return sink.getvalue()


GOOD = [
    b'{"id": 1, "name": "a", "amount": 1.5, "ok": true, "at": "2024-05-01T12:00:00Z",'
    b' "ctx": {"k": [1, null]}}',
    b'{"id": 2, "name": "b\\u00e9", "amount": 2, "ok": false, "at": "2024-05-01 14:00:00.5+02:00"}',
]


# ------------------------------------------------------------------------------- golden files


def test_golden_data_file_schema_read_back_by_pyarrow_and_duckdb(tmp_path: Path) -> None:
    """Column names, Arrow and Parquet types, Snappy on every column and the footer keys of a
    data file are as documented, and DuckDB (an independent reader) sees the same table."""
    b = batch(GOOD)
    seal = seal_of(b)
    out = Converter(1024, SCHEMA).convert([b], seal)
    path = tmp_path / "data.parquet"
    write_parquet(out.data, path, footer_metadata(seal, out.data))

    meta = pq.ParquetFile(path).metadata
    arrow = pq.read_schema(path)
    assert arrow.names == ["id", "name", "amount", "ok", "at", "ctx", "_extra", *METADATA_NAMES]
    expected_types = {
        "id": "int64", "name": "string", "amount": "double", "ok": "bool",
        "at": "timestamp[us, tz=UTC]", "ctx": "string", "_extra": "string",
        "_kafka_topic": "string", "_kafka_partition": "int32", "_kafka_offset": "int64",
        "_kafka_timestamp": "timestamp[ms, tz=UTC]", "_kafka_timestamp_ms": "int64",
        "_kafka_key": "binary",
        # Parquet's standard LIST layout (element), which BigQuery's list inference reads as an
        # ARRAY<STRUCT<key STRING, value BYTES>>.
        "_kafka_headers": "list<element: struct<key: string, value: binary>>",
        "_ingested_at": "timestamp[ms, tz=UTC]",
    }
    assert {f.name: str(f.type) for f in arrow} == expected_types
    # Parquet logical types BigQuery maps natively (TIMESTAMP needs isAdjustedToUTC).
    logical = {meta.schema.column(i).path: str(meta.schema.column(i).logical_type)
               for i in range(meta.num_columns)}
    assert logical["at"].startswith("Timestamp(isAdjustedToUTC=true, timeUnit=microseconds")
    assert logical["_kafka_timestamp"].startswith(
        "Timestamp(isAdjustedToUTC=true, timeUnit=milliseconds")
    assert logical["name"] == logical["ctx"] == logical["_extra"] == "String"
    codecs = {meta.row_group(g).column(c).compression
              for g in range(meta.num_row_groups) for c in range(meta.num_columns)}
    assert codecs == {"SNAPPY"}
    footer = {k.decode(): v.decode() for k, v in meta.metadata.items()}
    assert json.loads(footer["wal_bridge.schema"]) == [
        ["id", "int64"], ["name", "string"], ["amount", "float64"], ["ok", "bool"],
        ["at", "timestamp"], ["ctx", "json"]]
    assert {k: v for k, v in footer.items() if k.startswith("wal_bridge.")
            and k != "wal_bridge.schema"} == {
        "wal_bridge.format": "1",
        "wal_bridge.kind": "data",
        "wal_bridge.segment": "1",
        "wal_bridge.instance": "bridge-0",
        "wal_bridge.sealed_at_ms": str(SEALED_AT),
        "wal_bridge.records": "2",
        "wal_bridge.ranges": json.dumps([{"topic": "events", "partition": 0, "first_offset": 0,
                                          "last_offset": 1, "records": 2}]),
        "wal_bridge.segment_records": "2",
        "wal_bridge.segment_ranges": json.dumps([{"topic": "events", "partition": 0,
                                                  "first_offset": 0, "last_offset": 1,
                                                  "records": 2}]),
    }

    con = duckdb.connect()
    described = {row[0]: row[1] for row in con.execute(
        "DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()}
    assert described == {
        "id": "BIGINT", "name": "VARCHAR", "amount": "DOUBLE", "ok": "BOOLEAN",
        "at": "TIMESTAMP WITH TIME ZONE", "ctx": "VARCHAR", "_extra": "VARCHAR",
        "_kafka_topic": "VARCHAR", "_kafka_partition": "INTEGER", "_kafka_offset": "BIGINT",
        "_kafka_timestamp": "TIMESTAMP WITH TIME ZONE", "_kafka_timestamp_ms": "BIGINT",
        "_kafka_key": "BLOB", "_kafka_headers": "STRUCT(\"key\" VARCHAR, \"value\" BLOB)[]",
        "_ingested_at": "TIMESTAMP WITH TIME ZONE",
    }
    con.execute("SET TimeZone = 'UTC'")
    rows = con.execute(
        "SELECT id, name, amount, ok, strftime(\"at\", '%Y-%m-%dT%H:%M:%S.%f'), ctx, _extra, "
        "_kafka_topic, _kafka_partition, _kafka_offset, epoch_ms(_kafka_timestamp), "
        "_kafka_key, _kafka_headers, epoch_ms(_ingested_at) FROM read_parquet(?) "
        "ORDER BY _kafka_offset", [str(path)]).fetchall()
    assert rows == [
        (1, "a", 1.5, True, "2024-05-01T12:00:00.000000", '{"k":[1,null]}', None, "events", 0, 0,
         1_714_564_700_000, b"k0", [{"key": "trace", "value": b"t0"}], SEALED_AT),
        (2, "bé", 2.0, False, "2024-05-01T12:00:00.500000", None, None, "events", 0, 1,
         1_714_564_700_001, None, None, SEALED_AT),
    ]


def test_golden_dead_letter_file_schema(tmp_path: Path) -> None:
    """A dead-letter file keeps the record's identity, its raw bytes, a reason code and a
    detail, with its own footer describing its rows (kind dead_letter)."""
    b = batch([GOOD[0], b"\xff\xfe"])
    seal = seal_of(b)
    out = Converter(1024, SCHEMA).convert([b], seal)
    path = tmp_path / "dead.parquet"
    write_parquet(out.dead_letters, path, footer_metadata(seal, out.dead_letters))
    assert pq.read_schema(path).remove_metadata() == DEAD_LETTER_SCHEMA
    assert DEAD_LETTER_SCHEMA.names == [*METADATA_NAMES, "_value", "_reason", "_detail"]
    footer = pq.ParquetFile(path).metadata.metadata
    assert footer[b"wal_bridge.kind"] == b"dead_letter"
    assert footer[b"wal_bridge.records"] == b"1"
    assert footer[b"wal_bridge.segment_records"] == b"2"
    row = duckdb.connect().execute(
        "SELECT _kafka_offset, _value, _reason FROM read_parquet(?)", [str(path)]).fetchall()
    assert row == [(1, b"\xff\xfe", "invalid_utf8")]


# ------------------------------------------------------------------------------- determinism


def test_converting_a_segment_twice_gives_identical_bytes(tmp_path: Path) -> None:
    """The same segment converts to byte-identical data and dead-letter files, also after a
    restart that reads the pinned schema back: create-only uploads rely on it."""
    values = [*GOOD, b"not json", None, b'{"id": "x", "new": 1}']
    b = batch(values)
    seal = seal_of(b)

    def files(converter: Converter) -> tuple[bytes, bytes]:
        out = converter.convert([b], seal)
        return parquet_bytes(out.data, seal), parquet_bytes(out.dead_letters, seal)

    first = files(Converter.open(1024, tmp_path))  # infers and pins the schema
    assert first == files(Converter.open(1024, tmp_path))  # a restart: the pinned schema
    converter = Converter(1024, SCHEMA)
    assert files(converter) == files(converter)
    write_parquet(converter.convert([b], seal).data, tmp_path / "a.parquet", {})
    write_parquet(converter.convert([b], seal).data, tmp_path / "b.parquet", {})
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


# ------------------------------------------------------------------------------- footers


def test_data_and_dead_letter_footers_together_cover_the_segment() -> None:
    """Across two partitions and interleaved bad records, the two files' footers count and
    range exactly the segment's offsets, and every offset is in one file's rows."""
    first = batch([GOOD[0], b"bad", GOOD[1], None], partition=0, first=10)
    second = batch([b"[]", GOOD[0], GOOD[1]], partition=2, first=50)
    seal = seal_of(first, second)
    out = Converter(1024, SCHEMA).convert([first, second], seal)
    data_meta, dead_meta = footer_metadata(seal, out.data), footer_metadata(seal, out.dead_letters)
    assert int(data_meta["wal_bridge.records"]) + int(dead_meta["wal_bridge.records"]) == 7
    assert data_meta["wal_bridge.segment_records"] == dead_meta["wal_bridge.segment_records"]
    assert json.loads(data_meta["wal_bridge.ranges"]) == [
        {"topic": "events", "partition": 0, "first_offset": 10, "last_offset": 12, "records": 2},
        {"topic": "events", "partition": 2, "first_offset": 51, "last_offset": 52, "records": 2}]
    assert json.loads(dead_meta["wal_bridge.ranges"]) == [
        {"topic": "events", "partition": 0, "first_offset": 11, "last_offset": 13, "records": 2},
        {"topic": "events", "partition": 2, "first_offset": 50, "last_offset": 50, "records": 1}]
    held = [(r["_kafka_partition"], r["_kafka_offset"]) for t in (out.data, out.dead_letters)
            for r in t.select(["_kafka_partition", "_kafka_offset"]).to_pylist()]
    assert sorted(held) == [(0, 10), (0, 11), (0, 12), (0, 13), (2, 50), (2, 51), (2, 52)]


# ------------------------------------------------------------------------------- drift


def test_pinned_files_of_a_drifting_stream_share_one_schema_and_read_as_one_table(
    tmp_path: Path,
) -> None:
    """Segment after segment, whatever the payload does (new fields, type changes, bad
    records), every data file has the pinned schema, and pyarrow.dataset reads them together
    with nothing lost."""
    converter = Converter.open(1024, tmp_path / "wal")
    segments = [
        [b'{"id": 1, "name": "a", "tags": ["x"]}', b'{"id": 2, "name": "b", "tags": []}'],
        [b'{"id": 3, "name": "c", "colour": "red"}', b"oops"],
        [b'{"id": "four", "name": 4, "tags": {"k": 1}}', None],
        [b'{"name": "e"}'],
    ]
    out_dir = tmp_path / "landed"
    out_dir.mkdir()
    offset, schemas, dead = 0, set(), 0
    for number, values in enumerate(segments, start=1):
        b = batch(values, first=offset)
        offset += len(values)
        seal = seal_of(b, segment=number)
        out = converter.convert([b], seal)
        dead += out.dead_letters.num_rows
        path = out_dir / f"{number:04d}.parquet"
        write_parquet(out.data, path, footer_metadata(seal, out.data))
        schemas.add(pq.read_schema(path).remove_metadata())
    assert len(schemas) == 1
    table = ds.dataset(out_dir, format="parquet").to_table().sort_by("_kafka_offset")
    assert table.num_rows + dead == offset
    assert table.column("_kafka_offset").to_pylist() == [0, 1, 2, 4, 6]
    assert table.column("id").to_pylist() == [1, 2, 3, None, None]
    assert table.column("tags").to_pylist() == ['["x"]', "[]", None, '{"k":1}', None]
    assert [json.loads(e) if e else None for e in table.column("_extra").to_pylist()] == [
        None, None, {"colour": "red"}, {"id": "four", "name": 4}, None]
