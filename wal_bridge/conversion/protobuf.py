"""Protobuf writer schemas as typed columns (docs/schema.md, "Schema registry formats").

The message descriptor is the one ``confluent_kafka.schema_registry``'s ProtobufDeserializer
builds from the registered schema (the writer's), so each schema id has its own columns.

=================================================  ======================================
Protobuf                                           column (BigQuery)
=================================================  ======================================
bool                                               BOOL
int32, sint32, sfixed32, uint32, fixed32,          INT64
int64, sint64, sfixed64
uint64, fixed64                                    INT64 (a value over INT64's largest in
                                                   ``_extra``)
float, double                                      FLOAT64
string                                             STRING
bytes                                              BYTES
enum                                               STRING (the value's name; its number
                                                   when the schema has no name for it)
message                                            RECORD (STRUCT)
repeated T                                         T, REPEATED
map<K, V>                                          REPEATED RECORD<key K, value V>
oneof                                              one NULLABLE column per member (NULL but
                                                   the one set)
google.protobuf.Timestamp                          TIMESTAMP (microseconds; outside
                                                   BigQuery's range in ``_extra``)
google.protobuf.Duration                           RECORD<seconds INT64, nanos INT64>
google.protobuf.*Value wrappers                    the wrapped scalar, NULL when unset
google.protobuf.Struct, Value, ListValue, Any      json (the Protobuf JSON form)
recursive messages                                 json
=================================================  ======================================

A field with presence (a message, ``optional``, a oneof member) that is not set is NULL; a
proto3 scalar without presence reads as its default (0, "", false), as Protobuf defines it.
"""

from __future__ import annotations

from typing import Any

from wal_bridge.conversion import typed
from wal_bridge.conversion.typed import Column, Convert
from wal_bridge.schema import Field, FieldType

# FieldDescriptor.TYPE_* numbers (descriptor.proto).
_DOUBLE, _FLOAT, _INT64, _UINT64, _INT32, _FIXED64, _FIXED32, _BOOL, _STRING = range(1, 10)
_GROUP, _MESSAGE, _BYTES, _UINT32, _ENUM, _SFIXED32, _SFIXED64, _SINT32, _SINT64 = range(10, 19)
_SCALARS: dict[int, FieldType] = {
    _DOUBLE: FieldType.FLOAT64, _FLOAT: FieldType.FLOAT64, _BOOL: FieldType.BOOL,
    _STRING: FieldType.STRING, _BYTES: FieldType.BYTES, _ENUM: FieldType.STRING,
    **dict.fromkeys((_INT64, _UINT64, _INT32, _FIXED64, _FIXED32, _UINT32, _SFIXED32,
                     _SFIXED64, _SINT32, _SINT64), FieldType.INT64),
}
_WRAPPERS = {f"google.protobuf.{n}Value" for n in ("Double", "Float", "Int64", "UInt64",
                                                  "Int32", "UInt32", "Bool", "String", "Bytes")}
_JSON_TYPES = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue",
               "google.protobuf.Any"}
TIMESTAMP = "google.protobuf.Timestamp"


class _Recursive(Exception):
    """A message that contains itself: no fixed STRUCT can hold it."""


def _mapped(f: Any, kind: FieldType, fields: tuple[Field, ...] = (),
            convert: Convert = typed.identity) -> Column:
    return Column(Field(f.name, kind, "NULLABLE", fields), convert)


class _Mapper:
    def __init__(self) -> None:
        self.open: set[str] = set()

    def message(self, descriptor: Any) -> list[Column]:
        if descriptor.full_name in self.open:
            raise _Recursive(descriptor.full_name)
        self.open.add(descriptor.full_name)
        try:
            return [self.column(f) for f in descriptor.fields]
        finally:
            self.open.discard(descriptor.full_name)

    def column(self, f: Any) -> Column:
        try:
            column = self._column(f)
        except _Recursive:
            return _mapped(f, FieldType.JSON, convert=typed.as_json)
        if column.field.fields and not typed.nested_names_ok(column.field.fields):
            return _mapped(f, FieldType.JSON, convert=typed.as_json)
        return column

    def _column(self, f: Any) -> Column:
        message = f.message_type
        if message is not None and message.GetOptions().map_entry:
            key, value = (self.column(message.fields_by_name[n]) for n in ("key", "value"))
            m = typed.map_field(f.name, key.field, value.field)
            return Column(m, typed.entries(key.convert, value.convert))
        single = self._single(f)
        if f.is_repeated:
            s = single.field
            return Column(Field(f.name, s.type, "REPEATED", s.fields, s.precision, s.scale),
                          typed.repeated(single.convert))
        return single

    def _single(self, f: Any) -> Column:
        message = f.message_type
        if message is None:
            convert: Convert = typed.unsigned64 if f.type in (_UINT64, _FIXED64) else typed.identity
            return _mapped(f, _SCALARS[f.type], convert=convert)
        name = message.full_name
        if name == TIMESTAMP:
            return _mapped(f, FieldType.TIMESTAMP, convert=typed.timestamp_us(1))
        if name in _WRAPPERS:
            inner = message.fields_by_name["value"]
            convert = typed.unsigned64 if inner.type in (_UINT64, _FIXED64) else typed.identity
            return _mapped(f, _SCALARS[inner.type], convert=convert)
        if name in _JSON_TYPES:
            return _mapped(f, FieldType.JSON, convert=typed.as_json)
        columns = self.message(message)
        if not columns:
            return _mapped(f, FieldType.JSON, convert=typed.as_json)
        convert = typed.record([(c.field.name, c.field.name, c.convert) for c in columns])
        return _mapped(f, FieldType.RECORD, tuple(c.field for c in columns), convert)


def columns(descriptor: Any) -> list[Column]:
    """The columns of a message descriptor, one per field, in the descriptor's order."""
    return _Mapper().message(descriptor)


# ----------------------------------------------------------------------------- values


def to_raw(message: Any) -> dict[str, Any]:
    """A decoded message as plain values, keyed by field name: what the converters of
    :func:`columns` take (Timestamp as Unix microseconds, wrappers unwrapped, enums by name,
    maps as dicts, Struct/Value/ListValue/Any in the Protobuf JSON form)."""
    out: dict[str, Any] = {}
    for f in message.DESCRIPTOR.fields:
        out[f.name] = _field_value(message, f)
    return out


def _field_value(message: Any, f: Any) -> Any:
    entry = f.message_type
    if entry is not None and entry.GetOptions().map_entry:
        value_field = entry.fields_by_name["value"]
        return {k: _value(value_field, v) for k, v in getattr(message, f.name).items()}
    if f.is_repeated:
        return [_value(f, v) for v in getattr(message, f.name)]
    if f.has_presence and not message.HasField(f.name):
        return None
    return _value(f, getattr(message, f.name))


def _value(f: Any, value: Any) -> Any:
    if f.type == _ENUM:
        known = f.enum_type.values_by_number.get(value)
        return known.name if known is not None else str(value)
    message = f.message_type
    if message is None:
        return value
    name = message.full_name
    if name == TIMESTAMP:
        return value.seconds * 1_000_000 + value.nanos // 1000
    if name in _WRAPPERS:
        return value.value
    if name in _JSON_TYPES:
        from google.protobuf import json_format  # local: only the few records that hold one

        return json_format.MessageToDict(value)
    return to_raw(value)
