"""Parquet building: record batches of a sealed segment in, Parquet tables out. Knows no GCS.

Each row is one Kafka record: the JSON payload's fields as columns, plus the record's identity
(``_topic``, ``_partition``, ``_offset``, ``_kafka_timestamp``, ``_key``, ``_headers``) and
``_ingested_at``, the segment's seal time (fixed in the seal frame, so converting a segment
again gives the same bytes). Records that cannot become a row go to the dead-letter table with
their raw bytes and the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from wal_bridge.wal.segment import SealInfo, batch_ranges, ranges_to_json, timestamps_or_null

TS_TYPE = pa.timestamp("ms", tz="UTC")

DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("_topic", pa.string()),
        ("_partition", pa.int32()),
        ("_offset", pa.int64()),
        ("_kafka_timestamp", TS_TYPE),
        ("_key", pa.binary()),
        ("_headers", pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))),
        ("_ingested_at", TS_TYPE),
        ("_value", pa.binary()),
        ("_reason", pa.string()),
    ]
)


@dataclass(frozen=True)
class Converted:
    data: pa.Table
    dead_letters: pa.Table


def _identity(batch: pa.Table, ingested_at_ms: int) -> dict[str, pa.Array]:
    n = batch.num_rows
    return {
        "_topic": batch.column("_topic").cast(pa.string()),
        "_partition": batch.column("_partition"),
        "_offset": batch.column("_offset"),
        "_kafka_timestamp": timestamps_or_null(batch).cast(TS_TYPE),
        "_key": batch.column("_key"),
        "_headers": batch.column("_headers"),
        "_ingested_at": pa.array([ingested_at_ms] * n, pa.int64()).cast(TS_TYPE),
    }


def _classify(values: Sequence[bytes | None], max_bytes: int) -> list[str | None]:
    """The reason each record cannot become a row, or None when it can (slow path only)."""
    reasons: list[str | None] = []
    for value in values:
        if value is None:
            reasons.append("tombstone: the record has no value")
        elif not value:
            reasons.append("empty value")
        elif len(value) > max_bytes:
            reasons.append(f"value of {len(value)} bytes exceeds MAX_RECORD_BYTES={max_bytes}")
        else:
            try:
                decoded = json.loads(value)
            except UnicodeDecodeError:
                reasons.append("value is not valid UTF-8")
                continue
            except ValueError as exc:
                reasons.append(f"value is not JSON: {exc}")
                continue
            reasons.append(None if isinstance(decoded, dict) else "value is not a JSON object")
    return reasons


class Converter:
    """Turns the record batches of one sealed segment into a data table and a dead-letter table."""

    def __init__(self, max_record_bytes: int = 1024 * 1024) -> None:
        self.max_record_bytes = max_record_bytes

    def convert(self, batches: Sequence[pa.RecordBatch], seal: SealInfo) -> Converted:
        from wal_bridge.wal.codec import BATCH_SCHEMA

        table = pa.Table.from_batches(list(batches), schema=BATCH_SCHEMA).combine_chunks()
        values = table.column("_value")
        good_mask = self._fast_mask(values)
        if good_mask is None:
            reasons = _classify(values.to_pylist(), self.max_record_bytes)
            good_mask = pa.array([r is None for r in reasons])
            bad = table.filter(pc.invert(good_mask))
            bad_reasons = pa.array([r for r in reasons if r is not None], pa.string())
        else:
            bad, bad_reasons = table.slice(0, 0), pa.array([], pa.string())
        good = table.filter(good_mask) if bad.num_rows else table
        payload = self._decode(good.column("_value"))
        columns = _identity(good, seal.sealed_at_ms)
        data = pa.table(
            {**{name: payload.column(name) for name in payload.column_names}, **columns}
        )
        dead_columns = _identity(bad, seal.sealed_at_ms)
        dead = pa.table(
            {**dead_columns, "_value": bad.column("_value"), "_reason": bad_reasons},
            schema=DEAD_LETTER_SCHEMA,
        )
        return Converted(data, dead)

    def _fast_mask(self, values: pa.ChunkedArray) -> pa.Array | None:
        """All-good check in Arrow; None means some record needs a closer look."""
        if values.null_count:
            return None
        lengths = pc.binary_length(values)
        if pc.min(lengths).as_py() == 0 or pc.max(lengths).as_py() > self.max_record_bytes:
            return None
        try:
            self._decode(values)
        except (pa.ArrowInvalid, UnicodeDecodeError):
            return None
        return pa.array([True] * len(values))

    @staticmethod
    def _decode(values: pa.ChunkedArray) -> pa.Table:
        if len(values) == 0:
            return pa.table({})
        # Raw newlines can only be whitespace in valid JSON (inside strings they must be
        # escaped), so turning them into spaces keeps each record on its own line.
        joined = b"\n".join(
            v.replace(b"\n", b" ").replace(b"\r", b" ") for v in values.to_pylist()
        )
        parsed = pajson.read_json(
            pa.BufferReader(joined),
            read_options=pajson.ReadOptions(block_size=max(len(joined) + 1, 1 << 20)),
        )
        if parsed.num_rows != len(values):
            raise pa.ArrowInvalid("a record held more than one JSON value")
        return parsed


def footer_metadata(seal: SealInfo, table: pa.Table) -> dict[str, str]:
    ranges = batch_ranges(
        pa.record_batch(
            {
                "_topic": table.column("_topic").combine_chunks().dictionary_encode(),
                "_partition": table.column("_partition").combine_chunks(),
                "_offset": table.column("_offset").combine_chunks(),
            }
        )
    ) if table.num_rows else {}
    return {
        "wal_bridge.segment": str(seal.segment),
        "wal_bridge.instance": seal.instance,
        "wal_bridge.records": str(table.num_rows),
        "wal_bridge.ranges": json.dumps(ranges_to_json(ranges)),
    }


def write_parquet(table: pa.Table, path: Path, metadata: dict[str, str]) -> None:
    """Write ``table`` as Snappy Parquet to ``path`` and fsync it (the caller renames it)."""
    schema = table.schema.with_metadata({**(table.schema.metadata or {}), **metadata})
    with open(path, "wb") as handle:
        pq.write_table(table.replace_schema_metadata(schema.metadata), handle,
                       compression="snappy", write_statistics=True)
        handle.flush()
        os.fsync(handle.fileno())
