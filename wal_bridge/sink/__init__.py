"""Destinations behind one small interface: create-only puts of whole files, listing, reads.

A sink is a flat namespace of objects under a destination (a GCS bucket, or a local directory
laid out the same way), addressed by keys like ``raw/2026-01-01/....parquet``. Its users:

- the uploader ships Parquet files with :meth:`Sink.put`;
- the schema store publishes and reads ``_wal_bridge/{prefix}/schema.json`` (``put``, ``read``);
- ``audit`` reads each file's footer with :meth:`Sink.read_range` after :meth:`Sink.list`;
- ``query`` and ``schema`` download with :meth:`Sink.read`; ``run`` and ``replay`` start with
  :meth:`Sink.check`.

A sink never overwrites: ``put`` creates the object or finds it already there. Same content (by
CRC32C) counts as shipped, which makes every upload idempotent; other content is an anomaly
(:class:`~wal_bridge.errors.ObjectConflictError`). Every failure is a
:class:`~wal_bridge.errors.SinkError` whose ``transient`` says whether trying again can help;
the two kinds of "not found" are told apart: :class:`~wal_bridge.errors.ObjectNotFoundError`
(no such key) and :class:`~wal_bridge.errors.DestinationNotFoundError` (no such bucket). The
same contract suite (``tests/contract/test_sink.py``) runs against every sink.
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
    """What :meth:`Sink.put` found: the object was made, or the same content was there."""

    CREATED = "created"
    ALREADY_PRESENT = "already_present"  # same content was there: an earlier attempt landed


@dataclass(frozen=True)
class ObjectInfo:
    """One object as :meth:`Sink.list` sees it: its full key and its size in bytes."""

    key: str
    size: int


class Sink(Protocol):
    """The operations wal-bridge needs of a destination; keys are ``/``-separated, relative to
    the bucket (or the local root), never starting with ``/``.

    Errors, for every method: :class:`~wal_bridge.errors.SinkError` with ``transient`` True when
    a later attempt can succeed (timeouts, 5xx, a dropped connection) and False when it needs an
    operator (credentials, permissions); its subclass
    :class:`~wal_bridge.errors.DestinationNotFoundError` when the bucket does not exist (the
    local sink makes its root when needed; it raises this when a file stands in the way).
    """

    destination: Destination

    def check(self) -> None:
        """Fail fast when the destination cannot be used: a permanent SinkError for what needs
        an operator, a transient one for what may pass. The local sink creates its root here."""

    def put(self, key: str, path: Path) -> PutResult:
        """Create ``key`` from the file at ``path`` unless the key exists; never overwrite.

        Returns CREATED, or ALREADY_PRESENT when an object with the same CRC32C is there.
        Raises :class:`~wal_bridge.errors.ObjectConflictError` (permanent) when the object there
        has other content, which is left untouched.
        """

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a plain string prefix, not a folder:
        ``raw/2026`` matches ``raw/2026-01-01/a``), in key order."""

    def read(self, key: str) -> bytes:
        """The whole content of ``key``. Raises ObjectNotFoundError when there is no such key."""

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes of ``key`` from byte ``start`` (0-based): fewer when the object
        ends first, ``b""`` when ``start`` is at or past its end or ``length`` is 0. A tail is
        ``read_range(key, size - n, n)`` with ``size`` from :meth:`list`.

        Raises ValueError for a negative ``start`` or ``length``, ObjectNotFoundError when
        there is no such key.
        """


def check_range(start: int, length: int) -> None:
    """The argument rule of :meth:`Sink.read_range`, shared by the sinks: raise ValueError for a
    negative ``start`` or ``length``."""
    if start < 0 or length < 0:
        raise ValueError(f"read_range needs start >= 0 and length >= 0, got {start}, {length}")


def file_crc32c(path: Path) -> str:
    """Base64 of the big-endian CRC32C of the file at ``path``, the form GCS reports in
    ``Blob.crc32c``; read in 1 MiB chunks."""
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode()


def open_sink(settings: Settings) -> Sink:
    """The sink for ``settings.destination``: :class:`~wal_bridge.sink.local.LocalSink` for
    ``file://``, :class:`~wal_bridge.sink.gcs.GcsSink` for ``gs://`` (client built on first
    use). Raises ConfigError when no destination is set."""
    destination = settings.require_destination()
    if destination.scheme == "file":
        from wal_bridge.sink.local import LocalSink

        return LocalSink(destination)
    from wal_bridge.sink.gcs import GcsSink

    return GcsSink(destination, settings.google_credentials, settings.storage_emulator_host)
