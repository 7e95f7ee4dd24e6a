"""The Parquet files: the Arrow schemas of the data and dead-letter tables, the writer, and the
footer keys. No conversion (:mod:`wal_bridge.conversion` makes the tables), no GCS.

Every file is Snappy Parquet with statistics, dictionary encoding only where values repeat, and
a footer whose key-value metadata (the ``*_KEY`` names below) says what the file holds and what
its segment held, so that ``wal_bridge audit`` can check the files against each other from
their footers alone. docs/schema.md describes the columns, the types and the footer keys for
users.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from wal_bridge.schema import (
    DEAD_LETTER_COLUMNS,
    EXTRA_COLUMN,
    HEADERS,
    INGESTED_AT,
    KAFKA_TIMESTAMP,
    KAFKA_TIMESTAMP_MS,
    KEY,
    OFFSET,
    PARTITION,
    TOPIC,
    PayloadSchema,
)
from wal_bridge.wal.codec import HEADER_TYPE
from wal_bridge.wal.segment import SealInfo, batch_ranges, ranges_from_json, ranges_to_json

TS_TYPE = pa.timestamp("ms", tz="UTC")
FORMAT_VERSION = "1"

# The record identity every file carries, in file order. The names are the ``_kafka_`` family
# because BigQuery refuses a column whose name starts with ``_PARTITION`` (see schema.py's
# naming rule, which every one of them passes: tests/unit/test_column_names.py).
METADATA_FIELDS = [
    pa.field(TOPIC, pa.string()),
    pa.field(PARTITION, pa.int32()),
    pa.field(OFFSET, pa.int64()),
    pa.field(KAFKA_TIMESTAMP, TS_TYPE),
    # The broker's value (Unix ms) when it is outside BigQuery's TIMESTAMP range, so that
    # _kafka_timestamp is NULL and nothing is lost; NULL whenever _kafka_timestamp holds it.
    pa.field(KAFKA_TIMESTAMP_MS, pa.int64()),
    pa.field(KEY, pa.binary()),
    pa.field(HEADERS, HEADER_TYPE),
    pa.field(INGESTED_AT, TS_TYPE),
]
# Where each identity column comes from in the WAL's record batches (wal/codec.py keeps its own
# short names: they are an on-disk format that older segments are written in).
WAL_COLUMNS = {TOPIC: "_topic", PARTITION: "_partition", OFFSET: "_offset",
               KAFKA_TIMESTAMP: "_kafka_timestamp", KEY: "_key", HEADERS: "_headers"}
DEAD_LETTER_SCHEMA = pa.schema(
    [*METADATA_FIELDS,
     *(pa.field(name, kind) for name, kind in zip(
         DEAD_LETTER_COLUMNS, (pa.binary(), pa.string(), pa.string()), strict=True))]
)

# The footer's key-value metadata (docs/schema.md, "Footer metadata"): what a file
# holds ...
FORMAT_KEY = "wal_bridge.format"  # FORMAT_VERSION
KIND_KEY = "wal_bridge.kind"  # DATA_KIND or DEAD_LETTER_KIND
SCHEMA_KEY = "wal_bridge.schema"  # the payload schema, compact (data files only)
RECORDS_KEY = "wal_bridge.records"  # this file's rows
RANGES_KEY = "wal_bridge.ranges"  # this file's offsets: JSON list of per-partition ranges
# ... and what its segment held, so that a segment's two files can be checked together.
SEGMENT_KEY = "wal_bridge.segment"
INSTANCE_KEY = "wal_bridge.instance"
SEALED_AT_KEY = "wal_bridge.sealed_at_ms"
SEGMENT_RECORDS_KEY = "wal_bridge.segment_records"
SEGMENT_RANGES_KEY = "wal_bridge.segment_ranges"
DATA_KIND, DEAD_LETTER_KIND = "data", "dead_letter"


def data_schema(payload: PayloadSchema | None) -> pa.Schema:
    """The data table's schema: payload columns, ``_extra``, then the record identity."""
    fields = [*(payload.arrow_fields() if payload else []), pa.field(EXTRA_COLUMN, pa.string()),
              *METADATA_FIELDS]
    metadata = {SCHEMA_KEY: payload.compact()} if payload is not None else None
    return pa.schema(fields, metadata=metadata)


# ----------------------------------------------------------------------------- files


def footer_metadata(seal: SealInfo, table: pa.Table) -> dict[str, str]:
    """The key-value metadata of a file: what it holds and what its segment held.

    RECORDS_KEY and RANGES_KEY describe this file's rows; the SEGMENT_* keys describe the whole
    segment, so that the data file and the dead-letter file of a segment can be checked against
    each other from footers alone.
    """
    # A file holding every record of its segment has the segment's ranges (the usual case).
    ranges = seal.ranges if table.num_rows == seal.records else batch_ranges(
        pa.record_batch(
            {
                "_topic": table.column(TOPIC).combine_chunks().dictionary_encode(),
                "_partition": table.column(PARTITION).combine_chunks(),
                "_offset": table.column(OFFSET).combine_chunks(),
            }
        )
    ) if table.num_rows else {}
    kind = DEAD_LETTER_KIND if "_reason" in table.column_names else DATA_KIND
    return {
        FORMAT_KEY: FORMAT_VERSION,
        KIND_KEY: kind,
        SEGMENT_KEY: str(seal.segment),
        INSTANCE_KEY: seal.instance,
        SEALED_AT_KEY: str(seal.sealed_at_ms),
        RECORDS_KEY: str(table.num_rows),
        RANGES_KEY: json.dumps(ranges_to_json(ranges)),
        SEGMENT_RECORDS_KEY: str(seal.records),
        SEGMENT_RANGES_KEY: json.dumps(ranges_to_json(seal.ranges)),
    }


DICTIONARY_SAMPLE = 1000


def dictionary_columns(table: pa.Table) -> list[str]:
    """Columns to dictionary-encode: the segment-wide metadata, and text columns whose values
    repeat (judged on the first rows: at most half of them distinct). A dictionary of values
    that never repeat (ids, URLs) costs time and bytes; numbers and timestamps rarely repeat
    enough to pay for one."""
    chosen = []
    for f in table.schema:
        if f.name in (TOPIC, PARTITION, INGESTED_AT):
            chosen.append(f.name)
        elif pa.types.is_string(f.type):
            sample = table.column(f.name).slice(0, DICTIONARY_SAMPLE)
            if 2 * pc.count_distinct(sample).as_py() <= len(sample):
                chosen.append(f.name)
    return chosen


def write_table(table: pa.Table, sink: Any, metadata: dict[str, str]) -> None:
    """Encode ``table`` as Snappy Parquet into ``sink`` (a file object or path), with
    ``metadata`` added to the footer's key-value metadata."""
    import pyarrow.parquet as pq  # local: reading the key names above needs no Parquet library

    merged = {**(table.schema.metadata or {}), **{k.encode(): v.encode()
                                                   for k, v in metadata.items()}}
    pq.write_table(table.replace_schema_metadata(merged), sink, compression="snappy",
                   use_dictionary=dictionary_columns(table), write_statistics=True)


def write_parquet(table: pa.Table, path: Path, metadata: dict[str, str]) -> None:
    """Write ``table`` as Snappy Parquet to ``path`` and fsync it (the caller renames it)."""
    with open(path, "wb") as handle:
        write_table(table, handle, metadata)
        handle.flush()
        os.fsync(handle.fileno())


def row_count(path: Path) -> int:
    """The number of rows of the Parquet file at ``path``, from its footer alone."""
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


def _footer(path: Path, seq: int) -> dict[str, str] | None:
    """The key-value footer of a Parquet file of segment ``seq``, when it reads and its row
    count agrees with it; else None."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
    except (OSError, pa.ArrowException):
        return None
    raw = meta.metadata or {}
    footer = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
    if footer.get(SEGMENT_KEY) != str(seq) or footer.get(RECORDS_KEY) != str(meta.num_rows):
        return None
    return footer


def converted_seal(data: Path, dead_letters: Path, seq: int) -> SealInfo | None:
    """What a segment's converted files say of it, when they are complete; else None.

    Complete: the data file's footer reads (a Parquet file cut short has no footer), names
    segment ``seq``, and its rows plus those of the dead-letter file (when there is one, with a
    footer that reads and agrees) are the segment's records. The returned :class:`SealInfo`
    has the segment's instance, seal time, records and ranges from the footer; its keys are
    empty (the footer does not hold them: the caller takes them from the seal frame, or derives
    them from the seal time). Reads the footers only, never the pages.
    """
    paths = [data, *([dead_letters] if dead_letters.exists() else [])]
    footers = [f for f in (_footer(p, seq) for p in paths) if f is not None]
    if len(footers) != len(paths):
        return None
    first = footers[0]
    same = all(f.get(SEGMENT_RANGES_KEY) == first.get(SEGMENT_RANGES_KEY)
               and f.get(SEALED_AT_KEY) == first.get(SEALED_AT_KEY) for f in footers)
    try:
        records = int(first[SEGMENT_RECORDS_KEY])
        if not same or sum(int(f[RECORDS_KEY]) for f in footers) != records:
            return None
        return SealInfo(seq, first[INSTANCE_KEY], "", "", int(first[SEALED_AT_KEY]), records,
                        ranges_from_json(json.loads(first[SEGMENT_RANGES_KEY])))
    except (KeyError, ValueError, TypeError):
        return None
