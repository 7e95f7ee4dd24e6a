"""Re-reading exact offset ranges from Kafka: the re-fetch stage, and the reader it shares with
``wal_bridge replay``.

The offsets that damaged WAL frames held (recovery's re-fetch jobs, see
:mod:`wal_bridge.wal.salvage`) were consumed, and under COMMIT_POLICY=wal committed: the
group's consumer will not give them again. :func:`fetch_runs` reads them with a consumer of
its own: assigned (no group membership, nothing committed) and sought to each range's first
offset, ``read_committed``, stopping at each range's last offset. Offsets inside a range that
Kafka has no record for (compaction, transaction markers, aborted records) are not missing;
offsets below the partition's earliest one (:func:`split_need`) are gone: data loss, reported
exactly.

:class:`Refetcher` is the running bridge's stage: for each job, oldest first, it asks Kafka's
watermarks, reads what Kafka still holds, and hands the records and the lost ranges to
:meth:`Wal.complete_refetch <wal_bridge.wal.log.Wal.complete_refetch>`: the records become a
new sealed segment that ships like any other, the lost ranges a quarantine entry, and an
error-level ``refetch_data_lost`` line and the ``wal_bridge_refetch_lost_records`` counter say
which. A Kafka that does not answer is tried again later (capped doubling delay); nothing
else waits for it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from wal_bridge.config import Settings
from wal_bridge.errors import BrokerError
from wal_bridge.logs import RateLimited, get_logger
from wal_bridge.metrics import Metrics
from wal_bridge.wal.log import Wal
from wal_bridge.wal.salvage import RefetchJob, Run, Runs, missing_runs, run_count
from wal_bridge.wal.segment import Range, TopicPartition

log = get_logger("wal_bridge.refetch")

FETCH_IDLE_TIMEOUT = 30.0  # give up on a read after this long without a record
RETRY_MAX = 60.0  # seconds between attempts when Kafka does not answer, at most


@dataclass(frozen=True)
class Watermarks:
    """What a partition still holds: ``earliest`` (low watermark, the oldest offset held) and
    ``latest`` (high watermark, the offset the next record will get)."""

    earliest: int
    latest: int


def lost_run(tp: TopicPartition, first: int, last: int, why: str) -> dict[str, Any]:
    """One range of offsets that cannot be read again, as reports and the quarantine keep it."""
    return {"topic": tp[0], "partition": tp[1], "first_offset": first, "last_offset": last,
            "count": last - first + 1, "why": why}


def split_need(need: Runs, offsets: dict[TopicPartition, Any]) -> tuple[Runs, list[dict[str, Any]]]:
    """What Kafka can still supply of ``need``, and what it cannot (with the reason).

    ``offsets`` maps each partition to an object with ``earliest`` and ``latest`` (the
    watermarks, e.g. :class:`Watermarks`); a partition missing from it does not exist.
    """
    fetch: Runs = {}
    lost: list[dict[str, Any]] = []
    for tp, runs in need.items():
        off = offsets.get(tp)
        for a, b in runs:
            if off is None:
                lost.append(lost_run(tp, a, b, "the partition does not exist in Kafka"))
                continue
            if a < off.earliest:
                top = min(b, off.earliest - 1)
                lost.append(lost_run(tp, a, top, f"deleted from Kafka (earliest offset is now "
                                                 f"{off.earliest}) and unreadable in the file"))
            if b >= off.latest:
                low = max(a, off.latest)
                lost.append(lost_run(tp, low, b, f"past the partition's end ({off.latest}): "
                                                 "the topic was truncated or recreated"))
            lo, hi = max(a, off.earliest), min(b, off.latest - 1)
            if lo <= hi:
                fetch.setdefault(tp, []).append((lo, hi))
    return fetch, lost


@dataclass
class Fetched:
    """What :func:`fetch_runs` read: the records, the offsets of the runs Kafka had no record
    for (``absent``), and whether every partition reached its last offset or its end
    (``complete``; False when the broker stopped answering first)."""

    batches: list[pa.RecordBatch] = field(default_factory=list)
    absent: Runs = field(default_factory=dict)
    complete: bool = True


class _Fetch:
    """The state of one exact-offset read: which offsets came back, which partitions are done."""

    def __init__(self, fetch: Runs) -> None:
        self.fetch = fetch
        self.got: dict[TopicPartition, set[int]] = {tp: set() for tp in fetch}
        self.ends = {tp: max(b for _, b in runs) for tp, runs in fetch.items()}
        self.open = set(fetch)
        self.total = run_count(fetch)

    def take(self, messages: list[Any]) -> list[Any]:
        """The messages to keep; marks partitions done at their end (or at end of log)."""
        from confluent_kafka import KafkaError

        keep = []
        for m in messages:
            tp = (m.topic(), m.partition())
            err, offset = m.error(), m.offset()
            if err is not None or offset is None:
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    self.open.discard(tp)
                continue
            runs = self.fetch.get(tp, [])
            if any(a <= offset <= b for a, b in runs) and offset not in self.got[tp]:
                self.got[tp].add(offset)
                keep.append(m)
            if tp in self.ends and offset >= self.ends[tp]:
                self.open.discard(tp)
        return keep

    def absent(self) -> Runs:
        result = {}
        for tp, runs in self.fetch.items():
            missing = [r for a, b in runs for r in missing_runs(Range(a, b, 0), self.got[tp])]
            if missing:
                result[tp] = missing
        return result


def fetch_runs(settings: Settings, fetch: Runs,
               progress: Callable[[int, int], None] | None = None) -> Fetched:
    """Read exactly the offsets of ``fetch`` from Kafka (read_committed, assigned, no group
    membership, nothing committed). ``progress(got, total)`` is called after each poll."""
    from confluent_kafka import Consumer, TopicPartition

    from wal_bridge.consumer import columns_of

    if not fetch:
        return Fetched()
    state = _Fetch(fetch)
    consumer = Consumer({
        **settings.kafka_config(), "group.id": f"wal-bridge-refetch-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    batches: list[pa.RecordBatch] = []
    try:
        consumer.assign([TopicPartition(t, p, min(a for a, _ in runs))
                         for (t, p), runs in fetch.items()])
        last_record = time.monotonic()
        while state.open and time.monotonic() - last_record < FETCH_IDLE_TIMEOUT:
            messages = consumer.consume(num_messages=5000, timeout=1.0)
            if any(m.error() is None for m in messages):
                last_record = time.monotonic()
            keep = state.take(messages)
            if keep:
                batches.append(columns_of(keep).to_arrow())
            if progress is not None:
                progress(sum(len(v) for v in state.got.values()), state.total)
    finally:
        consumer.close()
    return Fetched(batches, state.absent(), complete=not state.open)


def watermarks(settings: Settings, topics: Iterable[str]) -> dict[TopicPartition, Watermarks]:
    """The watermarks of every partition of ``topics`` (topics Kafka does not know are left
    out). Raises KafkaUnavailable when the broker does not answer."""
    from wal_bridge.commands.common import kafka_offsets

    return {tp: Watermarks(o.earliest, o.latest)
            for tp, o in kafka_offsets(settings, sorted(set(topics)), None).items()}


def _runs_text(runs: list[Run]) -> str:
    return ", ".join(f"{a}-{b}" for a, b in runs)


class Refetcher:
    """The stage that heals damaged WAL frames from Kafka (see the module docstring).

    ``fetch`` and ``offsets`` default to :func:`fetch_runs` and :func:`watermarks`; they are
    parameters so that a unit test can stand in for Kafka behind these two calls.
    """

    def __init__(self, settings: Settings, wal: Wal, metrics: Metrics | None = None, *,
                 fetch: Callable[[Settings, Runs], Fetched] | None = None,
                 offsets: Callable[[Settings, Iterable[str]], dict[TopicPartition, Any]]
                 | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.wal = wal
        self.metrics = metrics or Metrics()
        self._fetch = fetch or fetch_runs
        self._offsets = offsets or watermarks
        self._monotonic = monotonic
        self._wait = 0.0
        self._retry_at = 0.0
        self._limited = RateLimited()

    def step(self) -> bool:
        """Heal the oldest pending re-fetch job; return whether one was done."""
        jobs = self.wal.refetch_jobs()
        if not jobs or self._monotonic() < self._retry_at:
            return False
        job = jobs[0]
        try:
            self.heal(job)
        except (BrokerError, OSError) as exc:
            self._wait = min(max(self._wait * 2, 1.0), RETRY_MAX)
            self._retry_at = self._monotonic() + self._wait
            if (suppressed := self._limited.allow("refetch_failed")) is not None:
                log.warning("refetch_retrying", segment=job.seq, of_segment=job.of_segment,
                            error=str(exc), retry_in_s=self._wait, suppressed=suppressed)
            return False
        self._wait = 0.0
        return True

    def heal(self, job: RefetchJob) -> list[dict[str, Any]]:
        """Read ``job``'s ranges from Kafka and hand the outcome to the WAL; return the ranges
        Kafka no longer holds (topic, partition, first_offset, last_offset, count, why). Raises
        BrokerError when Kafka did not answer, or stopped answering before the ranges' ends
        (the job stays, for the next attempt)."""
        from wal_bridge.errors import KafkaUnavailable

        started = self._monotonic()
        offsets = self._offsets(self.settings, (t for t, _ in job.need))
        fetch, lost = split_need(job.need, offsets)
        fetched = self._fetch(self.settings, fetch)
        if not fetched.complete:
            raise KafkaUnavailable(f"re-fetch of segment {job.of_segment}'s damaged offsets "
                                   "stopped: Kafka stopped answering before the ranges' ends")
        segment = self.wal.complete_refetch(job, fetched.batches, lost)
        records = segment.records if segment is not None else 0
        m = self.metrics
        m.refetch_ranges.inc(sum(len(r) for r in fetch.values()))
        m.refetch_records.inc(records)
        for item in lost:
            m.refetch_lost_records.inc(item["count"])
            log.error("refetch_data_lost", of_segment=job.of_segment, topic=item["topic"],
                      partition=item["partition"], first_offset=item["first_offset"],
                      last_offset=item["last_offset"], records=item["count"], why=item["why"],
                      action="kept in quarantine/ for the operator (see `wal_bridge inspect`)")
        absent = run_count(fetched.absent)
        log.info(
            "refetch_done", segment=job.seq, of_segment=job.of_segment, records=records,
            ranges={f"{t}[{p}]": _runs_text(r) for (t, p), r in sorted(job.need.items())},
            absent_in_kafka=absent, lost=sum(i["count"] for i in lost),
            duration_ms=round((self._monotonic() - started) * 1000, 1),
        )
        return lost
