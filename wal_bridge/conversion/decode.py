"""Conversion of registry formats (VALUE_FORMAT avro, protobuf, json_schema, auto): one sealed
segment's records decoded with their writers' schemas, into the same two tables the JSON path
makes (:class:`wal_bridge.conversion.Converted`).

Per segment:

1. Each value is checked as the JSON path checks it (tombstone, empty, over MAX_RECORD_BYTES),
   then for the wire format (``no_magic_byte``); its schema id is looked up (once per id, then
   cached): an id the registry does not know is ``unknown_schema_id``, an id of another type
   than VALUE_FORMAT ``format_mismatch``.
2. JSON Schema records are decoded and validated by the JSONDeserializer, and their JSON text
   goes down the JSON path (:class:`wal_bridge.conversion.Converter`), as if it had come as
   JSON; the dead-letter table keeps the bytes as they came.
3. Avro and Protobuf records are decoded to plain values (``not_decodable`` when they do not
   decode), and fill typed columns from their writer's schema (:mod:`wal_bridge.conversion.typed`):
   the table's schema is pinned from the first writer's schema, later writers fill it where
   their fields match (schema evolution), and a field whose type changed raises
   :class:`wal_bridge.errors.SchemaEvolutionError`: the segment waits, nothing is dropped.

A registry that does not answer raises :class:`wal_bridge.errors.RegistryError` out of
:meth:`Decoding.convert` for the whole segment: the sealer tries again later, and never makes a
dead letter of a record because the registry was away.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from wal_bridge.conversion import typed
from wal_bridge.conversion.protobuf import to_raw
from wal_bridge.conversion.registry import (
    AVRO,
    FORMAT_TYPES,
    JSON_SCHEMA,
    PROTOBUF,
    READERS,
    AvroReader,
    NotDecodable,
    ProtobufReader,
    Reader,
    Registry,
    UnknownSchema,
    Writer,
    json_text,
    schema_id,
)
from wal_bridge.conversion.screen import Reason, Rejects
from wal_bridge.errors import SchemaEvolutionError
from wal_bridge.logs import get_logger
from wal_bridge.schema import KEY, KEY_DECODED, PayloadSchema

if TYPE_CHECKING:
    from wal_bridge.config import Settings
    from wal_bridge.conversion import Converted, Converter
    from wal_bridge.wal.segment import SealInfo

log = get_logger("wal_bridge.conversion.decode")


@dataclass(frozen=True)
class _Segment:
    """One segment being converted: its WAL table, values, each row's writer, the rows
    rejected so far and its seal."""

    table: pa.Table
    values: Sequence[bytes | None]
    writers: dict[int, Writer]
    rejects: Rejects
    seal: SealInfo


@dataclass
class _Taken(Rejects):
    """Rejects that ignore rows already rejected here (the JSON path sees them as null)."""

    taken: set[int] = field(default_factory=set)

    def add(self, row: int, reason: Reason, detail: str) -> None:
        if row not in self.taken:
            super().add(row, reason, detail)


class Decoding:
    """The registry formats' conversion, shared by the conversion threads (it holds the
    registry client and the readers, each with its own cache and lock)."""

    def __init__(self, registry: Registry, value_format: str, *, key_format: str = "raw",
                 incompatible: str = "wait") -> None:
        self.registry = registry
        self.value_format = value_format
        self.key_format = key_format
        self.incompatible = incompatible  # INCOMPATIBLE_SCHEMA: wait, or extra
        self._readers: dict[str, Reader] = {}

    @classmethod
    def open(cls, settings: Settings) -> Decoding | None:
        """The service's decoding when VALUE_FORMAT or KEY_FORMAT is a registry format, else
        None (and nothing of the registry's libraries is imported)."""
        if not settings.uses_registry:
            return None
        return cls(Registry(settings.registry_config()), settings.value_format,
                   key_format=settings.key_format, incompatible=settings.incompatible_schema)

    # ------------------------------------------------------------------------- keys

    def with_keys(self, data: pa.Table) -> pa.Table:
        """``data`` with ``_kafka_key_decoded`` after ``_kafka_key``: each key decoded by its
        writer's schema, as JSON text; NULL for no key, and for a key that is not the wire
        format, has an id the registry does not know or of another type than KEY_FORMAT, or
        does not decode (``_kafka_key`` keeps its bytes either way). Raises RegistryError."""
        keys = data.column(KEY).to_pylist()
        seen: dict[bytes, str | None] = {}
        decoded: list[str | None] = []
        for key in keys:
            if key is None:
                decoded.append(None)
                continue
            if key not in seen:
                seen[key] = self._key(key)
            decoded.append(seen[key])
        return data.add_column(data.schema.get_field_index(KEY) + 1,
                               pa.field(KEY_DECODED, pa.string()),
                               pa.array(decoded, pa.string()))

    def _key(self, key: bytes) -> str | None:
        sid = schema_id(key)
        if sid is None:
            return None
        found = self._writer(sid, FORMAT_TYPES.get(self.key_format))
        if not isinstance(found, Writer):
            return None
        reader = self.reader(found.type)
        try:
            value = reader.decode(found, key)
        except NotDecodable:
            return None
        if isinstance(reader, AvroReader) and not reader.is_record(found.id):
            value = value["value"]  # a plain Avro key (a string, a long) as itself
        try:
            return (json_text(value).decode() if found.type == JSON_SCHEMA
                    else typed.dumps(value))
        except ValueError:  # NaN or Infinity in a JSON Schema key: no JSON text holds them
            return typed.dumps(value)

    def reader(self, kind: str) -> Reader:
        reader = self._readers.get(kind)
        if reader is None:
            reader = self._readers.setdefault(kind, READERS[kind](self.registry))
        return reader

    # ------------------------------------------------------------------------- the segment

    def convert(self, converter: Converter, table: pa.Table, seal: SealInfo) -> Converted:
        """The two tables of one segment (``table`` in the WAL's BATCH_SCHEMA, one chunk),
        with decoded keys when KEY_FORMAT says so. Raises RegistryError (try again later),
        SchemaEvolutionError (an incompatible writer's schema: the operator decides), or what
        pinning the schema raises."""
        if self.value_format == "json":
            converted = converter.convert_json(table, table.column("_value"), Rejects(), seal)
        else:
            converted = self._values(converter, table, seal)
        if self.key_format == "raw":
            return converted
        return replace(converted, data=self.with_keys(converted.data))

    def _values(self, converter: Converter, table: pa.Table, seal: SealInfo) -> Converted:
        values: list[bytes | None] = table.column("_value").to_pylist()
        rejects = Rejects()
        writers = self._writers(values, converter.max_record_bytes, rejects)
        json_rows = [row for row, w in writers.items() if w.type == JSON_SCHEMA]
        typed_rows = [row for row, w in writers.items() if w.type != JSON_SCHEMA]
        if json_rows and typed_rows:
            # One table schema: the segment's first record decides which kind fills it.
            first = min(writers)
            losing = typed_rows if writers[first].type == JSON_SCHEMA else json_rows
            for row in losing:
                rejects.add(row, Reason.FORMAT_MISMATCH,
                            f"schema id {writers[row].id} is {writers[row].type}, but this "
                            f"segment's first record is {writers[first].type}: VALUE_FORMAT="
                            "auto converts JSON Schema and Avro/Protobuf records of one table "
                            "only apart (see docs/schema.md)")
                del writers[row]
            json_rows = [r for r in json_rows if r in writers]
            typed_rows = [r for r in typed_rows if r in writers]
        segment = _Segment(table, values, writers, rejects, seal)
        if json_rows:
            return self._as_json(converter, segment)
        return self._typed(converter, segment)

    def _writers(self, values: Sequence[bytes | None], max_bytes: int,
                 rejects: Rejects) -> dict[int, Writer]:
        """Each row's writer, for the rows that have one; the others rejected, with why."""
        expected = FORMAT_TYPES.get(self.value_format)
        by_id: dict[int, Writer | tuple[Reason, str]] = {}
        writers: dict[int, Writer] = {}
        for row, value in enumerate(values):
            if value is None:
                rejects.add(row, Reason.TOMBSTONE, "the record has no value (a tombstone)")
                continue
            if not value:
                rejects.add(row, Reason.EMPTY, "the value is empty")
                continue
            if len(value) > max_bytes:
                rejects.add(row, Reason.TOO_LARGE,
                            f"{len(value)} bytes exceed MAX_RECORD_BYTES={max_bytes}")
                continue
            sid = schema_id(value)
            if sid is None:
                rejects.add(row, Reason.NO_MAGIC_BYTE,
                            "not the schema registry wire format: no magic byte 0 followed by "
                            f"a 4-byte schema id (VALUE_FORMAT={self.value_format})")
                continue
            if sid not in by_id:
                by_id[sid] = self._writer(sid, expected)
            found = by_id[sid]
            if isinstance(found, Writer):
                writers[row] = found
            else:
                rejects.add(row, *found)
        return writers

    def _writer(self, sid: int, expected: str | None) -> Writer | tuple[Reason, str]:
        """The writer's schema of id ``sid``, or why its records are dead letters. Raises
        RegistryError."""
        try:
            kind = self.registry.type_of(sid)
            if expected is not None and kind != expected:
                return (Reason.FORMAT_MISMATCH,
                        f"schema id {sid} is a {kind} schema, but VALUE_FORMAT="
                        f"{self.value_format}")
            if kind not in READERS:
                return Reason.FORMAT_MISMATCH, f"schema id {sid} has unknown type {kind}"
            return self.reader(kind).writer(sid)
        except UnknownSchema:
            return (Reason.UNKNOWN_SCHEMA_ID,
                    f"the schema registry has no schema id {sid} ({self.registry.url})")
        except NotDecodable as exc:
            return Reason.NOT_DECODABLE, str(exc)

    # ------------------------------------------------------------------------- JSON Schema

    def _as_json(self, converter: Converter, segment: _Segment) -> Converted:
        """JSON Schema records, decoded and validated, down the JSON path as JSON text."""
        values, writers, rejects = segment.values, segment.writers, segment.rejects
        texts: list[bytes | None] = [None] * len(values)
        for row, writer in writers.items():
            try:
                decoded = self.reader(JSON_SCHEMA).decode(writer, values[row] or b"")
                texts[row] = json_text(decoded)
            except NotDecodable as exc:
                rejects.add(row, Reason.NOT_DECODABLE, str(exc))
            except ValueError as exc:  # NaN or Infinity: no JSON text holds them
                rejects.add(row, Reason.NOT_DECODABLE, f"no JSON text for it: {exc}")
        taken = _Taken(list(rejects.rows), list(rejects.reasons), list(rejects.details),
                       taken=set(rejects.rows))
        return converter.convert_json(segment.table,
                                      pa.chunked_array([pa.array(texts, pa.binary())]),
                                      taken, segment.seal)

    # ------------------------------------------------------------------------- Avro, Protobuf

    def _typed(self, converter: Converter, segment: _Segment) -> Converted:
        """Avro and Protobuf records as typed columns of the table's schema."""
        rejects, seal = segment.rejects, segment.seal
        decoded: dict[int, tuple[Writer, dict[str, Any]]] = {}
        for row, writer in segment.writers.items():
            reader = self.reader(writer.type)
            value = segment.values[row] or b""
            try:
                if isinstance(reader, ProtobufReader):
                    message = reader.message(value)
                    decoded[row] = reader.columns_of(writer, message), to_raw(message)
                else:
                    decoded[row] = writer, reader.decode(writer, value)
            except NotDecodable as exc:
                rejects.add(row, Reason.NOT_DECODABLE, str(exc))
        schema = converter.store.agreed()
        if schema is None and decoded:
            first = decoded[min(decoded)][0]
            schema = converter.pin_first(typed.first_schema(first.columns), seal)
        plans: dict[int, typed.Plan] = {}
        rows: list[int] = []
        cells: list[list[Any]] = []
        extras: list[str | None] = []
        for row, (writer, record) in decoded.items():
            plan = plans.get(writer.id)
            if plan is None:
                plan = plans[writer.id] = self._plan(writer, schema)
            values_row, extra = plan.row(record)
            rows.append(row)
            cells.append(values_row)
            extras.append(extra)
        payload = (typed.arrays(schema, cells, extras) if schema is not None
                   else {"_extra": pa.array(extras, pa.string())})
        return converter.assemble(segment.table, payload, pa.array(rows, pa.int64()), rejects,
                                  seal, schema=schema)

    def _plan(self, writer: Writer, schema: PayloadSchema | None) -> typed.Plan:
        assert schema is not None
        try:
            plan = typed.Plan.of(writer.columns, schema, incompatible=self.incompatible)
        except typed.Incompatible as exc:
            where = self.registry.versions(writer.id)
            raise SchemaEvolutionError(
                f"schema id {writer.id} ({where}) is incompatible with the table's schema: "
                f"{exc}. Its records wait in the WAL, unconverted; see docs/operations.md, "
                "\"Schema registry: an incompatible change\"", schema_id=writer.id) from None
        if plan.changed:  # INCOMPATIBLE_SCHEMA=extra: one line per segment and schema id
            log.warning("schema_incompatible_to_extra", schema_id=writer.id,
                        fields=plan.changed)
        return plan


__all__ = ["AVRO", "JSON_SCHEMA", "PROTOBUF", "Decoding"]
