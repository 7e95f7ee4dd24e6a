"""Destinations behind one small interface: create-only puts of whole files, and listing.

A sink never overwrites: :meth:`Sink.put` creates the object or finds it already there. Same
content (by CRC32C) counts as shipped, which makes every upload idempotent; other content is an
anomaly (:class:`~wal_bridge.errors.ObjectConflictError`).
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import google_crc32c

from wal_bridge.config import Destination, Settings


class PutResult(enum.Enum):
    CREATED = "created"
    ALREADY_PRESENT = "already_present"  # same content was there: an earlier attempt landed


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class Sink(Protocol):
    destination: Destination

    def check(self) -> None:
        """Fail fast with a clear SinkError when the destination cannot be written."""

    def put(self, key: str, path: Path) -> PutResult:
        """Create ``key`` from the file at ``path`` unless it exists; never overwrite."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``."""

    def read(self, key: str) -> bytes:
        """The whole content of ``key``."""


def file_crc32c(path: Path) -> str:
    """Base64 of the big-endian CRC32C, the form GCS reports in ``Blob.crc32c``."""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode()


def open_sink(settings: Settings) -> Sink:
    destination = settings.require_destination()
    if destination.scheme == "file":
        from wal_bridge.sink.local import LocalSink

        return LocalSink(destination)
    from wal_bridge.sink.gcs import GcsSink

    return GcsSink(destination, settings.google_credentials, settings.storage_emulator_host)
