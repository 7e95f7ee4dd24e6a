"""Parquet building: the record batches of a sealed segment in, two Arrow tables out. No GCS.

Every record becomes exactly one row of one of the two tables:

- the **data** table: the payload's fields as typed columns (:mod:`wal_bridge.schema`), then
  ``_extra`` (JSON text of the fields without a column, and of values that did not fit theirs),
  then the record's identity: ``_kafka_topic``, ``_kafka_partition``, ``_kafka_offset``,
  ``_kafka_timestamp`` (and ``_kafka_timestamp_ms`` when that cannot hold the broker's value),
  ``_kafka_key``, ``_kafka_headers`` and ``_ingested_at`` (the segment's seal time, fixed in the
  seal frame, so converting a segment again gives the same bytes);
- the **dead-letter** table: the same identity columns, the raw ``_value``, a ``_reason`` code
  and a ``_detail`` message, for records that cannot be a row: tombstones, empty values, values
  over MAX_RECORD_BYTES, invalid UTF-8, text that is not JSON, JSON that is not an object, and
  objects with a repeated key.

How it stays fast, with no per-record Python on the way of a good record:

1. Arrow checks whole columns: null, length, UTF-8, first and last byte.
   Then a segment whose records are exactly what a flat schema says (the usual case) is read
   in one parse by Arrow's JSON reader (:mod:`wal_bridge.conversion.flat`), and the steps below are
   skipped; any surprise in the segment sends it down them instead.
2. One DuckDB query parses every record twice (yyjson, in C): its keys, and the JSON text of
   each schema field's value. A record that is not JSON fails the query; only then is it asked
   again with a validity filter (a third parse).
3. Arrow casts each field's JSON text to its column type; per distinct key list (a segment has
   few), Python checks for repeated and unknown keys; unknown keys go through one more DuckDB
   query, for the records that have them.
4. Python's ``json`` reads only records already known or suspected to be bad (to say why, or
   to catch what the fast parser forgives), and, once per WAL, the first data to infer a schema.

DuckDB is imported on first use, so a process whose segments all take the fast path never
loads it.

docs/schema.md describes the columns, the types and the footer keys for users.
"""

from __future__ import annotations

import enum
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wal_bridge.conversion.casting import cast_fragments
from wal_bridge.conversion.flat import read_flat
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
    TIMESTAMP_RANGE_MS,
    TOPIC,
    Field,
    FieldType,
    PayloadSchema,
    SchemaStore,
    SharedSchema,
    infer,
)
from wal_bridge.wal.codec import BATCH_SCHEMA, HEADER_TYPE
from wal_bridge.wal.segment import SealInfo, batch_ranges, ranges_to_json

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
SCHEMA_KEY = "wal_bridge.schema"

# The fast parser (DuckDB's yyjson) forgives two things standard JSON (RFC 8259) forbids, so
# they are looked for separately: a trailing comma (in the raw text: matching records get a
# strict look in Python, and the rest never pay for it), and NaN or Infinity in any case, which
# it writes back as they came, so they can only land in JSON text (json columns, _extra): "nan"
# or "inf" there, ignoring case, sends the record to Python for a strict look.
TRAILING_COMMA = r",[ \t\n\r]*[\]}]"
NONSTANDARD_NUMBER = r"(?i)nan|inf"
_BRACED = r"^[ \t\n\r]*\{[\s\S]*\}[ \t\n\r]*$"  # an object, give or take whitespace


class Reason(enum.StrEnum):
    """Why a record went to the dead-letter table: the ``_reason`` column."""

    TOMBSTONE = "tombstone"
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    INVALID_UTF8 = "invalid_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    DUPLICATE_KEY = "duplicate_key"


@dataclass(frozen=True)
class Converted:
    data: pa.Table
    dead_letters: pa.Table
    # Field values kept in ``_extra`` because they did not fit their column's type.
    cast_failures: int = 0


def data_schema(payload: PayloadSchema | None) -> pa.Schema:
    """The data table's schema: payload columns, ``_extra``, then the record identity."""
    fields = [*(payload.arrow_fields() if payload else []), pa.field(EXTRA_COLUMN, pa.string()),
              *METADATA_FIELDS]
    metadata = {SCHEMA_KEY: payload.compact()} if payload is not None else None
    return pa.schema(fields, metadata=metadata)


# ----------------------------------------------------------------------------- bad records


@dataclass
class _Rejects:
    """Rows that cannot become data rows, with why; filled stage by stage."""

    rows: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def add(self, row: int, reason: Reason, detail: str) -> None:
        self.rows.append(row)
        self.reasons.append(reason.value)
        self.details.append(detail)


_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}  # what a JSON value that is no object is


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _strict_verdict(text: str) -> tuple[Reason, str] | None:
    """Python's strict reading of one record: None for a JSON object, else why not (slow path)."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return Reason.NOT_JSON, "nested too deeply"
    except ValueError as exc:
        return Reason.NOT_JSON, str(exc)
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), "a value")
        return Reason.NOT_OBJECT, f"the value is JSON but {kind}, not an object"
    return None


def _has_nonstandard_letters(values: pa.Array) -> bool:
    """Might any value hold "nan" or "inf" (any case)? One pass over the bytes, no regex."""
    if values.null_count == len(values):
        return False
    data = values.buffers()[2]
    raw = data.to_pybytes().lower() if data is not None else b""
    return b"nan" in raw or b"inf" in raw


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    decoded = dict(pairs)
    if len(decoded) != len(pairs):
        raise ValueError("a key appears more than once")
    return decoded


def _objects(text: pa.StringArray) -> list[dict[str, Any]]:
    """The records that are standard JSON objects without a repeated key, as Python objects:
    what the first data's schema is inferred from (once per WAL)."""
    out = []
    for value in text.to_pylist():
        try:
            decoded = json.loads(value, parse_constant=_reject_constant,
                                 object_pairs_hook=_unique_pairs)
        except (ValueError, RecursionError):
            continue  # rejected later, so it must not shape the schema
        if isinstance(decoded, dict):
            out.append(decoded)
    return out


# ----------------------------------------------------------------------------- key shapes


def _repeated(keys: list[str]) -> str | None:
    if len(set(keys)) == len(keys):
        return None
    return next(k for k in keys if keys.count(k) > 1)


@dataclass(frozen=True)
class _Shapes:
    """The key lists of a column of objects, by distinct shape: ``keys[ids[row]]``.

    A segment's records have few shapes, so per-shape Python stays off the per-record path.
    """

    ids: pa.Array  # int32, one per row
    keys: list[list[str]]

    @classmethod
    def of(cls, column: pa.Array) -> _Shapes:
        # Key lists joined with NUL and dictionary-encoded. The join is ambiguous only when a
        # key holds a NUL or is empty, and then splitting gives a row more keys than it has.
        encoded = pc.binary_join(column, _NUL).dictionary_encode()
        keys = [s.split("\x00") if s else [] for s in encoded.dictionary.to_pylist()]
        ids = encoded.indices.cast(pa.int32())
        counts = pa.array([len(k) for k in keys], pa.int32())
        if len(ids) and not counts.take(ids).equals(pc.list_value_length(column).cast(pa.int32())):
            seen: dict[tuple[str, ...], int] = {}  # number the shapes in Python (rare)
            numbers = [seen.setdefault(tuple(k), len(seen)) for k in column.to_pylist()]
            return cls(pa.array(numbers, pa.int32()), [list(k) for k in seen])
        return cls(ids, keys)

    def filter(self, mask: pa.Array) -> _Shapes:
        return _Shapes(self.ids.filter(mask), self.keys)


# ----------------------------------------------------------------------------- DuckDB


class _QueryFailed(Exception):
    """DuckDB refused the query: some record is not JSON after all."""


class _Duck:
    """A private in-memory DuckDB connection, made on first use (one thread by default), one
    query at a time (conversion threads share it).

    DuckDB parses; Arrow does everything per value (casts, string work), which is much faster
    than the same expressions in SQL.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._con: Any = None
        self._lock = threading.Lock()

    def query(self, sql: str, src: pa.Table) -> pa.Table:
        import duckdb  # local: only the general converter needs it

        with self._lock:
            if self._con is None:
                self._con = duckdb.connect(":memory:", config={"threads": self.threads})
            self._con.register("src", src)
            try:
                result: pa.Table = self._con.sql(sql).to_arrow_table()
            except duckdb.Error as exc:
                raise _QueryFailed(str(exc)) from exc
            finally:
                self._con.unregister("src")
        return result.combine_chunks()


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def parse_query(names: Sequence[str], *, validate: bool) -> str:
    """Per record of ``src(i, v)``: its keys, and the JSON text of the value of each of
    ``names`` (the schema's fields, then unknown keys expected from the last segment).

    Without ``validate`` a record that is not JSON fails the whole query (the caller then asks
    again with it); checking every record costs a third parse, which most segments never need.
    """
    # Not an injection vector: the only literal goes through _sql_text.
    columns = "i, json_keys(v) AS k"
    if names:
        columns += f", json_transform(v, {_structure(names)}) AS s"
    return f"SELECT {columns} FROM src" + (" WHERE json_valid(v)" if validate else "")  # noqa: S608


def values_query(names: Sequence[str]) -> str:
    """Per record of ``src(i, v)``: the JSON text of the value of each of ``names``."""
    return f"SELECT i, json_transform(v, {_structure(names)}) AS s FROM src"  # noqa: S608


def extra_query(fields: Sequence[Field]) -> str:
    """Per record of ``src(i, v)``: the object without the schema's fields (merge patch with
    them set to null: the rest keeps its order, nested nulls included)."""
    patch = json.dumps({f.name: None for f in fields}, separators=(",", ":"))
    return f"SELECT i, json_merge_patch(v, {_sql_text(patch)})::VARCHAR AS m FROM src"  # noqa: S608


def _structure(names: Sequence[str]) -> str:
    return _sql_text(json.dumps(dict.fromkeys(names, "JSON"), separators=(",", ":")))


# Unknown keys are read like the schema's fields (JSON text per key) when they are few and
# DuckDB can hold them as struct fields: not empty, and distinct from each other and from the
# schema's names even ignoring case (DuckDB's struct fields ignore case; JSON keys do not).
MAX_UNKNOWN_KEYS = 32


def _extractable(keys: Sequence[str], known: Sequence[str]) -> bool:
    folded = [k.lower() for k in (*known, *keys)]
    return len(keys) <= MAX_UNKNOWN_KEYS and all(keys) and len(set(folded)) == len(folded)


@dataclass
class _Parsed:
    rows: pa.Array  # int64 row numbers in the segment
    text: pa.StringArray
    shapes: _Shapes
    names: tuple[str, ...]  # what ``fragments`` holds: the schema's fields, then unknown keys
    fragments: pa.StructArray | None  # one string child (JSON text) per name
    dropped: pa.Array | None = None  # rows already rejected (repeated keys), still in place

    def fragment(self, name: str) -> pa.Array:
        assert self.fragments is not None
        return self.fragments.field(self.names.index(name)).cast(pa.string())

    def kept(self) -> _Parsed:
        if self.dropped is None:
            return self
        keep = pc.invert(self.dropped)
        frags = self.fragments.filter(keep) if self.fragments is not None else None
        return _Parsed(self.rows.filter(keep), self.text.filter(keep), self.shapes.filter(keep),
                       self.names, frags)


class _KeyHint:
    """The unknown keys of the last segment converted, for the next one to expect.

    A producer that added a field keeps sending it, so the next segment's main query reads
    those keys at once instead of asking again. It is a hint, shared by the conversion threads
    under a lock: each convert call reads it once and writes it once; it decides only which
    keys the first query reads, never what lands (the keys it misses are read by one more
    query), so threads converting at once may race on it without changing any file.
    """

    def __init__(self) -> None:
        self._keys: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def get(self) -> tuple[str, ...]:
        with self._lock:
            return self._keys

    def put(self, keys: tuple[str, ...]) -> None:
        with self._lock:
            self._keys = keys


# ----------------------------------------------------------------------------- the converter


def _indices(mask: pa.Array) -> pa.Array:
    return pc.indices_nonzero(mask).cast(pa.int64())


def _arange(n: int) -> pa.Array:
    """0 .. n-1 as int64, without a Python loop."""
    return pc.subtract(pc.cumulative_sum(pa.repeat(_ONE, n)), _ONE)


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


def _join_pieces(pieces: Sequence[pa.Array], n: int) -> pa.Array:
    """Row by row, the non-null pieces joined with commas (NULL when all are)."""
    joined = pa.nulls(n, pa.string())
    for piece in pieces:
        both = pc.binary_join_element_wise(joined, piece, _COMMA)
        joined = pc.coalesce(both, joined, piece)
    return joined


# Arrow scalars made once: a Python literal in a compute call costs a slow conversion each time.
_ZERO, _ONE = pa.scalar(0, pa.int64()), pa.scalar(1, pa.int64())
_FALSE = pa.scalar(False, pa.bool_())
_EMPTY, _COMMA, _NUL = (pa.scalar(t, pa.string()) for t in ("", ",", "\x00"))
_OPEN, _CLOSE = pa.scalar("{", pa.string()), pa.scalar("}", pa.string())
_NO_TEXT = pa.scalar(None, pa.string())
_NULL_JSON = pa.scalar("null", pa.string())
_NO_MS = pa.scalar(None, pa.int64())
_LAST_MS = pa.scalar(TIMESTAMP_RANGE_MS[1], pa.int64())


class Converter:
    """Turns the record batches of one sealed segment into a data table and a dead-letter table.

    ``schema`` is the :class:`SchemaStore` in force (a fixed :class:`PayloadSchema` is wrapped in
    one); without it the first data's schema is inferred and kept in memory only.
    """

    def __init__(self, max_record_bytes: int = 1024 * 1024,
                 schema: SchemaStore | PayloadSchema | None = None, *, threads: int = 1) -> None:
        self.max_record_bytes = max_record_bytes
        self.store = schema if isinstance(schema, SchemaStore) else SchemaStore(schema)
        self._max = pa.scalar(max_record_bytes, pa.int32() if max_record_bytes < 2**31
                              else pa.int64())
        self._duck = _Duck(threads)
        self._hint = _KeyHint()

    @classmethod
    def open(cls, max_record_bytes: int, wal_dir: Path, schema_file: Path | None = None,
             shared: SharedSchema | None = None) -> Converter:
        """The service's converter: SCHEMA_FILE when given, else the schema pinned in
        ``wal_dir`` (or pinned there from the first data); with ``shared``, the one its
        destination holds. Raises ConfigError for a bad one."""
        return cls(max_record_bytes, SchemaStore.open(wal_dir, schema_file, shared))

    def convert(self, batches: Sequence[pa.RecordBatch], seal: SealInfo) -> Converted:
        table = pa.Table.from_batches(list(batches), schema=BATCH_SCHEMA).combine_chunks()
        rejects = _Rejects()
        rows, text = self._screen(table.column("_value"), rejects)
        schema = self.store.agreed()
        if schema is None and len(rows):
            objects = _objects(text)
            if not objects:  # no record is a standard JSON object: say why of each (rare)
                rows, text = self._forgiven(rows, text, rejects)
                first = self._parse(rows, text, (), rejects).kept()
                rows, text = first.rows, first.text
            if len(rows):
                schema = self.store.pin(infer(objects))
        failures = 0
        if schema is None or not len(rows):
            payload = self._empty(schema, len(rows))
        elif (flat := read_flat(schema, text)) is not None:
            payload = {**flat, EXTRA_COLUMN: pa.nulls(len(rows), pa.string())}
        else:
            rows, text = self._forgiven(rows, text, rejects)
            payload, rows, failures = self._general(schema, rows, text, rejects)
        data = pa.Table.from_arrays(
            [*payload.values(), *self._identity(table, rows, seal.sealed_at_ms)],
            schema=data_schema(schema),
        )
        return Converted(data, self._dead_letters(table, rejects, seal), failures)

    def _general(self, schema: PayloadSchema, rows: pa.Array, text: pa.StringArray,
                 rejects: _Rejects) -> tuple[dict[str, pa.Array], pa.Array, int]:
        """Stages 2 and 3 for any segment: the payload columns with ``_extra``, the rows they
        belong to, and how many values did not fit their column."""
        expected = self._hint.get()  # read once: this call's own copy
        parsed = self._parse(rows, text, (*schema.names, *expected), rejects)
        payload, failed, unknown = self._columns(schema, parsed)
        self._hint.put(unknown)
        drop = self._standard(schema, parsed, payload, rejects)
        rows = parsed.rows
        if drop is not None:  # rows rejected on the way: repeated keys, NaN
            keep = pc.invert(drop)
            payload = {name: values.filter(keep) for name, values in payload.items()}
            failed = [mask.filter(keep) for mask in failed]
            rows = rows.filter(keep)
        return payload, rows, sum(pc.sum(mask).as_py() or 0 for mask in failed)

    # -- stage 1: what Arrow can tell about a whole column ---------------------------------

    def _screen(self, values: pa.ChunkedArray,
                rejects: _Rejects) -> tuple[pa.Array, pa.StringArray]:
        """Rows whose value may be a JSON object (as row numbers and text); reject the rest."""
        raw = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
        n = len(raw)
        lengths = pc.binary_length(raw)
        if n and (raw.null_count or pc.min(lengths).as_py() == 0
                  or pc.max(lengths).as_py() > self.max_record_bytes):
            for row in _indices(raw.is_null()).to_pylist():
                rejects.add(row, Reason.TOMBSTONE, "the record has no value (a tombstone)")
            for row in _indices(pc.equal(lengths, _ZERO)).to_pylist():
                rejects.add(row, Reason.EMPTY, "the value is empty")
            big = pc.greater(lengths, self._max)
            for row, size in zip(_indices(big).to_pylist(), lengths.filter(big).to_pylist(),
                                 strict=True):
                rejects.add(row, Reason.TOO_LARGE,
                            f"{size} bytes exceed MAX_RECORD_BYTES={self.max_record_bytes}")
            keep = pc.fill_null(pc.and_(pc.greater(lengths, _ZERO),
                                        pc.less_equal(lengths, self._max)), _FALSE)
            rows, raw = _indices(keep), raw.filter(keep)
        else:
            rows = _arange(n)
        try:
            text = raw.cast(pa.string())
        except pa.ArrowInvalid:
            rows, text = self._utf8(rows, raw, rejects)
        # A JSON object starts with "{" and ends with "}", give or take whitespace. Anything else
        # gets a strict look in Python, which also says what is wrong: rare, and mostly bad, so
        # it may be slow.
        odd = pc.or_(pc.invert(pc.starts_with(text, "{")), pc.invert(pc.ends_with(text, "}")))
        if pc.any(odd).as_py():  # whitespace around an object is fine: spare those Python
            padded = pc.match_substring_regex(text.filter(odd), _BRACED)
            odd = pc.replace_with_mask(odd, odd, pc.invert(padded))
        return self._strict_look(rows, text, odd, rejects)

    @staticmethod
    def _forgiven(rows: pa.Array, text: pa.StringArray,
                  rejects: _Rejects) -> tuple[pa.Array, pa.StringArray]:
        """Before DuckDB parses: a trailing comma, which it forgives (Arrow's reader does not),
        gets a strict look in Python; the records without one never pay for it."""
        return Converter._strict_look(rows, text,
                                      pc.match_substring_regex(text, TRAILING_COMMA), rejects)

    @staticmethod
    def _strict_look(rows: pa.Array, text: pa.StringArray, suspect: pa.Array,
                     rejects: _Rejects) -> tuple[pa.Array, pa.StringArray]:
        """Python's strict reading of the ``suspect`` records: reject those that are no JSON
        object, and return the rest."""
        if not pc.any(suspect).as_py():
            return rows, text
        bad = []
        for row, value in zip(rows.filter(suspect).to_pylist(), text.filter(suspect).to_pylist(),
                              strict=True):
            if (verdict := _strict_verdict(value)) is not None:
                rejects.add(row, *verdict)
                bad.append(row)
        if bad:
            keep = pc.invert(pc.is_in(rows, value_set=pa.array(bad, pa.int64())))
            rows, text = rows.filter(keep), text.filter(keep)
        return rows, text

    @staticmethod
    def _utf8(rows: pa.Array, raw: pa.Array,
              rejects: _Rejects) -> tuple[pa.Array, pa.StringArray]:
        """Find the values that are not UTF-8: only values with a byte over 0x7F can be, and
        Python decodes just those (Arrow's check says no more than "somewhere")."""
        ascii_only = pc.string_is_ascii(raw.view(pa.string()))  # byte by byte, any bytes
        suspect = pc.invert(ascii_only)
        bad = []
        for row, value in zip(rows.filter(suspect).to_pylist(), raw.filter(suspect).to_pylist(),
                              strict=True):
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as exc:
                rejects.add(row, Reason.INVALID_UTF8,
                            f"not valid UTF-8: {exc.reason} at byte {exc.start}")
                bad.append(row)
        keep = pc.invert(pc.is_in(rows, value_set=pa.array(bad, pa.int64())))
        return rows.filter(keep), raw.filter(keep).cast(pa.string())

    # -- stage 2: DuckDB parses: valid JSON, keys, each field's JSON text -----------------

    def _parse(self, rows: pa.Array, text: pa.StringArray, names: Sequence[str],
               rejects: _Rejects) -> _Parsed:
        """Parse the candidates: reject what is not JSON now, and mark (not yet remove) the
        objects with a repeated key."""
        src = pa.table({"i": rows, "v": text})
        try:
            result = self._duck.query(parse_query(names, validate=False), src)
        except _QueryFailed:
            result = self._duck.query(parse_query(names, validate=True), src)
        valid = result.column("i").combine_chunks()
        if len(valid) != len(rows):
            keep = pc.is_in(rows, value_set=valid)
            invalid = pc.invert(keep)
            for row, value in zip(rows.filter(invalid).to_pylist(),
                                  text.filter(invalid).to_pylist(), strict=True):
                rejects.add(row, *(_strict_verdict(value) or (
                    Reason.NOT_JSON, "rejected by the JSON parser (invalid escape or number)")))
            rows, text = rows.filter(keep), text.filter(keep)
        if not valid.equals(rows):
            raise AssertionError("DuckDB returned the rows out of order")  # never expected
        fragments = result.column("s").combine_chunks() if names else None
        parsed = _Parsed(rows, text, _Shapes.of(result.column("k").combine_chunks()),
                         tuple(names), fragments)
        repeated = {n: dup for n, keys in enumerate(parsed.shapes.keys)
                    if (dup := _repeated(keys)) is not None}
        if repeated:
            dup = pc.is_in(parsed.shapes.ids, value_set=pa.array(list(repeated), pa.int32()))
            for row, shape in zip(rows.filter(dup).to_pylist(),
                                  parsed.shapes.ids.filter(dup).to_pylist(), strict=True):
                rejects.add(row, Reason.DUPLICATE_KEY,
                            f"key {repeated[shape]!r} appears more than once in the object")
            parsed.dropped = dup
        return parsed

    # -- stage 3: typed columns and _extra, in Arrow --------------------------------------

    def _columns(self, schema: PayloadSchema, parsed: _Parsed
                 ) -> tuple[dict[str, pa.Array], list[pa.Array], tuple[str, ...]]:
        """The payload columns and ``_extra``; per field that had any, where its value did
        not fit (and went to ``_extra``); and the unknown keys a next segment may expect."""
        n = len(parsed.rows)
        columns: dict[str, pa.Array] = {}
        parts: list[pa.Array] = []  # pieces of _extra: '"name":value' or the unknown keys
        failures = []
        for f in schema.fields:
            frags = parsed.fragment(f.name)
            values = cast_fragments(f.type, frags)
            columns[f.name] = values
            failed = pc.and_(pc.is_valid(frags), pc.is_null(values))
            if pc.any(failed).as_py():
                failures.append(failed)
                label = pa.scalar(json.dumps(f.name) + ":", pa.string())
                parts.append(pc.if_else(failed, pc.binary_join_element_wise(label, frags, _EMPTY),
                                        _NO_TEXT))
        unknown, expect = self._unknown(schema, parsed)
        if unknown is not None:
            parts.insert(0, unknown)
        joined = _join_pieces(parts, n)
        columns[EXTRA_COLUMN] = pc.binary_join_element_wise(_OPEN, joined, _CLOSE, _EMPTY)
        return columns, failures, expect

    def _unknown(self, schema: PayloadSchema,
                 parsed: _Parsed) -> tuple[pa.Array | None, tuple[str, ...]]:
        """The ``_extra`` piece of keys without a column, per row ("k":v,...), or None; and
        those keys when they can be read like the schema's fields (else ``()``).

        Their values are read like the schema's fields: from the main query for the keys it
        was asked for (``parsed.names``), from one more query over the rows that have them for
        the rest; keys come in the order the segment first shows them. Keys DuckDB cannot hold
        as struct fields fall back to a merge patch of the whole object.
        """
        n = len(parsed.rows)
        known = set(schema.names)
        per_shape = [[k for k in keys if k not in known] for keys in parsed.shapes.keys]
        union = list(dict.fromkeys(k for keys in per_shape for k in keys))
        extractable = tuple(union) if _extractable(union, schema.names) else ()
        if not union:
            return None, extractable
        has = pa.array([bool(keys) for keys in per_shape], pa.bool_()).take(parsed.shapes.ids)
        src = pa.table({"i": parsed.rows.filter(has), "v": parsed.text.filter(has)})
        if not extractable:
            merged = self._duck.query(extra_query(schema.fields), src).column("m")
            inner = pc.utf8_slice_codeunits(merged.combine_chunks().cast(pa.string()), 1, -1)
            inner = pc.if_else(pc.equal(inner, _EMPTY), _NO_TEXT, inner)
            return pc.replace_with_mask(pa.nulls(n, pa.string()), has, inner), extractable
        values: dict[str, pa.Array] = {k: parsed.fragment(k) for k in union if k in parsed.names}
        missing = [k for k in union if k not in values]
        if missing:
            result = self._duck.query(values_query(missing), src).column("s").combine_chunks()
            for j, key in enumerate(missing):
                values[key] = pc.replace_with_mask(pa.nulls(n, pa.string()), has,
                                                   result.field(j).cast(pa.string()))
        pieces = []
        for key in union:
            present = pa.array([key in keys for keys in per_shape], pa.bool_())
            label = pa.scalar(json.dumps(key) + ":", pa.string())
            text = pc.binary_join_element_wise(label, pc.coalesce(values[key], _NULL_JSON),
                                               _EMPTY)
            pieces.append(pc.if_else(present.take(parsed.shapes.ids), text, _NO_TEXT))
        return _join_pieces(pieces, n), extractable

    @staticmethod
    def _standard(schema: PayloadSchema, parsed: _Parsed, columns: dict[str, pa.Array],
                  rejects: _Rejects) -> pa.Array | None:
        """Rows to drop: those marked in ``parsed`` (repeated keys), and records with NaN or
        Infinity, which the fast parser took for numbers; those can only have landed in JSON
        text (json columns, ``_extra``). None: nothing to drop."""
        dropped = parsed.dropped
        texts = [columns[f.name] for f in schema.fields if f.type is FieldType.JSON]
        texts.append(columns[EXTRA_COLUMN])
        # One look at the raw bytes first: most columns have neither "nan" nor "inf" at all.
        texts = [values for values in texts if _has_nonstandard_letters(values)]
        if not texts:
            return dropped
        n = len(parsed.rows)
        found = pc.fill_null(
            pc.match_substring_regex(pa.concat_arrays(texts), NONSTANDARD_NUMBER), _FALSE)
        suspect = found.slice(0, n)
        for k in range(1, len(texts)):
            suspect = pc.or_(suspect, found.slice(k * n, n))
        if dropped is not None:
            suspect = pc.and_(suspect, pc.invert(dropped))
        bad = []
        for row, value in zip(parsed.rows.filter(suspect).to_pylist(),
                              parsed.text.filter(suspect).to_pylist(), strict=True):
            if (verdict := _strict_verdict(value)) is not None:
                rejects.add(row, *verdict)
                bad.append(row)
        if not bad:
            return dropped
        drop = pc.is_in(parsed.rows, value_set=pa.array(bad, pa.int64()))
        return drop if dropped is None else pc.or_(drop, dropped)

    @staticmethod
    def _empty(schema: PayloadSchema | None, n: int) -> dict[str, pa.Array]:
        columns = {f.name: pa.nulls(n, f.type.arrow) for f in (schema.fields if schema else ())}
        columns[EXTRA_COLUMN] = pa.nulls(n, pa.string())
        return columns

    # -- assembling the two tables --------------------------------------------------------

    @staticmethod
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

    def _dead_letters(self, table: pa.Table, rejects: _Rejects, seal: SealInfo) -> pa.Table:
        order = sorted(range(len(rejects.rows)), key=rejects.rows.__getitem__)
        rows = pa.array([rejects.rows[k] for k in order], pa.int64())
        arrays = [
            *self._identity(table, rows, seal.sealed_at_ms),
            table.column("_value").take(rows).combine_chunks(),
            pa.array([rejects.reasons[k] for k in order], pa.string()),
            pa.array([rejects.details[k] for k in order], pa.string()),
        ]
        return pa.Table.from_arrays(arrays, schema=DEAD_LETTER_SCHEMA)


# ----------------------------------------------------------------------------- files


def footer_metadata(seal: SealInfo, table: pa.Table) -> dict[str, str]:
    """The key-value metadata of a file: what it holds and what its segment held.

    ``wal_bridge.records`` and ``wal_bridge.ranges`` describe this file's rows; the
    ``wal_bridge.segment_*`` keys describe the whole segment, so that the data file and the
    dead-letter file of a segment can be checked against each other from footers alone.
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
    kind = "dead_letter" if "_reason" in table.column_names else "data"
    return {
        "wal_bridge.format": FORMAT_VERSION,
        "wal_bridge.kind": kind,
        "wal_bridge.segment": str(seal.segment),
        "wal_bridge.instance": seal.instance,
        "wal_bridge.sealed_at_ms": str(seal.sealed_at_ms),
        "wal_bridge.records": str(table.num_rows),
        "wal_bridge.ranges": json.dumps(ranges_to_json(ranges)),
        "wal_bridge.segment_records": str(seal.records),
        "wal_bridge.segment_ranges": json.dumps(ranges_to_json(seal.ranges)),
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
