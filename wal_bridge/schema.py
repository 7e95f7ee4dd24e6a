"""The payload schema: which JSON fields become which typed columns, one schema for every file.

It comes from one of two places, decided at start-up:

- ``SCHEMA_FILE``, written by the user: the columns are fixed and never change;
- otherwise ``WAL_DIR/schema.json``, inferred from the first segment that holds a decodable
  record and pinned there (written atomically) before that segment's Parquet file exists, so a
  restart, a replay and every later segment use the same columns.

Both files have one format, a JSON list of columns in the order they appear in the files::

    [
      {"name": "event_id", "type": "string"},
      {"name": "amount", "type": "float64"},
      {"name": "context", "type": "json"}
    ]

Types: ``string``, ``int64``, ``float64``, ``bool``, ``timestamp`` and ``json`` (BigQuery's
names ``INTEGER``, ``FLOAT``, ``BOOLEAN``, ``INT64``, ``FLOAT64``, ``BOOL``, ``STRING``,
``TIMESTAMP`` and ``JSON`` are accepted too, in any case). An entry may also carry
``"mode": "NULLABLE"`` and a ``"description"``, so ``bq show --schema`` output of flat tables
can be reused. docs/schema.md says what each type accepts and where values that do not fit go.
"""

from __future__ import annotations

import enum
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from wal_bridge import durable
from wal_bridge.config import SPECS_BY_NAME
from wal_bridge.errors import ConfigError, ObjectConflictError, SchemaConflictError
from wal_bridge.logs import get_logger

if TYPE_CHECKING:
    from wal_bridge.sink import Sink

log = get_logger("wal_bridge.schema")

PINNED_NAME = "schema.json"

# The bridge's own columns, in every data file besides the payload's (parquet.py gives their
# types). Never a payload column name.
TOPIC = "_kafka_topic"
PARTITION = "_kafka_partition"
OFFSET = "_kafka_offset"
KAFKA_TIMESTAMP = "_kafka_timestamp"
KAFKA_TIMESTAMP_MS = "_kafka_timestamp_ms"
KEY = "_kafka_key"
# KEY_FORMAT other than raw: the key decoded by its writer's schema, as JSON text, right after
# _kafka_key (which keeps the bytes).
KEY_DECODED = "_kafka_key_decoded"
HEADERS = "_kafka_headers"
INGESTED_AT = "_ingested_at"
METADATA_COLUMNS = (
    TOPIC, PARTITION, OFFSET, KAFKA_TIMESTAMP, KAFKA_TIMESTAMP_MS, KEY, HEADERS, INGESTED_AT,
)
EXTRA_COLUMN = "_extra"
# The dead-letter file's own columns, after the identity columns.
DEAD_LETTER_COLUMNS = ("_value", "_reason", "_detail")
# The hive partition key of the external table (``raw/dt=YYYY-MM-DD/``): a column of that name
# in the files would clash with it in BigQuery.
PARTITION_KEY = "dt"
RESERVED = frozenset(n.lower() for n in (*METADATA_COLUMNS, KEY_DECODED, EXTRA_COLUMN,
                                         PARTITION_KEY))
# Column names BigQuery refuses, case-insensitive: those starting with these prefixes. Source:
# BigQuery, "Specify a schema", section "Column names" (cloud.google.com/bigquery/docs/schemas).
BIGQUERY_PREFIXES = ("_partition", "_table_", "_file_", "_row_timestamp", "__root__",
                     "_colidentifier")
# Letters, digits and underscores, not starting with a digit, at most 300 characters (the same
# page; "flexible column names" allow more, but not every reader of Parquet files does).
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")

# BigQuery's TIMESTAMP range: 0001-01-01 00:00:00 to 9999-12-31 23:59:59.999999 UTC (BigQuery,
# "Data types", TIMESTAMP type). As Unix microseconds and milliseconds, both ends included.
TIMESTAMP_RANGE_US = (-62_135_596_800_000_000, 253_402_300_799_999_999)
TIMESTAMP_RANGE_MS = (-62_135_596_800_000, 253_402_300_799_999)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# What a timestamp column accepts: RFC 3339 / ISO 8601 date and time, 'T' or a space between
# them, optional seconds and fraction, an optional offset (none means UTC). The same pattern runs
# in Python (inference) and in RE2 (conversion), so it keeps to their common syntax.
TIMESTAMP_PATTERN = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?"
    r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?"
)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)


class FieldType(enum.StrEnum):
    STRING = "string"
    INT64 = "int64"
    FLOAT64 = "float64"
    BOOL = "bool"
    TIMESTAMP = "timestamp"
    JSON = "json"  # any JSON value, kept as its (minified) JSON text in a STRING column
    # Only from a registry writer's schema (Avro, Protobuf): docs/schema.md, "Schema registry
    # formats". JSON payloads (and SCHEMA_FILE) use the six above.
    BYTES = "bytes"
    DATE = "date"
    TIME = "time"  # microseconds since midnight
    DATETIME = "datetime"  # a civil date and time, no zone (Avro local-timestamp-*)
    NUMERIC = "numeric"  # an exact decimal with the field's precision and scale
    BIGNUMERIC = "bignumeric"
    RECORD = "record"  # a STRUCT of the field's ``fields``

    @property
    def arrow(self) -> pa.DataType:
        return _ARROW[self]


_ARROW: dict[FieldType, pa.DataType] = {
    FieldType.STRING: pa.string(),
    FieldType.INT64: pa.int64(),
    FieldType.FLOAT64: pa.float64(),
    FieldType.BOOL: pa.bool_(),
    FieldType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    FieldType.JSON: pa.string(),
    FieldType.BYTES: pa.binary(),
    FieldType.DATE: pa.date32(),
    FieldType.TIME: pa.time64("us"),
    FieldType.DATETIME: pa.timestamp("us"),
    # NUMERIC and BIGNUMERIC take the field's precision and scale (Field.arrow); these are
    # BigQuery's widest of each.
    FieldType.NUMERIC: pa.decimal128(38, 9),
    FieldType.BIGNUMERIC: pa.decimal256(76, 38),
}

# The types of JSON payloads (SCHEMA_FILE and inference): casting.py reads JSON text into them.
JSON_TYPES = frozenset({FieldType.STRING, FieldType.INT64, FieldType.FLOAT64, FieldType.BOOL,
                        FieldType.TIMESTAMP, FieldType.JSON})

TYPE_NAMES: dict[str, FieldType] = {
    **{t.value: t for t in FieldType},
    "integer": FieldType.INT64,
    "float": FieldType.FLOAT64,
    "boolean": FieldType.BOOL,
    "struct": FieldType.RECORD,
}


class SchemaError(ValueError):
    """A schema document that does not parse or breaks a rule; the message says which.

    It stays here, not in errors.py: a parse error of one document (a ValueError, like
    json.JSONDecodeError) that never reaches an operator by itself. Each reader of a document
    turns it into an error naming where the document is: SchemaStore.open a ConfigError naming
    SCHEMA_FILE or the pinned file, SharedSchema.publish a SchemaConflictError naming the
    stored object, ``wal_bridge schema`` a WalBridgeError naming it.
    """


@dataclass(frozen=True)
class Field:
    """One column (or one field of a RECORD column).

    ``mode`` is NULLABLE or REPEATED (an array of the type; BigQuery's modes). ``fields`` are a
    RECORD's fields, ``precision`` and ``scale`` a NUMERIC's or BIGNUMERIC's (BigQuery's
    parameterized decimal types). Only registry formats give the types and modes beyond the
    JSON ones (:data:`JSON_TYPES`, NULLABLE).
    """

    name: str
    type: FieldType
    mode: str = "NULLABLE"
    fields: tuple[Field, ...] = ()
    precision: int | None = None
    scale: int | None = None

    @property
    def arrow(self) -> pa.DataType:
        """The Arrow type of the column: RECORD a struct, REPEATED a list, NUMERIC and
        BIGNUMERIC a decimal of the field's precision and scale."""
        if self.type is FieldType.RECORD:
            kind: pa.DataType = pa.struct([pa.field(f.name, f.arrow) for f in self.fields])
        elif self.type in (FieldType.NUMERIC, FieldType.BIGNUMERIC) and self.precision:
            scale = self.scale or 0
            kind = (pa.decimal128(self.precision, scale) if self.precision <= 38
                    else pa.decimal256(self.precision, scale))
        else:
            kind = self.type.arrow
        return pa.list_(kind) if self.mode == "REPEATED" else kind

    @property
    def flat(self) -> bool:
        """Whether the JSON conversion path can fill this column."""
        return self.type in JSON_TYPES and self.mode == "NULLABLE"

    def to_dict(self) -> dict[str, Any]:
        """The file format's entry: name and type, then only what differs from the default
        (so a JSON payload's schema keeps its bytes)."""
        entry: dict[str, Any] = {"name": self.name, "type": self.type.value}
        if self.mode != "NULLABLE":
            entry["mode"] = self.mode
        if self.precision is not None:
            entry["precision"] = self.precision
        if self.scale is not None:
            entry["scale"] = self.scale
        if self.fields:
            entry["fields"] = [f.to_dict() for f in self.fields]
        return entry


def bigquery_name_problem(name: str) -> str | None:
    """Why BigQuery would refuse ``name`` as a column (or a STRUCT field) name, or None.

    The one naming rule for every column the bridge writes: payload columns, its own metadata
    columns and the dead-letter file's. Source: BigQuery, "Specify a schema", "Column names".
    """
    if not NAME_PATTERN.fullmatch(name):
        return ("a column name is 1-300 letters, digits or underscores, not starting with a "
                "digit")
    lowered = name.lower()
    for prefix in BIGQUERY_PREFIXES:
        if lowered.startswith(prefix):
            return f"{name!r} starts with {prefix.upper()}, a prefix BigQuery reserves"
    return None


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a payload column (BigQuery's rules and ours), or None."""
    if (problem := bigquery_name_problem(name)) is not None:
        return problem
    if name.lower() in RESERVED:
        return f"{name!r} is reserved for the bridge's own columns"
    return None


@dataclass(frozen=True)
class PayloadSchema:
    """The payload columns, in file order. Immutable: the same for every file."""

    fields: tuple[Field, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def arrow_fields(self) -> list[pa.Field]:
        return [pa.field(f.name, f.arrow) for f in self.fields]

    @property
    def flat(self) -> bool:
        """Whether every column is one the JSON conversion path fills (:data:`JSON_TYPES`)."""
        return all(f.flat for f in self.fields)

    def to_json(self) -> bytes:
        """The file format: one column per line, stable bytes for the same schema."""
        lines = ",\n".join("  " + json.dumps(f.to_dict()) for f in self.fields)
        return (f"[\n{lines}\n]\n" if self.fields else "[]\n").encode()

    def compact(self) -> str:
        """A one-line form for Parquet footers and logs: ``[name, type]`` per column, with a
        third item (the rest of the file format's entry) for registry types."""
        def item(f: Field) -> list[Any]:
            rest = {k: v for k, v in f.to_dict().items() if k not in ("name", "type")}
            return [f.name, f.type.value, rest] if rest else [f.name, f.type.value]
        return json.dumps([item(f) for f in self.fields], separators=(",", ":"))

    @classmethod
    def parse(cls, data: bytes | str, *, nested: bool = False) -> PayloadSchema:
        """Parse the file format; raise SchemaError naming the first problem. Only with
        ``nested`` (a schema the bridge wrote from a registry's writer schema) are the
        registry types, REPEATED, ``fields``, ``precision`` and ``scale`` accepted."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SchemaError(f"not valid JSON: {exc}") from None
        if not isinstance(doc, list):
            raise SchemaError('expected a JSON list of {"name": ..., "type": ...} objects')
        return cls(_parse_fields(doc, "column", nested, top=True))


def _parse_fields(doc: list[Any], what: str, nested: bool, *, top: bool) -> tuple[Field, ...]:
    fields: list[Field] = []
    seen: dict[str, str] = {}
    for position, item in enumerate(doc, start=1):
        fields.append(_parse_field(f"{what} {position}", item, seen, nested, top))
    return tuple(fields)


_KEYS = {"name", "type", "mode", "description"}
_NESTED_KEYS = {*_KEYS, "fields", "precision", "scale"}


def _parse_field(where: str, item: Any, seen: dict[str, str], nested: bool,
                 top: bool) -> Field:
    if not isinstance(item, dict):
        raise SchemaError(f'{where}: expected an object like {{"name": "id", "type": "int64"}}')
    unknown = sorted(set(item) - (_NESTED_KEYS if nested else _KEYS))
    if unknown:
        raise SchemaError(f"{where}: unknown key {unknown[0]!r} (expected "
                          f"{', '.join(sorted(_NESTED_KEYS if nested else _KEYS))})")
    name, kind = item.get("name"), item.get("type")
    if not isinstance(name, str):
        raise SchemaError(f"{where}: 'name' must be a string")
    where = f"{where} ({name!r})"
    problem = name_problem(name) if top else bigquery_name_problem(name)
    if problem is not None:
        raise SchemaError(f"{where}: {problem}")
    if name.lower() in seen:
        raise SchemaError(f"{where}: same name as {seen[name.lower()]!r} (BigQuery column names "
                          "ignore case)")
    seen[name.lower()] = name
    types = TYPE_NAMES if nested else {k: v for k, v in TYPE_NAMES.items() if v in JSON_TYPES}
    if not isinstance(kind, str) or kind.lower() not in types:
        raise SchemaError(f"{where}: unknown type {kind!r}; expected one of "
                          f"{', '.join(sorted({t.value for t in types.values()}))} "
                          "(nested values: json)")
    mode = item.get("mode", "NULLABLE")
    modes = ("NULLABLE", "REPEATED") if nested else ("NULLABLE",)
    if not isinstance(mode, str) or mode.upper() not in modes:
        raise SchemaError(f"{where}: mode {mode!r} is not supported: every column is NULLABLE "
                          "(a REPEATED or RECORD value is a json column)")
    field_type = TYPE_NAMES[kind.lower()]
    children: tuple[Field, ...] = ()
    if field_type is FieldType.RECORD:
        sub = item.get("fields")
        if not isinstance(sub, list) or not sub:
            raise SchemaError(f"{where}: a record needs a non-empty list of 'fields'")
        children = _parse_fields(sub, f"{where} field", nested, top=False)
    precision, scale = item.get("precision"), item.get("scale")
    for label, value in (("precision", precision), ("scale", scale)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise SchemaError(f"{where}: {label} must be a whole number")
    return Field(name, field_type, mode.upper(), children, precision, scale)


# ------------------------------------------------------------------------------- inference


_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")


def carried(text: str) -> bool:
    """Does a double (a float64 column) carry the JSON number ``text`` exactly? The double
    nearest to it, printed in the shortest form that reads back to it (Python's ``repr``), must
    be the same number: ``0.1``, ``2.50``, ``1E-7``, ``1e2`` and ``-0`` are carried;
    ``0.30000000000000004441``, ``9007199254740993``, ``1e-400`` and ``1e400`` are not."""
    try:
        nearest = float(text)
        return abs(nearest) != _INF and Decimal(repr(nearest)) == Decimal(text)
    except (ValueError, InvalidOperation):
        return False


_INF = float("inf")


def text_kind(text: str | None) -> str:
    """The kind of one JSON value, read from its JSON text as the converter's parser gives it
    (None or ``null``: a JSON null): null, bool, int (within int64, carried by a double too),
    wideint (within int64 only), bigint, float (carried by a double: :func:`carried`),
    widefloat, timestamp, string or nested. Inference reads only this, so the schema is
    decided from what conversion reads, never from a second parser's idea of the record."""
    if text is None or text == "null":
        return "null"
    if text in ("true", "false"):
        return "bool"
    first = text[0]
    if first == '"':
        value = json.loads(text)  # one JSON string: no nesting to go wrong
        return "timestamp" if is_timestamp(value) else "string"
    if first in "[{":
        return "nested"
    return _number_kind(text)


def _number_kind(text: str) -> str:
    if _INTEGER.fullmatch(text):
        if not INT64_MIN <= int(text) <= INT64_MAX:
            return "bigint"
        return "int" if carried(text) else "wideint"  # wideint: int64 only, not float64
    return "float" if carried(text) else "widefloat"


def is_timestamp(text: str) -> bool:
    """Does a timestamp column accept ``text``? (The pattern, and a real calendar date.)"""
    if not _TIMESTAMP.fullmatch(text):
        return False
    try:
        # fromisoformat takes at most 6 fraction digits; the column keeps microseconds anyway.
        head, dot, tail = text.partition(".")
        if dot:
            digits = len(tail) - len(tail.lstrip("0123456789"))
            text = f"{head}.{tail[:min(digits, 6)]:0<6}{tail[digits:]}"
        datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        return False
    return True


# Which column type a set of value kinds (nulls left out) becomes, first match wins.
_RULES: tuple[tuple[frozenset[str], FieldType], ...] = (
    (frozenset({"bool"}), FieldType.BOOL),
    (frozenset({"int", "wideint"}), FieldType.INT64),
    (frozenset({"int", "float"}), FieldType.FLOAT64),
    (frozenset({"timestamp"}), FieldType.TIMESTAMP),
    (frozenset({"string", "timestamp"}), FieldType.STRING),
)


def _decide(kinds: set[str]) -> FieldType:
    """Null-only (nothing tells the type), nested, integers beyond int64, numbers a double
    does not carry (with no other kind of number an int64 column would take), and mixed kinds
    (a number here, a string there) become json: such a column takes every later value
    exactly."""
    kinds = kinds - {"null"}
    for allowed, kind in _RULES:
        if kinds and kinds <= allowed:
            return kind
    return FieldType.JSON


def column_names(keys: Iterable[str]) -> list[str]:
    """The keys that become columns, from a segment's top-level keys in order of first
    appearance: those whose name can be a column (:func:`name_problem`), and of several
    spellings that differ only in case, the first."""
    names: list[str] = []
    taken: set[str] = set()
    for name in dict.fromkeys(keys):
        if name_problem(name) is not None or name.lower() in taken:
            continue
        taken.add(name.lower())
        names.append(name)
    return names


def infer_texts(columns: Mapping[str, Iterable[str | None]]) -> PayloadSchema:
    """The schema of the first data, from the JSON text of every value of each column
    (:func:`column_names`, in order; None where a record lacks the key), as the converter's
    parser read them: each column gets the narrowest type every value fits (:func:`text_kind`).
    No columns: an empty schema, which the store never pins."""
    fields = []
    for name, texts in columns.items():
        fields.append(Field(name, _decide({text_kind(t) for t in texts})))
    return PayloadSchema(tuple(fields))


def infer(records: Iterable[Mapping[str, Any]]) -> PayloadSchema:
    """The schema of decoded records (Python objects, standard JSON): every usable top-level
    field, in order of appearance, each value judged from its JSON text like
    :func:`infer_texts` (which the converter uses, on its own parser's texts)."""
    rows = list(records)
    names = column_names(k for record in rows for k in record)
    return infer_texts({name: [json.dumps(r[name], separators=(",", ":")) if name in r else None
                               for r in rows] for name in names})


# ------------------------------------------------------------------------------- the store


def _schema_file_error(path: Path, problem: str) -> ConfigError:
    spec = SPECS_BY_NAME["schema_file"]
    return ConfigError(f"{spec.env} ({spec.flag})={str(path)!r}: {problem}")


class SharedSchema:
    """The destination's copy of the schema: one per table, whichever instance wrote it first.

    It is the object ``key`` of ``sink`` (``_wal_bridge/{prefix}/schema.json``, outside the
    table's files and their lifecycle rule), in the ``SCHEMA_FILE`` format, written create-only:
    instances racing to pin their first data agree on the first one stored, and every instance
    adopts it. ``scratch`` is a directory for the staged bytes (the WAL directory, whose stray
    temp files are cleared at start).
    """

    def __init__(self, sink: Sink, key: str, scratch: Path) -> None:
        self.sink = sink
        self.key = key
        self.scratch = scratch

    @property
    def url(self) -> str:
        return self.sink.destination.url(self.key)

    def publish(self, schema: PayloadSchema) -> PayloadSchema:
        """Store ``schema`` unless the destination holds one; return the one it holds.

        Raises SinkError (``transient`` says whether to try again), or SchemaConflictError
        (exit code 2) when the stored object is not a schema.
        """
        staged = durable.temp_path(self.scratch / "schema.shared")
        staged.write_bytes(schema.to_json())
        try:
            self.sink.put(self.key, staged)
        except ObjectConflictError:
            try:
                return PayloadSchema.parse(self.sink.read(self.key), nested=True)
            except SchemaError as exc:
                raise SchemaConflictError(
                    f"{self.url} is not a schema wal-bridge can read ({exc}): every instance "
                    "writing one table must use one schema; with every instance stopped, fix it "
                    "or remove it (the first instance to convert then stores its own)") from None
        finally:
            staged.unlink(missing_ok=True)
        return schema


def _difference(ours: PayloadSchema, theirs: PayloadSchema) -> str:
    """The first column where two schemas differ, in words."""
    for position, (a, b) in enumerate(zip(ours.fields, theirs.fields, strict=False), start=1):
        if a != b:
            return (f"column {position} is {a.name} {a.type.value} here, "
                    f"{b.name} {b.type.value} there")
    return f"{len(ours.fields)} columns here, {len(theirs.fields)} there"


class SchemaStore:
    """Holds the schema in force and pins the first data's schema when none is fixed yet.

    With a :class:`SharedSchema`, the schema in force is also the destination's: SCHEMA_FILE or
    a schema pinned earlier in the WAL directory is published there (and must agree with what
    is stored), and the first data's schema is published or, when another instance was first,
    replaced by the stored one before any file is written with it.
    """

    def __init__(self, schema: PayloadSchema | None = None, *, pin_path: Path | None = None,
                 source: str = "memory", shared: SharedSchema | None = None) -> None:
        self._schema = schema
        self.pin_path = pin_path
        self.source = source
        self.shared = shared
        self._agreed = shared is None  # the destination holds the schema in force
        self._lock = threading.Lock()  # conversion threads may pin at the same time

    @classmethod
    def open(cls, wal_dir: Path, schema_file: Path | None = None,
             shared: SharedSchema | None = None) -> SchemaStore:
        """SCHEMA_FILE when given, else the schema pinned in ``wal_dir`` (or none yet)."""
        if schema_file is not None:
            try:
                schema = PayloadSchema.parse(Path(schema_file).read_bytes())
            except OSError as exc:
                raise _schema_file_error(schema_file, f"cannot read it: {exc.strerror}") from None
            except SchemaError as exc:
                raise _schema_file_error(schema_file, str(exc)) from None
            log.info("schema_loaded", source="SCHEMA_FILE", path=str(schema_file),
                     columns=len(schema.fields))
            return cls(schema, source="SCHEMA_FILE", shared=shared)
        pinned = wal_dir / PINNED_NAME
        try:
            data = pinned.read_bytes()
        except FileNotFoundError:
            return cls(None, pin_path=pinned, source="first data", shared=shared)
        try:
            schema = PayloadSchema.parse(data, nested=True)
        except SchemaError as exc:
            raise ConfigError(f"{pinned} (the schema pinned from the first data): {exc}; "
                              "fix or remove it with the bridge stopped") from None
        log.info("schema_loaded", source="pinned", path=str(pinned), columns=len(schema.fields))
        return cls(schema, pin_path=pinned, source="pinned", shared=shared)

    @property
    def schema(self) -> PayloadSchema | None:
        return self._schema

    def agreed(self) -> PayloadSchema | None:
        """The schema in force, once the destination is known to hold the same (None: no
        schema yet). Raises SchemaConflictError when it holds another, SinkError when it cannot
        be reached (try again later)."""
        with self._lock:
            if self._schema is not None and not self._agreed:
                self._agree(self._schema)
            return self._schema

    def pin(self, schema: PayloadSchema) -> PayloadSchema:
        """Fix ``schema`` for good (durably, when there is a pin path, and at the destination,
        when shared) unless one is in force; return the one in force. An empty schema is
        never fixed (ValueError): it would give every later file no payload columns."""
        with self._lock:
            if self._schema is None:
                if not schema.fields:
                    raise ValueError("an empty schema is never pinned")
                self._pin(schema)
            elif not self._agreed:
                self._agree(self._schema)
            assert self._schema is not None
            return self._schema

    def _agree(self, ours: PayloadSchema) -> None:
        assert self.shared is not None
        stored = self.shared.publish(ours)
        if stored != ours:
            if self.pin_path is None:
                where = "SCHEMA_FILE"
                fix = "make SCHEMA_FILE the same (`wal_bridge schema` prints the stored one)"
            else:
                where, fix = (f"the schema pinned in {self.pin_path}",
                              f"stop the bridge and remove {self.pin_path} to adopt it")
            raise SchemaConflictError(
                f"{where} differs from the one stored for this destination at {self.shared.url} "
                f"({_difference(ours, stored)}): every instance writing one table must use one "
                f"schema; {fix}")
        self._agreed = True
        log.info("schema_agreed", destination=self.shared.url, columns=len(ours.fields))

    def _pin(self, schema: PayloadSchema) -> None:
        if self.shared is not None:
            stored = self.shared.publish(schema)
            if stored != schema:
                log.info("schema_adopted", destination=self.shared.url,
                         columns=len(stored.fields), inferred=schema.compact())
            schema = stored
            self._agreed = True
        if self.pin_path is not None:
            self.pin_path.parent.mkdir(parents=True, exist_ok=True)
            durable.write_atomic(self.pin_path, schema.to_json())
        self._schema = schema
        self.source = "pinned"
        log.info("schema_pinned", path=str(self.pin_path) if self.pin_path else None,
                 columns=len(schema.fields), schema=schema.compact())
