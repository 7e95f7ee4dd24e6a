"""The sealer stage: seals the active segment on time and converts sealed segments to Parquet.

Size-based sealing happens in :meth:`Wal.append` (the consumer thread), so a segment holds
exactly BATCH_SIZE records; this stage adds the time trigger, which must fire even when no
record arrives, and the conversion, which must stay off the consumer thread.

Several threads may call :meth:`Sealer.step` at once: each claims a different segment, so a
backlog converts in parallel (JSON parsing and Parquet encoding run in Arrow without the GIL).
"""

from __future__ import annotations

import contextlib
import errno
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from wal_bridge import durable
from wal_bridge.conversion import Converted, Converter, SchemaUndecided
from wal_bridge.errors import (
    CorruptionError,
    DiskFullError,
    RegistryError,
    SchemaEvolutionError,
    SinkError,
)
from wal_bridge.logs import RateLimited, get_logger
from wal_bridge.metrics import Metrics
from wal_bridge.parquet import footer_metadata, write_parquet
from wal_bridge.wal.log import Wal
from wal_bridge.wal.segment import Segment, read_sealed

if TYPE_CHECKING:
    import pyarrow as pa

log = get_logger("wal_bridge.sealer")

SCHEMA_RETRY_MAX = 30.0  # seconds between attempts to store the schema, at most


class Sealer:
    def __init__(self, wal: Wal, converter: Converter, metrics: Metrics | None = None) -> None:
        self.wal = wal
        self.converter = converter
        self.metrics = metrics or Metrics()
        self._limited = RateLimited()
        self.disk_full = False
        self._claims = threading.Lock()
        self._claimed: set[int] = set()  # segments being converted by some thread
        # The destination could not store the table's schema (it must before the first file
        # is written): conversion waits, with a capped doubling delay, while records keep
        # going into the WAL. ``schema_blocked`` holds a permanent error for readiness.
        self.schema_blocked: str | None = None
        # Conversion waits for a schema registry that does not answer: why, for the consumer,
        # which pauses while this is set (registry_hold); cleared once the registry answers.
        self.registry_down: str | None = None
        self._schema_wait = 0.0
        self._schema_retry_at = 0.0
        # Segments whose records gave no column while no schema was in force: converted once
        # one is (SchemaUndecided), while later segments go ahead.
        self._undecided: set[int] = set()

    def step(self) -> bool:
        """Seal if due, then convert the oldest sealed segment that no other thread is
        converting. Return whether work was done."""
        try:
            sealed = self.wal.seal_if_due()
        except DiskFullError as exc:
            self.disk_full = True
            if (suppressed := self._limited.allow("seal_failed")) is not None:
                log.error("segment_seal_failed", error=str(exc), suppressed=suppressed)
            sealed = False
        if time.monotonic() < self._schema_retry_at:
            return sealed
        segment = self._claim()
        if segment is None:
            return sealed
        try:
            self.convert(segment)
        finally:
            with self._claims:
                self._claimed.discard(segment.seq)
        return True

    def _claim(self) -> Segment | None:
        with self._claims:
            decided = self.converter.store.schema is not None
            for segment in self.wal.to_convert():
                if segment.seq not in self._claimed and (decided
                                                         or segment.seq not in self._undecided):
                    self._claimed.add(segment.seq)
                    return segment
        return None

    def convert(self, segment: Segment) -> bool:
        """Convert one sealed segment into Parquet in the outbox; False if it must wait."""
        assert segment.seal is not None
        started = time.monotonic()
        try:
            batches = read_sealed(segment.path)
        except CorruptionError as exc:
            self.metrics.count_salvage(self.wal.salvage_sealed(exc))
            return False
        converted = self._convert_or_wait(segment, batches)
        if converted is None:
            return False
        self._undecided.discard(segment.seq)
        self.schema_blocked, self._schema_wait = None, 0.0
        final = self.wal.parquet_path(segment.seq)
        tmp = durable.temp_path(final)
        dead_tmp = durable.temp_path(self.wal.dead_letter_path(segment.seq))
        try:
            write_parquet(converted.data, tmp, footer_metadata(segment.seal, converted.data))
            has_dead = converted.dead_letters.num_rows > 0
            if has_dead:
                write_parquet(converted.dead_letters, dead_tmp,
                              footer_metadata(segment.seal, converted.dead_letters))
            self.wal.mark_converted(segment.seq, tmp, dead_tmp if has_dead else None)
        except OSError as exc:
            for path in (tmp, dead_tmp):
                with contextlib.suppress(FileNotFoundError):
                    Path(path).unlink()
            self.disk_full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            if (suppressed := self._limited.allow("convert_failed")) is not None:
                log.error("segment_convert_failed", segment=segment.seq, error=str(exc),
                          suppressed=suppressed)
            return False
        self.disk_full = False
        self.metrics.dead_letters.inc(converted.dead_letters.num_rows)
        log.info(
            "segment_converted", segment=segment.seq, records=segment.records,
            rows=converted.data.num_rows, dead_letters=converted.dead_letters.num_rows,
            cast_failures=converted.cast_failures,
            bytes=final.stat().st_size, duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return True

    def _convert_or_wait(self, segment: Segment, batches: list[pa.RecordBatch],
                         ) -> Converted | None:
        """The segment's rows and dead letters, or None when it must wait: for the schema
        registry (which also holds consuming back: registry_hold), the destination storing
        the table's schema, a schema to decide its columns, or the operator (an incompatible
        writer's schema)."""
        assert segment.seal is not None
        try:
            converted = self.converter.convert(batches, segment.seal)
        except RegistryError as exc:
            # The schema registry did not answer (nothing is lost): the segment waits, and
            # consuming pauses until it answers.
            self.registry_down = registry_pause_reason(exc)
            self._wait(segment, str(exc), transient=exc.transient, event="registry_retrying")
            return None
        except SinkError as exc:  # only the schema store reaches the destination here
            self.registry_down = None
            self._wait_for_destination(segment, exc)
            return None
        except SchemaUndecided:  # logged there; converted once a schema is in force
            self.registry_down = None
            self._undecided.add(segment.seq)
            return None
        except SchemaEvolutionError as exc:
            # A writer's schema is incompatible with the table's (the operator decides): the
            # segment waits; the registry answered, so consuming goes on (to WAL_MAX_BYTES).
            self.registry_down = None
            self._wait(segment, str(exc), transient=False, event="schema_incompatible")
            return None
        self.registry_down = None
        return converted

    def registry_hold(self) -> str | None:
        """Why consuming should pause for conversion (the consumer's ``hold``): the schema
        registry did not answer at the last conversion; None once it answers again, or once
        no sealed segment waits for conversion (one set aside as damaged, say), so that a
        pause never outlives the work it waits for."""
        reason = self.registry_down
        if reason is not None and not self.wal.to_convert():
            return None
        return reason

    def _wait_for_destination(self, segment: Segment, exc: SinkError) -> None:
        """The table's schema could not be stored: try again after a capped doubling delay
        (1 s to SCHEMA_RETRY_MAX s); a permanent error also makes the bridge unready."""
        self._wait(segment, str(exc), transient=exc.transient, event="schema_store_retrying")

    def _wait(self, segment: Segment, error: str, *, transient: bool, event: str) -> None:
        """Conversion waits (its segments stay in the WAL; consuming goes on until
        WAL_MAX_BYTES pauses it, or pauses at once for the registry: registry_hold) and tries
        again after a capped doubling delay (1 s to SCHEMA_RETRY_MAX s): the destination
        could not store the table's schema, the schema registry did not answer, or a writer's
        schema is incompatible with the table's. What needs an operator also makes the bridge
        unready."""
        self._schema_wait = min(max(self._schema_wait * 2, 1.0), SCHEMA_RETRY_MAX)
        self._schema_retry_at = time.monotonic() + self._schema_wait
        self.schema_blocked = None if transient else error
        # One line per attempt: the doubling delay already bounds them (one per 30 s at most).
        log.warning(event, segment=segment.seq, error=error, transient=transient,
                    retry_in_s=self._schema_wait)


def registry_pause_reason(exc: RegistryError) -> str:
    """The consumer's pause reason for a registry that did not answer: ``schema registry
    unreachable: <what failed>`` (a timeout, a refused connection, a 5xx), or ``schema
    registry refused the bridge: <what failed>`` (HTTP 401 or 403: the credentials)."""
    detail = str(exc).removeprefix("schema registry: ")
    if exc.transient:
        return f"schema registry unreachable: {detail}"
    return f"schema registry refused the bridge: {detail}"
