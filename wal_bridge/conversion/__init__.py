"""Conversion: the record batches of a sealed segment in, two Arrow tables out. No files, no GCS
(:mod:`wal_bridge.parquet` writes the tables; the sealer names and ships them).

Every record becomes exactly one row of one of the two tables:

- the **data** table: the payload's fields as typed columns (:mod:`wal_bridge.schema`), then
  ``_extra`` (JSON text of the fields without a column, and of values that did not fit theirs),
  then the record's identity: ``_kafka_topic``, ``_kafka_partition``, ``_kafka_offset``,
  ``_kafka_timestamp`` (and ``_kafka_timestamp_ms`` when that cannot hold the broker's value),
  ``_kafka_key``, ``_kafka_headers`` and ``_ingested_at`` (the segment's seal time, fixed in the
  seal frame, so converting a segment again gives the same bytes);
- the **dead-letter** table: the same identity columns, the raw ``_value``, a ``_reason`` code
  (:class:`Reason`) and a ``_detail`` message, for records that cannot be a row: tombstones,
  empty values, values over MAX_RECORD_BYTES, invalid UTF-8, text that is not JSON, JSON that is
  not an object, and objects with a repeated key.

How it stays fast, with no per-record Python on the way of a good record, one module per step:

1. ``screen``: Arrow checks whole columns (null, length, UTF-8, first and last byte); Python's
   strict reading says what is wrong with the few it singles out.
2. ``flat``: a segment whose records are exactly what a flat schema says (the usual case) is
   read in one parse by Arrow's JSON reader, and the general path is skipped; any surprise in
   the segment sends it down the general path instead.
3. ``general``: DuckDB (``duck``) parses every record, Arrow casts each field's JSON text to its
   column (``casting``), unknown keys and values that do not fit go to ``_extra``.
4. Python's ``json`` reads only records already known or suspected to be bad (to say why, or
   to catch what the fast parser forgives), and records whose numbers the fast parser may have
   printed otherwise (:mod:`wal_bridge.conversion.numbers`: each number is kept as it came).

Until a schema is in force, the first data's is inferred from what these same steps make of
the segment (the rows they keep, the JSON text DuckDB reads), so inference and conversion never
disagree on what a record is; a segment that gives no column raises :class:`SchemaUndecided`.
Records nested deeper than ``screen.MAX_DEPTH`` are dead letters (``too_deep``) before any
parser sees them.

A :class:`Converter` is shared by the sealer's conversion threads: everything one segment needs
lives in its own :meth:`Converter.convert` call.

docs/schema.md describes the columns, the types and the footer keys for users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from wal_bridge.conversion import general, numbers
from wal_bridge.conversion.duck import Duck, values_query
from wal_bridge.conversion.flat import infer_flat, read_flat
from wal_bridge.conversion.screen import Reason, Rejects, forgiven, screen, strict_look
from wal_bridge.errors import SchemaEvolutionError
from wal_bridge.logs import get_logger
from wal_bridge.parquet import DEAD_LETTER_SCHEMA, TS_TYPE, WAL_COLUMNS, data_schema
from wal_bridge.schema import (
    EXTRA_COLUMN,
    HEADERS,
    KAFKA_TIMESTAMP,
    KEY,
    OFFSET,
    PARTITION,
    TIMESTAMP_RANGE_MS,
    TOPIC,
    PayloadSchema,
    SchemaStore,
    SharedSchema,
    column_names,
    infer_texts,
)
from wal_bridge.wal.codec import BATCH_SCHEMA
from wal_bridge.wal.segment import SealInfo

if TYPE_CHECKING:  # imported by the runtime only when VALUE_FORMAT names a registry format
    from wal_bridge.conversion.decode import Decoding

__all__ = ["Converted", "Converter", "Reason", "SchemaUndecided"]

log = get_logger("wal_bridge.conversion")


class SchemaUndecided(Exception):
    """No schema is in force yet and this segment's records give no column (``{}``, or only
    keys that cannot be columns): it does not decide the schema, and cannot be written before
    one is decided. Convert it again once a schema is in force (a later segment with fields,
    or SCHEMA_FILE)."""


@dataclass(frozen=True)
class Converted:
    """One segment's two tables: ``data`` (:func:`wal_bridge.parquet.data_schema`) and
    ``dead_letters`` (:data:`wal_bridge.parquet.DEAD_LETTER_SCHEMA`)."""

    data: pa.Table
    dead_letters: pa.Table
    # Field values kept in ``_extra`` because they did not fit their column's type.
    cast_failures: int = 0


class Converter:
    """Turns the record batches of one sealed segment into a data table and a dead-letter table.

    ``schema`` is the :class:`SchemaStore` in force (a fixed :class:`PayloadSchema` is wrapped in
    one); without it the first data's schema is inferred and kept in memory only. Threads may
    share one converter: it holds configuration, the schema store (locked), one DuckDB
    connection (one query at a time) and a hint of the unknown keys to expect, which never
    changes what lands (:class:`wal_bridge.conversion.general.KeyHint`).
    """

    def __init__(self, max_record_bytes: int = 1024 * 1024,
                 schema: SchemaStore | PayloadSchema | None = None, *, threads: int = 1,
                 decoding: Decoding | None = None) -> None:
        self.max_record_bytes = max_record_bytes
        self.store = schema if isinstance(schema, SchemaStore) else SchemaStore(schema)
        self._duck = Duck(threads)
        self._hint = general.KeyHint()
        # VALUE_FORMAT's registry formats (wal_bridge.conversion.decode); None: JSON.
        self.decoding = decoding

    @classmethod
    def open(cls, max_record_bytes: int, wal_dir: Path, schema_file: Path | None = None,
             shared: SharedSchema | None = None, decoding: Decoding | None = None) -> Converter:
        """The service's converter: SCHEMA_FILE when given, else the schema pinned in
        ``wal_dir`` (or pinned there from the first data); with ``shared``, the one its
        destination holds. Raises ConfigError for a bad one."""
        return cls(max_record_bytes, SchemaStore.open(wal_dir, schema_file, shared),
                   decoding=decoding)

    def convert(self, batches: Sequence[pa.RecordBatch], seal: SealInfo) -> Converted:
        """The two tables of the segment ``seal`` describes, from its record batches (in the
        WAL's BATCH_SCHEMA). May pin the schema (see :class:`SchemaStore`), and so raise what
        pinning raises (SinkError, SchemaConflictError); with a registry format, what
        :meth:`Decoding.convert` raises (RegistryError, SchemaEvolutionError)."""
        table = pa.Table.from_batches(list(batches), schema=BATCH_SCHEMA).combine_chunks()
        if self.decoding is not None:
            return self.decoding.convert(self, table, seal)
        return self.convert_json(table, table.column("_value"), Rejects(), seal)

    def convert_json(self, table: pa.Table, values: pa.ChunkedArray, rejects: Rejects,
                     seal: SealInfo) -> Converted:
        """The JSON path: ``values`` (the segment's ``_value``, or JSON text decoded from it)
        as rows of the payload schema; the dead letters keep ``table``'s ``_value``."""
        rows, text = screen(values, self.max_record_bytes, rejects)
        schema = self.store.agreed()
        if schema is not None and not schema.flat:
            raise SchemaEvolutionError(
                f"the table's schema has columns only a registry's Avro or Protobuf schema "
                f"fills ({schema.compact()}); these records are JSON: set VALUE_FORMAT to the "
                "topic's format, or write JSON to another DESTINATION prefix", schema_id=-1)
        if schema is None and len(rows):
            rows, text, schema = self._first_schema(rows, text, rejects, seal)
        failures = 0
        if schema is None or not len(rows):
            payload = _empty(schema, len(rows))
        elif (flat := read_flat(schema, text)) is not None:
            payload = {**flat, EXTRA_COLUMN: pa.nulls(len(rows), pa.string())}
        else:
            rows, text = forgiven(rows, text, rejects)
            payload, rows, failures = general.convert(schema, rows, text, rejects,
                                                      duck=self._duck, hint=self._hint)
        return self.assemble(table, payload, rows, rejects, seal, schema=schema,
                             failures=failures)

    def assemble(self, table: pa.Table, payload: dict[str, pa.Array], rows: pa.Array,
                 rejects: Rejects, seal: SealInfo, *, schema: PayloadSchema | None,
                 failures: int = 0) -> Converted:
        """The two tables: ``payload`` (the payload columns and ``_extra`` of ``rows``, int64
        row numbers of ``table``) with the rows' identity, and the dead letters of
        ``rejects``."""
        data = pa.Table.from_arrays(
            [*payload.values(), *_identity(table, rows, seal.sealed_at_ms)],
            schema=data_schema(schema),
        )
        return Converted(data, _dead_letters(table, rejects, seal), failures)

    def pin_first(self, schema: PayloadSchema, seal: SealInfo) -> PayloadSchema:
        """Pin the first data's ``schema`` (from a registry's writer schema) unless one is in
        force; return the one in force. Raises SchemaUndecided when it has no column."""
        if not schema.fields:
            log.warning("schema_undecided", segment=seal.segment,
                        reason="the writer's schema has no field that can be a column")
            raise SchemaUndecided(f"segment {seal.segment}: no column in its writer's schema")
        return self.store.pin(schema)


    def _first_schema(self, rows: pa.Array, text: pa.StringArray, rejects: Rejects,
                      seal: SealInfo) -> tuple[pa.Array, pa.StringArray, PayloadSchema | None]:
        """No schema yet: decide it from this segment's records as conversion itself reads
        them. The same checks and the same parser (DuckDB) that decide which records are rows
        decide which records shape the schema, and each value's kind is read from the JSON
        text that parser gives (:func:`wal_bridge.schema.infer_texts`), so inference and
        conversion cannot disagree on what a record is; a segment the fast path reads whole is
        decided without DuckDB (:func:`flat_first_schema`). Returns the rows left, their text and
        the schema in force (None when no record is left); raises SchemaUndecided when the
        records give no column."""
        if (candidate := flat_first_schema(text)) is not None:
            return rows, text, self.store.pin(candidate)
        rows, text = forgiven(rows, text, rejects)
        # NaN and Infinity: any record holding them is a dead letter once converted (see
        # general's step 3), so it must not shape the schema either.
        suspect = pc.match_substring_regex(text, general.NONSTANDARD_NUMBER)
        rows, text = strict_look(rows, text, suspect, rejects)
        first = general.parse(self._duck, rows, text, (), rejects).kept()
        if not len(first.rows):
            return first.rows, first.text, None
        shapes = first.shapes  # the shapes of the rows kept, in order of first appearance
        used = sorted(pc.unique(shapes.ids).to_pylist())
        names = column_names(k for shape in used for k in shapes.keys[shape])
        texts: dict[str, pa.Array] = {}
        if names:
            src = pa.table({"i": first.rows, "v": first.text})
            values = self._duck.query(values_query(names), src).column("s").combine_chunks()
            texts = {name: values.field(j).cast(pa.string()) for j, name in enumerate(names)}
            # Each number as the record wrote it, as conversion will read it.
            which = numbers.suspects(first.text, list(texts.values()), {})
            if which is not None:
                texts, _ = numbers.patch(texts, first.text, which)
        inferred = infer_texts({name: t.to_pylist() for name, t in texts.items()})
        if not inferred.fields:
            log.warning("schema_undecided", segment=seal.segment, records=len(first.rows),
                        reason="no record of the segment has a field that can be a column; "
                               "it waits for data with fields, or for SCHEMA_FILE")
            raise SchemaUndecided(f"segment {seal.segment}: no column in its records")
        return first.rows, first.text, self.store.pin(inferred)


def flat_first_schema(text: pa.StringArray) -> PayloadSchema | None:
    """The first data's schema when the fast path reads the whole segment under it, else None.

    A candidate comes from Arrow's inference over the records (:func:`~wal_bridge.conversion.
    flat.infer_flat`) and is kept only if :func:`~wal_bridge.conversion.flat.read_flat` then
    reads every record under it, which it does only where its result is, row for row, the
    general converter's: conversion reads the segment with the very parser, and to the very
    values, that decided the schema. Anything else (a nested value, an unusual number, a key
    that cannot be a column) returns None, and the caller decides with the general
    converter's parser (DuckDB). So the usual first segment never loads DuckDB, which costs
    about 50 MiB of resident memory for as long as the process lives, and is decided in
    milliseconds instead of a Python pass over every value.
    """
    candidate = infer_flat(text)
    if candidate is None or read_flat(candidate, text) is None:
        return None
    return candidate


def _empty(schema: PayloadSchema | None, n: int) -> dict[str, pa.Array]:
    columns = {f.name: pa.nulls(n, f.arrow) for f in (schema.fields if schema else ())}
    columns[EXTRA_COLUMN] = pa.nulls(n, pa.string())
    return columns


# ----------------------------------------------------------------------------- the identity


def _identity(table: pa.Table, rows: pa.Array, ingested_at_ms: int) -> list[pa.Array]:
    """The identity columns of ``rows`` of the WAL batches ``table``, in METADATA_FIELDS
    order."""
    picked = table.select(list(WAL_COLUMNS.values()))
    if len(rows) != table.num_rows:
        picked = picked.take(rows)
    picked = picked.combine_chunks()
    stamps, raw = _kafka_timestamps(picked.column(WAL_COLUMNS[KAFKA_TIMESTAMP]))
    return [
        picked.column(WAL_COLUMNS[TOPIC]).cast(pa.string()),
        picked.column(WAL_COLUMNS[PARTITION]),
        picked.column(WAL_COLUMNS[OFFSET]),
        stamps,
        raw,
        picked.column(WAL_COLUMNS[KEY]),
        picked.column(WAL_COLUMNS[HEADERS]),
        pa.repeat(pa.scalar(ingested_at_ms, TS_TYPE), len(rows)),
    ]


def _kafka_timestamps(ms: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The broker's timestamps (Unix ms; -1 when it gave none) as ``_kafka_timestamp`` and
    ``_kafka_timestamp_ms``: a UTC timestamp where BigQuery's TIMESTAMP holds it, else NULL
    there and the value itself in the second array (NULL in both when the broker gave none,
    and in the second wherever the first holds the value).

    Kafka's timestamps are milliseconds, but a producer that writes microseconds (Redpanda, and
    Kafka before 4.0, accept them) lands after the year 9999.
    """
    ms = ms.cast(pa.int64())
    given = pc.greater_equal(ms, _ZERO)  # Kafka: -1 is "none"; no other negative is valid
    inside = pc.and_(given, pc.less_equal(ms, _LAST_MS))
    if pc.all(inside).as_py():  # the usual case: one comparison pass, no raw column
        return ms.cast(TS_TYPE), pa.nulls(len(ms), pa.int64())
    stamps = pc.if_else(inside, ms, _NO_MS).cast(TS_TYPE)
    raw = pc.if_else(pc.and_(given, pc.invert(inside)), ms, _NO_MS)
    return stamps, raw


def _dead_letters(table: pa.Table, rejects: Rejects, seal: SealInfo) -> pa.Table:
    order = sorted(range(len(rejects.rows)), key=rejects.rows.__getitem__)
    rows = pa.array([rejects.rows[k] for k in order], pa.int64())
    arrays = [
        *_identity(table, rows, seal.sealed_at_ms),
        table.column("_value").take(rows).combine_chunks(),
        pa.array([rejects.reasons[k] for k in order], pa.string()),
        pa.array([rejects.details[k] for k in order], pa.string()),
    ]
    return pa.Table.from_arrays(arrays, schema=DEAD_LETTER_SCHEMA)


# Arrow scalars made once: a Python literal in a compute call costs a slow conversion each time.
_ZERO = pa.scalar(0, pa.int64())
_NO_MS = pa.scalar(None, pa.int64())
_LAST_MS = pa.scalar(TIMESTAMP_RANGE_MS[1], pa.int64())
