"""The schema registry: the client, the writer schemas by id (fetched once, cached), and the
readers that decode one record's payload with its writer's schema.

Records come in the Confluent wire format::

    byte 0       magic byte, 0
    bytes 1-4    the schema id, big-endian (the registry's id of the writer's schema)
    bytes 5-     the payload (Protobuf: message indexes, then the message)

Decoding uses ``confluent_kafka.schema_registry``: its ``SchemaRegistryClient`` (schemas by
id, cached), its JSONDeserializer (decoded and validated against the writer's JSON Schema),
and the pieces its ProtobufDeserializer and AvroDeserializer are made of: for Protobuf the wire
header with its message indexes and the descriptor pool built from the registered schema (the
deserializer's own ``__call__`` parses into the one class it was built with); for Avro the
named-schema resolution and fastavro's schemaless reader, on the writer's schema with logical
types removed, so a value BigQuery cannot hold is still read and kept
(:mod:`wal_bridge.conversion.avro`).

Errors: the registry not answering (refused connection, timeout, 5xx, 401/403) is a
:class:`wal_bridge.errors.RegistryError` (the segment waits, nothing becomes a dead letter);
an id the registry does not know (404) is :class:`UnknownSchema`; a payload that does not
decode is :class:`NotDecodable`. Both of the last two are dead letters, with a reason code.

Nothing here is imported unless VALUE_FORMAT or KEY_FORMAT names a registry format: the
registry's libraries load only then.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wal_bridge.conversion import avro, protobuf
from wal_bridge.conversion.typed import Column
from wal_bridge.errors import RegistryError
from wal_bridge.logs import get_logger

log = get_logger("wal_bridge.conversion.registry")

MAGIC = 0
HEADER_BYTES = 5
# The registry's names of the three schema types (an Avro schema may come without one).
AVRO, PROTOBUF, JSON_SCHEMA = "AVRO", "PROTOBUF", "JSON"
FORMAT_TYPES = {"avro": AVRO, "protobuf": PROTOBUF, "json_schema": JSON_SCHEMA}
# Seconds one registry request may take; the client's own retries are off (conversion retries
# the whole segment with a capped doubling delay instead).
REQUEST_TIMEOUT = 10


class UnknownSchema(Exception):
    """The registry has no schema of this id (HTTP 404)."""


class NotDecodable(Exception):
    """The payload does not decode with its writer's schema (or, for JSON Schema, does not
    validate against it)."""


def schema_id(value: bytes) -> int | None:
    """The schema id of a wire-format value, or None when it has no magic byte 0 and id."""
    if len(value) < HEADER_BYTES or value[0] != MAGIC:
        return None
    return int.from_bytes(value[1:HEADER_BYTES], "big")


def _registry_error(exc: Exception, what: str) -> Exception:
    """A third-party exception met while talking to the registry, as one of ours:
    UnknownSchema for a 404, else RegistryError (transient unless refused credentials)."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if isinstance(exc, SchemaRegistryError):
        status = exc.http_status_code
        if status == 404:
            return UnknownSchema(f"{what}: {exc.error_message}")
        transient = status not in (401, 403)
        return RegistryError(f"schema registry: {what}: {exc.error_message} (HTTP {status})",
                             transient=transient)
    return RegistryError(f"schema registry: {what}: {type(exc).__name__}: {exc}",
                         transient=True)


def _talks_to_registry(exc: Exception) -> bool:
    """Whether ``exc`` came from the registry's client or its HTTP library (never a verdict
    on the payload)."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    if isinstance(exc, SchemaRegistryError):
        return True
    module = type(exc).__module__
    return module.startswith(("httpx", "httpcore", "h11", "anyio")) or isinstance(
        exc, ConnectionError | TimeoutError)


@dataclass(frozen=True)
class Writer:
    """One writer's schema: its id, type and the columns its records fill."""

    id: int
    type: str  # AVRO, PROTOBUF or JSON
    columns: tuple[Column, ...] = ()


class Registry:
    """The registry client and the schemas by id, shared by the conversion threads.

    ``conf`` is :meth:`wal_bridge.config.Settings.registry_config` (it holds secrets: never
    logged). Every lookup is cached for the life of the process (a schema id's schema never
    changes); a failed lookup is not, so the next attempt asks again.
    """

    def __init__(self, conf: Mapping[str, str]) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        settings = {**conf, "max.retries": 0, "timeout": REQUEST_TIMEOUT}
        # Two clients: the client caches a schema by id whatever format it was asked in, and
        # the Protobuf reader needs the "serialized" form, while the type lookup asks for the
        # default one.
        self.client = SchemaRegistryClient(dict(settings))
        self._probe = SchemaRegistryClient(dict(settings))
        self.url = conf["url"]
        self._types: dict[int, str] = {}
        self._lock = threading.Lock()

    def type_of(self, sid: int) -> str:
        """The schema type of id ``sid`` (AVRO, PROTOBUF or JSON). Raises UnknownSchema or
        RegistryError."""
        with self._lock:
            known = self._types.get(sid)
        if known is not None:
            return known
        try:
            schema = self._probe.get_schema(sid)
        except Exception as exc:
            raise _registry_error(exc, f"schema id {sid}") from exc
        kind = (schema.schema_type or AVRO).upper()
        with self._lock:
            self._types[sid] = kind
        return kind

    def schema(self, sid: int, fmt: str | None = None) -> Any:
        """The registered schema of id ``sid`` (the client's Schema object), fetched once."""
        try:
            return self.client.get_schema(sid, fmt=fmt)
        except Exception as exc:
            raise _registry_error(exc, f"schema id {sid}") from exc

    def versions(self, sid: int) -> str:
        """Where id ``sid`` is registered, for error messages: "subject s version 3[, ...]";
        what the registry does not say is left out."""
        try:
            pairs = self._probe.get_schema_versions(sid)
        except Exception:  # noqa: BLE001 - only for a message: it must never fail the message
            return "subject and version unknown (the registry did not say)"
        return ", ".join(f"subject {p.subject} version {p.version}" for p in pairs) or (
            "no subject")


class Reader:
    """Decodes one format's payloads; one per format, shared by the conversion threads."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._writers: dict[int, Writer] = {}
        self._lock = threading.Lock()

    def writer(self, sid: int) -> Writer:
        """The writer's schema of id ``sid`` with its columns. Raises UnknownSchema,
        RegistryError, or NotDecodable when the registered schema cannot be read."""
        with self._lock:
            known = self._writers.get(sid)
        if known is None:
            known = self._load(sid)
            with self._lock:
                self._writers[sid] = known
            # One line per schema id and process: the registry's schemas in use, for people.
            log.info("registry_schema_loaded", schema_id=sid, type=known.type,
                     columns=len(known.columns) or None)
        return known

    def _load(self, sid: int) -> Writer:
        raise NotImplementedError

    def decode(self, writer: Writer, value: bytes) -> Any:
        """One record's value (wire format) decoded: a dict of top-level field values for
        Avro and Protobuf, the JSON value for JSON Schema. Raises NotDecodable or
        RegistryError."""
        raise NotImplementedError


class AvroReader(Reader):
    def __init__(self, registry: Registry) -> None:
        super().__init__(registry)
        self._physical: dict[int, Any] = {}
        self._records: dict[int, bool] = {}

    def _load(self, sid: int) -> Writer:
        from confluent_kafka.schema_registry._sync.avro import _resolve_named_schema
        from confluent_kafka.schema_registry.common.avro import parse_schema_with_repo
        from fastavro import parse_schema

        schema = self.registry.schema(sid)
        try:
            named = _resolve_named_schema(schema, self.registry.client)
        except Exception as exc:
            if _talks_to_registry(exc):
                raise _registry_error(exc, f"references of schema id {sid}") from exc
            raise NotDecodable(f"schema id {sid}: its references do not resolve: {exc}") from exc
        try:
            parsed = parse_schema_with_repo(schema.schema_str, named_schemas=named)
            bare = avro.physical({k: v for k, v in parsed.items() if not k.startswith("__")}
                                 if isinstance(parsed, dict) else parsed)
            physical = parse_schema(bare, _force=True)
        except Exception as exc:
            raise NotDecodable(f"schema id {sid} is not an Avro schema fastavro reads: {exc}"
                               ) from exc
        with self._lock:
            self._physical[sid] = physical
            self._records[sid] = avro.is_record(parsed)
        return Writer(sid, AVRO, tuple(avro.columns(parsed)))

    def is_record(self, sid: int) -> bool:
        """Whether schema id ``sid`` (loaded) is a record: else :meth:`decode` gives its
        value as ``{"value": ...}``."""
        return self._records[sid]

    def decode(self, writer: Writer, value: bytes) -> Any:
        from fastavro import schemaless_reader

        try:
            decoded = schemaless_reader(io.BytesIO(value[HEADER_BYTES:]),
                                        self._physical[writer.id], None)
        except Exception as exc:
            raise NotDecodable(f"{type(exc).__name__}: {exc}") from exc
        return decoded if self._records[writer.id] else {"value": decoded}


class ProtobufReader(Reader):
    """Protobuf through the ProtobufDeserializer's own pieces: the wire header with its
    message indexes, the descriptor pool built from the registered schema (references
    resolved), and the message type the indexes name. (Its ``__call__`` parses into the class
    it was built with; the writer's message class is built here, per schema id.)"""

    def __init__(self, registry: Registry) -> None:
        super().__init__(registry)
        from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
        from google.protobuf import empty_pb2

        # The message type is a placeholder: only the deserializer's schema pieces are used.
        self._deserializer = ProtobufDeserializer(
            empty_pb2.Empty, {"use.deprecated.format": False},
            schema_registry_client=registry.client)
        self._classes: dict[tuple[int, tuple[int, ...]], Any] = {}
        self._decode_lock = threading.Lock()

    def _load(self, sid: int) -> Writer:
        self.registry.schema(sid, fmt="serialized")  # cached in the client for the reader
        return Writer(sid, PROTOBUF)  # columns: from the first message's descriptor

    def _message_class(self, sid: int, indexes: tuple[int, ...]) -> Any:
        from google.protobuf.message_factory import GetMessageClass

        known = self._classes.get((sid, indexes))
        if known is not None:
            return known
        schema = self.registry.schema(sid, fmt="serialized")
        try:  # the deserializer's own (private) pieces: pinned by confluent-kafka's version
            fd_proto, pool = self._deserializer._get_parsed_schema(schema)
            file_descriptor = pool.FindFileByName(fd_proto.name)
            descriptor = self._deserializer._get_message_desc(
                pool, file_descriptor, list(indexes) or [0])
        except Exception as exc:
            if _talks_to_registry(exc):
                raise _registry_error(exc, f"references of schema id {sid}") from exc
            raise NotDecodable(f"schema id {sid}, message {list(indexes)}: {exc}") from exc
        made = self._classes[(sid, indexes)] = GetMessageClass(descriptor)
        return made

    def message(self, value: bytes) -> Any:
        """The message of one wire-format value, of its writer's message type."""
        from confluent_kafka.schema_registry.common.protobuf import PROTOBUF_TYPE
        from confluent_kafka.schema_registry.serde import SchemaId

        header = SchemaId(PROTOBUF_TYPE)
        with self._decode_lock:
            try:
                payload = self._deserializer._schema_id_deserializer(
                    value, None, header)
            except Exception as exc:
                raise NotDecodable(f"bad wire header: {exc}") from exc
            assert header.id is not None
            cls = self._message_class(header.id, tuple(header.message_indexes or ()))
        message = cls()
        try:
            message.ParseFromString(payload.read())
        except Exception as exc:
            raise NotDecodable(f"{type(exc).__name__}: {exc}") from exc
        return message

    def columns_of(self, writer: Writer, message: Any) -> Writer:
        """``writer`` with the columns of the message descriptor its records decode to."""
        if writer.columns:
            return writer
        described = Writer(writer.id, PROTOBUF, tuple(protobuf.columns(message.DESCRIPTOR)))
        with self._lock:
            self._writers[writer.id] = described
        return described

    def decode(self, writer: Writer, value: bytes) -> Any:
        return protobuf.to_raw(self.message(value))


def _no_subject(_ctx: Any, _record_name: Any) -> None:
    """The deserializers' subject name strategy: none (read by the writer's schema id)."""


class JsonSchemaReader(Reader):
    def __init__(self, registry: Registry) -> None:
        super().__init__(registry)
        from confluent_kafka.schema_registry.json_schema import JSONDeserializer

        # No schema of ours, and no subject: each record is validated against its writer's
        # registered schema, found by the record's id (never a subject's latest version).
        self._deserializer = JSONDeserializer(
            None, schema_registry_client=registry.client,
            conf={"subject.name.strategy": _no_subject})
        self._decode_lock = threading.Lock()

    def _load(self, sid: int) -> Writer:
        self.registry.schema(sid)
        return Writer(sid, JSON_SCHEMA)

    def decode(self, writer: Writer, value: bytes) -> Any:
        try:
            with self._decode_lock:
                return self._deserializer(value, None)
        except Exception as exc:
            if _talks_to_registry(exc):
                raise _registry_error(exc, "schema of a JSON Schema record") from exc
            raise NotDecodable(f"{type(exc).__name__}: {exc}") from exc


READERS: dict[str, type[Reader]] = {AVRO: AvroReader, PROTOBUF: ProtobufReader,
                                    JSON_SCHEMA: JsonSchemaReader}


def json_text(value: Any) -> bytes:
    """A decoded JSON Schema value as the JSON text the JSON conversion path reads."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()
