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
