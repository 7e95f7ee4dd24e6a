"""The uploader stage: ships converted segments to the sink, then truncates the WAL.

Transient failures (connection errors, timeouts, 408, 429, 5xx) are retried without limit with
capped exponential backoff and jitter: a record is never dropped because storage was away.
Permanent failures (403, a missing bucket, a conflicting object) keep the segment, mark it stuck
and try it again every ``stuck_retry`` seconds, while the other segments go on.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_when_event_set,
    wait_exponential_jitter,
)

from wal_bridge.errors import ObjectConflictError, SinkError
from wal_bridge.logs import get_logger
from wal_bridge.metrics import Metrics
from wal_bridge.parquet import row_count
from wal_bridge.sink import PutResult, Sink
from wal_bridge.wal.log import Wal
from wal_bridge.wal.segment import Segment

log = get_logger("wal_bridge.uploader")


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, SinkError) and exc.transient


class Uploader:
    def __init__(
        self,
        wal: Wal,
        sink: Sink,
        halt: threading.Event,
        *,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        stuck_retry: float = 60.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.wal = wal
        self.sink = sink
        self.halt = halt
        self.stuck_retry = stuck_retry
        self.metrics = metrics or Metrics()
        self._not_before: dict[int, float] = {}
        self.retries = 0
        self.stuck: set[int] = set()
        self._retrying = Retrying(
            retry=retry_if_exception(_is_transient),
            wait=wait_exponential_jitter(multiplier=initial_backoff, max=max_backoff, jitter=1.0),
            stop=stop_when_event_set(halt),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        self._current: Segment | None = None

    def _sleep(self, seconds: float) -> None:
        self.halt.wait(seconds)

    def _before_sleep(self, state: RetryCallState) -> None:
        self.retries += 1
        self.metrics.upload_retries.inc()
        exc = state.outcome.exception() if state.outcome else None
        segment = self._current
        attempts = 0
        if segment is not None:
            attempts = self.wal.record_upload_failure(segment.seq, str(exc), permanent=False)
        log.warning(
            "segment_upload_retrying", segment=segment.seq if segment else None,
            attempt=attempts, error=str(exc),
            sleep_s=round(state.upcoming_sleep, 2) if state.upcoming_sleep else None,
        )

    def step(self) -> bool:
        """Ship the oldest converted segment that is due. Return whether one was shipped."""
        now = time.monotonic()
        for segment in self.wal.to_ship():
            if self._not_before.get(segment.seq, 0.0) > now:
                continue
            return self.ship(segment)
        return False

    def ship(self, segment: Segment) -> bool:
        seal = segment.seal
        assert seal is not None
        self._current = segment
        started = time.monotonic()
        try:
            dead = self.wal.dead_letter_path(segment.seq)
            if dead.exists():
                self._put(seal.dead_letter_key, dead)
            data = self.wal.parquet_path(segment.seq)
            # A segment of dead letters only has no data rows: an empty file would only give
            # schema detection (BigQuery's, DuckDB's) a table without the payload's columns.
            result = self._put(seal.key, data) if row_count(data) else None
        except SinkError as exc:
            if exc.transient:  # only when halted mid-retry: leave it for later
                return False
            self._mark_stuck(segment, exc)
            return False
        finally:
            self._current = None
        self.wal.failpoints.hit("after_upload")
        self.wal.mark_shipped(segment.seq)
        self._not_before.pop(segment.seq, None)
        self.stuck.discard(segment.seq)
        self.metrics.records_shipped.inc(segment.records)
        self.metrics.segments_shipped.inc()
        log.info(
            "segment_shipped", segment=segment.seq, records=segment.records,
            key=seal.key, bytes=segment.parquet_bytes,
            result=result.value if result else "no_data_rows",
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            **_range_fields(segment),
        )
        return True

    def _put(self, key: str, path: Any) -> PutResult:
        result: PutResult = self._retrying(self.sink.put, key, path)
        return result

    def _mark_stuck(self, segment: Segment, exc: SinkError) -> None:
        attempts = self.wal.record_upload_failure(segment.seq, str(exc), permanent=True)
        self._not_before[segment.seq] = time.monotonic() + self.stuck_retry
        self.stuck.add(segment.seq)
        self.metrics.upload_errors.inc()
        event = "segment_conflict" if isinstance(exc, ObjectConflictError) else "segment_stuck"
        log.error(event, segment=segment.seq, attempt=attempts, error=str(exc),
                  retry_in_s=self.stuck_retry)


def _range_fields(segment: Segment) -> dict[str, Any]:
    """first/last offset keys for a one-partition segment; a count of partitions otherwise."""
    if len(segment.ranges) == 1:
        ((_, partition), rng), = segment.ranges.items()
        return {"partition": partition, "first_offset": rng.first, "last_offset": rng.last}
    return {"partitions": len(segment.ranges)}
