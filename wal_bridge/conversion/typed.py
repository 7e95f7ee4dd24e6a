"""Typed columns from a writer's schema (Avro, Protobuf): the pieces the two mappings share.

A mapping (:mod:`wal_bridge.conversion.avro`, :mod:`wal_bridge.conversion.protobuf`) turns a
writer's schema into :class:`Column` objects: a column definition of the payload schema
(:class:`wal_bridge.schema.Field`, BigQuery's types and modes) and a function from a decoded
value (plain Python: int, float, str, bytes, bool, None, dict, list) to the value Arrow writes
in that column. A value the column cannot hold (a timestamp outside BigQuery's range, an
unsigned integer over INT64's) raises :class:`Spill`: its top-level field is NULL in its column
and kept, as the writer gave it, in ``_extra``.

:class:`Plan` decides, for one writer schema against the table's schema in force, which column
each field fills (schema evolution): a column whose field the writer no longer has is NULL, a
field without a column goes to ``_extra``, and a field whose type differs from its column's is
an incompatible change (:class:`Incompatible`), never a silently changed column.
docs/schema.md, "Schema registry formats", describes all of it for users.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pyarrow as pa

from wal_bridge.schema import (
    EXTRA_COLUMN,
    TIMESTAMP_RANGE_US,
    Field,
    FieldType,
    PayloadSchema,
    bigquery_name_problem,
    name_problem,
)

Convert = Callable[[Any], Any]

# BigQuery's DATE range, 0001-01-01 to 9999-12-31, as days since 1970-01-01 (BigQuery, "Data
# types", DATE type).
DATE_RANGE_DAYS = (-719_162, 2_932_896)
DAY_US = 86_400_000_000
INT64_MAX = 2**63 - 1


class Spill(ValueError):
    """A value its column cannot hold: the top-level field goes to ``_extra`` instead."""


@dataclass(frozen=True)
class Column:
    """One field of a writer's schema as a column: its definition and its value converter."""

    field: Field
    convert: Convert
    has_column: bool = True  # False: the field's values always go to ``_extra``
    extra_form: Convert | None = None  # its values' form in ``_extra`` (default: as decoded)


def identity(value: Any) -> Any:
    return value


# ----------------------------------------------------------------------------- converters


def timestamp_us(scale: int) -> Convert:
    """An integer count of 1/``scale`` seconds... as Unix microseconds (``scale`` 1000 for
    millis, 1 for micros); outside BigQuery's TIMESTAMP range: :class:`Spill`."""

    def convert(value: Any) -> Any:
        if value is None:
            return None
        us = value * scale
        if not TIMESTAMP_RANGE_US[0] <= us <= TIMESTAMP_RANGE_US[1]:
            raise Spill(f"{value} is outside BigQuery's TIMESTAMP range")
        return us

    return convert


def date_days(value: Any) -> Any:
    if value is not None and not DATE_RANGE_DAYS[0] <= value <= DATE_RANGE_DAYS[1]:
        raise Spill(f"day {value} is outside BigQuery's DATE range")
    return value


def time_us(scale: int) -> Convert:
    def convert(value: Any) -> Any:
        if value is None:
            return None
        us = value * scale
        if not 0 <= us < DAY_US:
            raise Spill(f"{value} is not a time of day")
        return us

    return convert


def unsigned64(value: Any) -> Any:
    if value is not None and value > INT64_MAX:
        raise Spill(f"{value} is over INT64's largest value")
    return value


def decimal_of(scale: int, precision: int) -> Convert:
    """Two's-complement big-endian bytes (Avro's decimal) as a Decimal of ``scale``."""

    def convert(value: Any) -> Any:
        if value is None:
            return None
        unscaled = int.from_bytes(value, "big", signed=True)
        if len(str(abs(unscaled))) > precision:
            raise Spill(f"{unscaled} has more than {precision} digits")
        return Decimal(f"{unscaled}E-{scale}")  # parsed exactly, whatever the context

    return convert


def as_json(value: Any) -> Any:
    """A JSON column's value: the decoded value as minified JSON text."""
    return None if value is None else dumps(value)


def repeated(convert: Convert) -> Convert:
    def each(values: Any) -> Any:
        return None if values is None else [convert(v) for v in values]

    return each


def record(converters: Sequence[tuple[str, str, Convert]]) -> Convert:
    """A record's value as the dict Arrow takes for a struct: ``(writer name, column name,
    converter)`` per field with a column."""

    def convert(value: Any) -> Any:
        if value is None:
            return None
        return {column: conv(value.get(name)) for name, column, conv in converters}

    return convert


def entries(key: Convert, value: Convert) -> Convert:
    """A map as REPEATED RECORD<key, value>, in the map's order."""

    def convert(mapping: Any) -> Any:
        if mapping is None:
            return None
        return [{"key": key(k), "value": value(v)} for k, v in mapping.items()]

    return convert


def map_field(name: str, key: Field, value: Field) -> Field:
    """A map's column: REPEATED RECORD<key, value> (BigQuery has no map type)."""
    return Field(name, FieldType.RECORD, "REPEATED",
                 (Field("key", key.type, key.mode, key.fields, key.precision, key.scale),
                  Field("value", value.type, value.mode, value.fields, value.precision,
                        value.scale)))


def nested_names_ok(fields: Sequence[Field]) -> bool:
    """Whether every nested field's name is one BigQuery takes, and unique ignoring case."""
    folded = [f.name.lower() for f in fields]
    if len(set(folded)) != len(folded):
        return False
    return all(bigquery_name_problem(f.name) is None and nested_names_ok(f.fields)
               for f in fields)


# ----------------------------------------------------------------------------- _extra


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _finite(value: Any) -> Any:
    """NaN and the infinities as strings: JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """Decoded values as JSON text (``_extra``, json columns): bytes as base64, decimals as
    strings, NaN and infinities as strings."""
    return json.dumps(_finite(value), separators=(",", ":"), ensure_ascii=False,
                      default=_default)


# ----------------------------------------------------------------------------- the plan


class Incompatible(ValueError):
    """A writer's field whose type differs from its column's: the message names the field."""


def top_level(columns: Sequence[Column]) -> tuple[list[Column], list[Column]]:
    """The writer's fields that can be columns (BigQuery's naming rules and ours, the first of
    several spellings that differ only in case), and those that cannot (their values always
    go to ``_extra``)."""
    kept: list[Column] = []
    spilled: list[Column] = []
    taken: set[str] = set()
    for column in columns:
        name = column.field.name
        if (not column.has_column or name_problem(name) is not None
                or name.lower() in taken):
            spilled.append(column)
            continue
        taken.add(name.lower())
        kept.append(column)
    return kept, spilled


def first_schema(columns: Sequence[Column]) -> PayloadSchema:
    """The table's schema from a first writer's schema: its fields that can be columns."""
    return PayloadSchema(tuple(c.field for c in top_level(columns)[0]))


def _fits(writer: Field, table: Field, where: str) -> bool:
    """Whether ``writer``'s values fill ``table``'s column unchanged; False when the writer
    has nested fields the column lacks (those values also go to ``_extra``). Raises
    Incompatible when a type differs."""
    if (writer.type, writer.mode, writer.precision, writer.scale) != (
            table.type, table.mode, table.precision, table.scale):
        raise Incompatible(f"field {where} is {_describe(writer)} in the writer's schema, "
                           f"{_describe(table)} in the table")
    if writer.type is not FieldType.RECORD:
        return True
    complete = True
    theirs = {f.name.lower(): f for f in table.fields}
    for sub in writer.fields:
        match = theirs.get(sub.name.lower())
        if match is None or match.name != sub.name:
            complete = False
        else:
            complete = _fits(sub, match, f"{where}.{sub.name}") and complete
    return complete


def _describe(f: Field) -> str:
    kind = f.type.value.upper()
    if f.precision is not None:
        kind += f"({f.precision}, {f.scale or 0})"
    return f"REPEATED {kind}" if f.mode == "REPEATED" else kind


@dataclass
class Plan:
    """How one writer's schema fills the table's columns.

    ``fills[i]`` is the converter of the writer's field for table column ``i`` (None: the
    writer has no such field, the column is NULL); ``extra`` names the writer's fields kept in
    ``_extra`` (no column, or nested fields the column lacks). Raises :class:`Incompatible` when
    a field's type differs from its column's.
    """

    table: PayloadSchema
    fills: list[tuple[str, Convert] | None] = field(default_factory=list)
    extra: dict[str, Convert] = field(default_factory=dict)  # name -> its form in _extra
    partial: set[str] = field(default_factory=set)  # also in _extra, whole
    changed: list[str] = field(default_factory=list)  # type changed: in _extra (extra mode)

    @classmethod
    def of(cls, columns: Sequence[Column], table: PayloadSchema, *,
           incompatible: str = "wait") -> Plan:
        """The plan of a writer's ``columns`` against ``table``. A field whose type differs
        from its column's raises Incompatible, or with ``incompatible="extra"``
        (INCOMPATIBLE_SCHEMA=extra) goes to ``_extra``, its column NULL."""
        kept, spilled = top_level(columns)
        plan = cls(table, extra={c.field.name: c.extra_form or identity for c in spilled})
        by_name = {c.field.name.lower(): c for c in kept}
        used: set[str] = set()
        for column in table.fields:
            writer = by_name.get(column.name.lower())
            if writer is None or writer.field.name != column.name:
                plan.fills.append(None)
                continue
            used.add(writer.field.name)
            try:
                complete = _fits(writer.field, column, column.name)
            except Incompatible:
                if incompatible != "extra":
                    raise
                plan.fills.append(None)
                plan.extra[writer.field.name] = writer.extra_form or identity
                plan.changed.append(writer.field.name)
                continue
            if not complete:
                plan.partial.add(writer.field.name)
            plan.fills.append((writer.field.name, writer.convert))
        plan.extra.update({c.field.name: c.extra_form or identity for c in kept
                           if c.field.name not in used})
        return plan

    def row(self, record: dict[str, Any]) -> tuple[list[Any], str | None]:
        """One decoded record (top-level field name -> decoded value) as the values of the
        table's columns, in order, and its ``_extra`` JSON text (None when empty)."""
        values: list[Any] = []
        extra: dict[str, Any] = {}
        for fill in self.fills:
            if fill is None:
                values.append(None)
                continue
            name, convert = fill
            raw = record.get(name)
            try:
                values.append(convert(raw))
            except Spill:
                values.append(None)
                extra[name] = raw
                continue
            if name in self.partial and raw is not None:
                extra[name] = raw
        for name, form in self.extra.items():
            if record.get(name) is not None:
                extra[name] = form(record[name])
        return values, dumps(extra) if extra else None


def arrays(schema: PayloadSchema, rows: Sequence[list[Any]],
           extras: Sequence[str | None]) -> dict[str, pa.Array]:
    """The payload columns and ``_extra`` of ``rows`` (from :meth:`Plan.row`)."""
    columns: dict[str, pa.Array] = {}
    for i, f in enumerate(schema.fields):
        columns[f.name] = pa.array([r[i] for r in rows], type=f.arrow)
    columns[EXTRA_COLUMN] = pa.array(extras, type=pa.string())
    return columns
