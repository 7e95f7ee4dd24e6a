"""Fakes behind the project's own small interfaces (never a client library's), and the record
batches unit tests feed them."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from wal_bridge.config import Destination
from wal_bridge.errors import SinkError
from wal_bridge.sink import PutResult
from wal_bridge.sink.local import LocalSink
from wal_bridge.wal.codec import RecordColumns


class FailingSink(LocalSink):
    """The local sink, failing its next ``failures`` puts with the given kind of error."""

    def __init__(self, root: Path, failures: int, *, transient: bool) -> None:
        super().__init__(Destination("file", str(root), "raw"))
        self.failures = failures
        self.transient = transient
        self.calls = 0

    def put(self, key: str, path: Path) -> PutResult:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise SinkError("HTTP 503 (injected)" if self.transient else "HTTP 403 (injected)",
                            transient=self.transient)
        return super().put(key, path)


def records_batch(first: int, count: int) -> pa.RecordBatch:
    """A polled batch of ``count`` records of topic ``events``, partition 0, offsets from
    ``first``, each value ``{"n": offset}``: what the consumer appends to the WAL."""
    offsets = list(range(first, first + count))
    return RecordColumns(
        ["events"] * count, [0] * count, offsets, [1_700_000_000_000] * count,
        [None] * count, [json.dumps({"n": o}).encode() for o in offsets], [None] * count,
    ).to_arrow()


class FakeRegistry:
    """The schema registry as :class:`wal_bridge.conversion.registry.Registry` offers it, from
    a dict of schema id -> ``confluent_kafka.schema_registry.Schema``; ``down`` makes every
    lookup fail as an unreachable registry does (a transient RegistryError)."""

    url = "http://registry.invalid"
    client = None  # no references are resolved through it

    def __init__(self, schemas: dict[int, object]) -> None:
        self.schemas = schemas
        self.down = False
        self.calls = 0

    def _get(self, sid: int) -> object:
        from wal_bridge.conversion.registry import UnknownSchema
        from wal_bridge.errors import RegistryError

        self.calls += 1
        if self.down:
            raise RegistryError("schema registry: ConnectError (injected)", transient=True)
        if sid not in self.schemas:
            raise UnknownSchema(f"schema id {sid}")
        return self.schemas[sid]

    def type_of(self, sid: int) -> str:
        return (getattr(self._get(sid), "schema_type", None) or "AVRO").upper()

    def schema(self, sid: int, fmt: str | None = None) -> object:
        return self._get(sid)

    def versions(self, sid: int) -> str:
        return f"subject events-value version {sid}"
