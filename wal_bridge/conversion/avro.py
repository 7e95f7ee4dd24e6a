"""Avro writer schemas as typed columns (docs/schema.md, "Schema registry formats").

=================================================  ======================================
Avro                                               column (BigQuery)
=================================================  ======================================
boolean                                            BOOL
int, long                                          INT64
float, double                                      FLOAT64
string, enum, uuid                                 STRING
bytes, fixed, duration                             BYTES
record                                             RECORD (STRUCT)
array<T>                                           T, REPEATED
map<T>                                             REPEATED RECORD<key STRING, value T>
[null, T] (either order), [T]                      T (every column is NULLABLE)
other unions, null, arrays of arrays or of         json (STRING holding the value as JSON)
nullable items, recursive records
date                                               DATE
time-millis, time-micros                           TIME
timestamp-millis, timestamp-micros                 TIMESTAMP
local-timestamp-millis, local-timestamp-micros     DATETIME
timestamp-nanos, local-timestamp-nanos             INT64 (the nanoseconds as written)
decimal(p, s), p - s <= 29 and s <= 9              NUMERIC(p, s)
decimal(p, s), p - s <= 38 and s <= 38             BIGNUMERIC(p, s)
decimal beyond that                                no column: in ``_extra``, as a string
=================================================  ======================================

Decoding reads the physical values (the writer's schema with its logical types removed, so a
timestamp beyond the year 9999 is still read); the converters here apply the logical types, and
a value BigQuery cannot hold (:class:`wal_bridge.conversion.typed.Spill`) goes to ``_extra``
as the writer wrote it.
"""

from __future__ import annotations

import copy
from typing import Any

from wal_bridge.conversion import typed
from wal_bridge.conversion.typed import Column, Convert
from wal_bridge.schema import Field, FieldType

_PRIMITIVES: dict[str, FieldType] = {
    "boolean": FieldType.BOOL, "int": FieldType.INT64, "long": FieldType.INT64,
    "float": FieldType.FLOAT64, "double": FieldType.FLOAT64, "string": FieldType.STRING,
    "bytes": FieldType.BYTES, "fixed": FieldType.BYTES, "enum": FieldType.STRING,
}
_LOGICAL: dict[str, tuple[FieldType, Convert]] = {
    "date": (FieldType.DATE, typed.date_days),
    "time-millis": (FieldType.TIME, typed.time_us(1000)),
    "time-micros": (FieldType.TIME, typed.time_us(1)),
    "timestamp-millis": (FieldType.TIMESTAMP, typed.timestamp_us(1000)),
    "timestamp-micros": (FieldType.TIMESTAMP, typed.timestamp_us(1)),
    "local-timestamp-millis": (FieldType.DATETIME, typed.timestamp_us(1000)),
    "local-timestamp-micros": (FieldType.DATETIME, typed.timestamp_us(1)),
    "uuid": (FieldType.STRING, typed.identity),
}
_LOGICAL_BASE = {"date": "int", "time-millis": "int", "time-micros": "long",
                 "timestamp-millis": "long", "timestamp-micros": "long",
                 "local-timestamp-millis": "long", "local-timestamp-micros": "long",
                 "uuid": "string"}
LOGICAL_TYPES = frozenset({*_LOGICAL, "decimal", "timestamp-nanos", "local-timestamp-nanos",
                           "duration"})


# A field's column: type, mode, nested fields, precision, scale, and the value converter.
Mapped = tuple[FieldType, str, tuple[Field, ...], int | None, int | None, Convert]


class _NoColumn(Exception):
    """This field has no typed column: its values go to ``_extra`` (a decimal beyond
    BIGNUMERIC)."""


class _Mapper:
    """Walks one parsed Avro schema (fastavro's form: a named type is defined at its first
    use and named afterwards)."""

    def __init__(self) -> None:
        self.named: dict[str, Any] = {}
        self.open: set[str] = set()  # records being mapped: a name met again is recursion

    def column(self, name: str, schema: Any) -> Column:
        try:
            kind, mode, fields, precision, scale, convert = self._map(schema)
        except _Recursive:
            kind, mode, fields, precision, scale, convert = self._json()
        if fields and not typed.nested_names_ok(fields):
            kind, mode, fields, precision, scale, convert = self._json()
        return Column(Field(name, kind, mode, fields, precision, scale), convert)

    @staticmethod
    def _json() -> Mapped:
        return FieldType.JSON, "NULLABLE", (), None, None, typed.as_json

    def _map(self, schema: Any) -> Mapped:
        if isinstance(schema, str):
            if schema in self.named:
                if schema in self.open:
                    raise _Recursive(schema)
                return self._map(self.named[schema])
            if schema == "null":
                return self._json()
            return _PRIMITIVES[schema], "NULLABLE", (), None, None, typed.identity
        if isinstance(schema, list):
            branches = [b for b in schema if b != "null"]
            return self._map(branches[0]) if len(branches) == 1 else self._json()
        return self._complex(schema)

    def _complex(self, schema: dict[str, Any]) -> Mapped:
        kind = schema["type"]
        if "name" in schema and kind in ("record", "enum", "fixed", "error"):
            self.named.setdefault(schema["name"], schema)
        logical = schema.get("logicalType")
        if logical == "decimal" and kind in ("bytes", "fixed"):
            return self._decimal(schema)
        if logical in _LOGICAL and kind == _LOGICAL_BASE[logical]:
            field_type, convert = _LOGICAL[logical]
            return field_type, "NULLABLE", (), None, None, convert
        mapped = {"record": self._record, "error": self._record, "array": self._array,
                  "map": self._entries}.get(kind)
        if mapped is not None:
            return mapped(schema)
        if kind in _PRIMITIVES:
            return _PRIMITIVES[kind], "NULLABLE", (), None, None, typed.identity
        return self._map(kind)  # {"type": "long"} and the like, or a named type

    def _array(self, schema: dict[str, Any]) -> Mapped:
        items = schema["items"]
        if isinstance(items, list) and "null" in items and len(items) > 1:
            return self._json()  # BigQuery arrays cannot hold NULL elements
        item_type, item_mode, fields, precision, scale, convert = self._map(items)
        if item_mode == "REPEATED":
            return self._json()  # no arrays of arrays in BigQuery
        return item_type, "REPEATED", fields, precision, scale, typed.repeated(convert)

    def _entries(self, schema: dict[str, Any]) -> Mapped:
        value = self.column("value", schema["values"])
        f = typed.map_field("m", Field("key", FieldType.STRING), value.field)
        return f.type, f.mode, f.fields, None, None, typed.entries(typed.identity, value.convert)

    def _decimal(self, schema: dict[str, Any]) -> Mapped:
        precision, scale = int(schema["precision"]), int(schema.get("scale", 0))
        if precision - scale <= 29 and scale <= 9:
            kind = FieldType.NUMERIC
        elif precision - scale <= 38 and scale <= 38:
            kind = FieldType.BIGNUMERIC
        else:
            raise _NoColumn(f"decimal({precision}, {scale}) is beyond BIGNUMERIC")
        return kind, "NULLABLE", (), precision, scale, typed.decimal_of(scale, precision)

    def _record(self, schema: dict[str, Any]) -> Mapped:
        name = schema.get("name", "")
        if name in self.open:
            raise _Recursive(name)
        self.open.add(name)
        try:
            columns = [self.column(f["name"], f["type"]) for f in schema["fields"]]
        except _NoColumn:
            return self._json()
        finally:
            self.open.discard(name)
        if not columns:
            return self._json()
        fields = tuple(c.field for c in columns)
        convert = typed.record([(c.field.name, c.field.name, c.convert) for c in columns])
        return FieldType.RECORD, "NULLABLE", fields, None, None, convert


class _Recursive(Exception):
    """A record that contains itself: no fixed STRUCT can hold it (a json column)."""


def columns(schema: Any) -> list[Column]:
    """The columns of an Avro writer's schema (parsed, as fastavro gives it): one per field of
    a record; any other top-level type is one column named ``value``. A field with no typed
    column (a decimal beyond BIGNUMERIC) is marked so (``has_column`` False): its values go to
    ``_extra``, as decimal text."""
    mapper = _Mapper()
    top = schema
    if isinstance(top, dict) and top.get("type") in ("record", "error"):
        out = []
        mapper.named.setdefault(top.get("name", ""), top)
        mapper.open.add(top.get("name", ""))
        for f in top["fields"]:
            out.append(_column_or_extra(mapper, f["name"], f["type"]))
        return out
    return [_column_or_extra(mapper, "value", top)]


def _column_or_extra(mapper: _Mapper, name: str, schema: Any) -> Column:
    try:
        return mapper.column(name, schema)
    except _NoColumn:  # a decimal beyond BIGNUMERIC: its text in _extra
        scale = _decimal_scale(schema)
        return Column(Field(name, FieldType.JSON), typed.as_json, has_column=False,
                      extra_form=_decimal_text(scale))


def _decimal_scale(schema: Any) -> int:
    if isinstance(schema, list):
        schema = next(b for b in schema if b != "null")
    return int(schema.get("scale", 0))


def _decimal_text(scale: int) -> Convert:
    def text(value: Any) -> Any:
        return str(typed.decimal_of(scale, 10**6)(value))

    return text


def is_record(schema: Any) -> bool:
    """Whether the writer's top-level type is a record (its fields are the columns)."""
    return isinstance(schema, dict) and schema.get("type") in ("record", "error")


def physical(schema: Any) -> Any:
    """``schema`` with its logical types removed, for reading the values as written (a
    timestamp beyond the year 9999, a decimal's bytes); the converters of :func:`columns`
    apply them."""
    out = copy.deepcopy(schema)

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("logicalType") in LOGICAL_TYPES:
                del node["logicalType"]
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(out)
    return out
