"""Fakes behind the project's own small interfaces (never a client library's), for unit tests."""

from __future__ import annotations

from pathlib import Path

from wal_bridge.config import Destination
from wal_bridge.errors import SinkError
from wal_bridge.sink import PutResult
from wal_bridge.sink.local import LocalSink


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
