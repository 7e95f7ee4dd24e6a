"""The consumer stage: poll a batch, append it to the WAL (one fsync), then commit its offsets.

Auto-commit and the auto offset store are off; offsets are committed only for records that
are durable (COMMIT_POLICY=wal) or shipped (COMMIT_POLICY=upload). On assignment the consumer
seeks past what the WAL holds or has shipped, so a restart does not duplicate; on revocation it
commits synchronously before letting go. ``group.instance.id`` is the instance's identity (kept
in WAL_DIR), so an instance restarted after ``kill -9`` gets its partitions back at once.
Backpressure pauses the partitions while the WAL is over WAL_MAX_BYTES, the disk is full, or
another stage holds consuming back (``hold``: conversion waiting for the schema registry).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from wal_bridge.config import Settings
from wal_bridge.errors import ConsumerError
from wal_bridge.logs import RateLimited, get_logger
from wal_bridge.metrics import Metrics
from wal_bridge.wal.codec import RecordColumns
from wal_bridge.wal.log import Wal

log = get_logger("wal_bridge.consumer")

TP = tuple[str, int]
MAX_POLL = 10_000
RESUME_FRACTION = 0.9  # resume once the WAL is back under 90 % of WAL_MAX_BYTES
STATS_INTERVAL_MS = 5_000  # librdkafka statistics: the high watermarks behind the lag gauge


def consumer_config(settings: Settings, instance_id: str) -> dict[str, Any]:
    return {
        **settings.kafka_config(),
        "client.id": f"wal-bridge-{instance_id}",
        "group.id": settings.group_id,
        "group.instance.id": instance_id,
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "session.timeout.ms": 45_000,
        "max.poll.interval.ms": 300_000,
        # Bound the prefetch queue: memory follows the segment size, not the backlog. librdkafka
        # holds up to about the queue plus one fetch response, each message with ~250 bytes of
        # its own beside the value, and a compressed batch decompressed whole: at 8 MiB each
        # that was ~70 MiB resident on an lz4 topic, at 2 MiB ~30 MiB. 2 MiB (~9,000 records of
        # 230 bytes) still refills faster than the bridge drains: a consume-only loop with
        # these settings reads 400,000+ records/s (scripts/bench, `ceiling-bridge`).
        "queued.max.messages.kbytes": 2_048,
        "fetch.max.bytes": 2 * 1024 * 1024,
        # How long librdkafka waits before fetching again for a partition whose prefetch queue
        # was full: 1 s by default, which with a bounded queue, not the broker, set the rate
        # (106,000 records/s in the benchmark's consume-only loop, 400,000+ with 10 ms).
        "fetch.queue.backoff.ms": 10,
    }


def high_watermarks_from_stats(raw: str, assigned: Iterable[TP]) -> dict[TP, int]:
    """Per assigned partition, the end of what a consumer can read, from librdkafka statistics.

    ``raw`` is the JSON document of librdkafka's ``stats_cb`` (STATISTICS.md in librdkafka's
    source: ``topics.<name>.partitions.<id>``). The end is the last stable offset
    (``ls_offset``: the consumer reads committed transactions only), or the high watermark
    (``hi_offset``) when the broker did not report one. Partitions not in ``assigned``, the
    internal partition -1 and negative offsets (unknown yet) are left out; a document that is
    not JSON gives ``{}``.
    """
    wanted = set(assigned)
    try:
        stats = json.loads(raw)
    except ValueError:
        return {}
    result: dict[TP, int] = {}
    for topic, info in (stats.get("topics") or {}).items():
        for key, part in (info.get("partitions") or {}).items():
            partition = int(key)
            if partition < 0 or (topic, partition) not in wanted:
                continue  # -1 is librdkafka's internal "unassigned" partition
            end = int(part.get("ls_offset", -1))
            if end < 0:
                end = int(part.get("hi_offset", -1))
            if end >= 0:
                result[(topic, partition)] = end
    return result


def lag_of(positions: Mapping[TP, int], ends: Mapping[TP, int],
           read: Mapping[TP, int] | None = None) -> dict[TP, int]:
    """Offsets left to consume past what the WAL holds, per partition known to ``positions``
    and ``ends``.

    ``positions``: the next offset after the last durable record; ``ends``: from
    :func:`high_watermarks_from_stats`; ``read``: the consumer's own position (the offset after
    the last record or control record it returned), given only for partitions none of whose
    returned records still waits to be made durable. Offsets are not dense: a transaction's
    commit or abort marker, an aborted record (read_committed) and a record removed by
    compaction hold an offset that no record brings, so after a partition whose last offset is
    a marker is fully consumed the last durable record is followed by offsets that will never
    come, and only the consumer's position (past the marker; librdkafka advances it over
    control records) says they were read. Never negative: statistics a few seconds old can
    trail the position.
    """
    read = read or {}
    return {tp: max(0, end - max(positions[tp], read.get(tp, -1)))
            for tp, end in sorted(ends.items()) if tp in positions}


def should_pause(wal_bytes: int, cap: int, *, paused: bool) -> bool:
    """Whether consuming should be paused for the WAL's size (backpressure, with hysteresis).

    Pause when the WAL holds more than ``cap`` bytes (WAL_MAX_BYTES); once paused, stay paused
    until it is back under RESUME_FRACTION of the cap, so that one shipped segment does not
    flip the consumer on and off.
    """
    if wal_bytes > cap:
        return True
    return paused and wal_bytes > cap * RESUME_FRACTION


def stray_partitions(partitions: Iterable[TP], topics: Iterable[str]) -> list[TP]:
    """The partitions of an assignment whose topic is not one of ``topics``, sorted.

    Under the classic group protocol a static member (``group.instance.id``) that joins again
    within the session timeout gets its previous assignment back without a rebalance, even
    when it now subscribes to other topics: the broker compares only the protocol name
    (KAFKA-12759). ``topics`` are literal names (KAFKA_TOPIC takes no patterns), so the
    check is an exact match.
    """
    wanted = set(topics)
    return sorted(tp for tp in partitions if tp[0] not in wanted)


def columns_of(messages: Sequence[Any]) -> RecordColumns:
    """Columns of a polled batch: one C-level pass per field, no per-record Python logic."""
    return RecordColumns(
        topics=[m.topic() for m in messages],
        partitions=[m.partition() for m in messages],
        offsets=[m.offset() for m in messages],
        timestamps=[m.timestamp()[1] for m in messages],
        keys=[m.key() for m in messages],
        values=[m.value() for m in messages],
        headers=[m.headers() for m in messages],
    )


class BridgeConsumer:
    """Kafka into the WAL: poll, append with one fsync per batch, commit what is durable.

    ``hold`` is asked after every step for a reason to stop consuming that another stage
    knows of (the runtime passes the sealer's: conversion blocked on a schema registry that
    does not answer); while it returns a reason the partitions are paused as for a full WAL,
    and they resume once it returns None and the WAL is under its cap. Records polled before
    the pause are still appended and committed: a polled record is never let go.
    """

    def __init__(self, settings: Settings, wal: Wal, metrics: Metrics | None = None,
                 hold: Callable[[], str | None] | None = None) -> None:
        self.settings = settings
        self.wal = wal
        self.policy = settings.commit_policy
        self._consumer = Consumer(
            {**consumer_config(settings, wal.instance_id), "on_commit": self._on_commit,
             "error_cb": self._on_error, "stats_cb": self._on_stats,
             "statistics.interval.ms": STATS_INTERVAL_MS}
        )
        self._assigned: set[TP] = set()
        # Recovery cut a torn tail: records there may have been committed (a disk that lost
        # fsynced data), so the first position of each partition comes from the WAL alone.
        self._distrust_commits = bool(wal.recovery.truncated)
        self._positioned: set[TP] = set()
        self._appended: dict[TP, int] = {}  # next offset after the last durable record
        self._committed: dict[TP, int] = {}
        self._pending: Any = None  # a polled batch that could not be appended (disk full)
        self._paused = False
        self.pause_reason: str | None = None
        self._over_cap = False  # the WAL passed WAL_MAX_BYTES and is not yet well under it
        self._hold = hold
        self._limited = RateLimited()
        self._last_policy_commit = 0.0
        self.metrics = metrics or Metrics()
        self.high_watermarks: dict[TP, int] = {}  # from the client's statistics (lag gauge)
        self._read: dict[TP, int] = {}  # the consumer's position at those statistics
        self.rebalanced = False  # set at the first assignment (readiness)
        # Partitions assigned outside the subscription: held paused, never read or committed,
        # until the member has left the group and joined again (see _rejoin_step).
        self._stray: set[TP] = set()
        self._rejoin: str | None = None  # None, "leave" or "join"
        # A static member restarted within the session timeout gets its old assignment back
        # without a rebalance, whatever it subscribes to now (KAFKA-12759): with KAFKA_TOPIC
        # changed since the last run, the first assignment is followed by a leave and a join,
        # so that the group rebalances by the new subscription (a topic added, too).
        self._resubscribe = wal.subscription_changed(tuple(settings.topics))
        self._left_at = 0.0

    def subscribe(self) -> None:
        self._consumer.subscribe(
            list(self.settings.topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    # ----------------------------------------------------------------------------- loop

    def step(self, timeout: float = 0.5) -> int:
        """Poll once, append and commit. Return how many records became durable.

        A batch that could not be appended (full disk) is kept and retried on the next step,
        with anything polled meanwhile added behind it: a polled record is never let go
        before it is durable, or its offset could be committed past it.
        """
        if self._rejoin is not None:
            self._rejoin_step()
        if self._pending is not None:
            timeout = min(timeout, 1.0)
        messages = self._consumer.consume(num_messages=self._poll_size(), timeout=timeout)
        good = [m for m in messages if m.error() is None]
        if self._stray:  # paused, so nothing should come; never let a record of theirs in
            good = [m for m in good if (m.topic(), m.partition()) not in self._stray]
        self.metrics.records_consumed.inc(len(good))
        if len(good) != len(messages):
            for m in messages:
                if (err := m.error()) is not None:
                    self._on_error(err)
        batch = columns_of(good).to_arrow() if good else None
        if self._pending is not None:
            batch = self._pending if batch is None else _concat(self._pending, batch)
            self._pending = None
        durable = self._append(batch) if batch is not None else 0
        if self.policy == "upload":
            self.commit_shipped()
        self._update_backpressure()
        return durable

    def _poll_size(self) -> int:
        return max(1, min(MAX_POLL, self.settings.batch_size))

    def _append(self, batch: Any) -> int:
        """Append to the WAL; commit what became durable; keep the rest pending (full disk)."""
        started = time.perf_counter()
        done = self.wal.append(batch)
        self.metrics.wal_fsync_seconds.observe(time.perf_counter() - started)
        if done < batch.num_rows:
            self._pending = batch.slice(done)
            self._pause(f"disk full: {self.wal.disk_full}")
        if not done:
            return 0
        self.metrics.records_appended.inc(done)
        durable = self.wal.last_appended
        for tp, rng in durable.items():
            self._appended[tp] = max(self._appended.get(tp, 0), rng.last + 1)
        if self.policy == "wal":
            self._commit({tp: self._appended[tp] for tp in durable}, asynchronous=True)
        return done

    # ----------------------------------------------------------------------------- commits

    def _commit(self, positions: dict[TP, int], *, asynchronous: bool) -> None:
        todo = {tp: pos for tp, pos in positions.items()
                if tp in self._assigned and pos > self._committed.get(tp, -1)}
        if not todo:
            return
        offsets = [TopicPartition(t, p, pos) for (t, p), pos in todo.items()]
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if (suppressed := self._limited.allow("commit_failed")) is not None:
                log.warning("commit_failed", error=str(exc), suppressed=suppressed)
            return
        if not asynchronous:
            self._committed.update(todo)

    def commit_shipped(self, *, force: bool = False, asynchronous: bool = True) -> None:
        """COMMIT_POLICY=upload: commit up to the first record not yet shipped, per partition."""
        now = time.monotonic()
        if not force and now - self._last_policy_commit < 1.0:
            return
        self._last_policy_commit = now
        unshipped = self.wal.unshipped_offsets()
        shipped = self.wal.shipped_offsets()
        positions = {tp: unshipped.get(tp, shipped.get(tp, -1)) for tp in self._assigned}
        self._commit({tp: pos for tp, pos in positions.items() if pos >= 0},
                     asynchronous=asynchronous)

    def commit_all(self) -> None:
        """Synchronous commit of everything the policy allows (shutdown, revocation)."""
        if self.policy == "wal":
            self._commit(dict(self._appended), asynchronous=False)
        else:
            self.commit_shipped(force=True, asynchronous=False)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            if (suppressed := self._limited.allow("commit_failed")) is not None:
                log.warning("commit_failed", error=str(err), suppressed=suppressed)
            return
        for tp in partitions:
            if tp.error is None and tp.offset >= 0:
                key = (tp.topic, tp.partition)
                self._committed[key] = max(self._committed.get(key, -1), tp.offset)

    # ----------------------------------------------------------------------------- rebalance

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._resubscribe and self._rejoin is None:
            self._resubscribe = False
            self._rejoin = "leave"
            log.warning("subscription_changed", topics=list(self.settings.topics),
                        action="leaving the group and joining again, so that it rebalances "
                               "by the new topics")
        elif self._rejoin is None:
            self.wal.record_subscription(tuple(self.settings.topics))
        stray = set(stray_partitions(((p.topic, p.partition) for p in partitions),
                                     self.settings.topics))
        if stray:
            self._hold_stray(consumer, [p for p in partitions
                                        if (p.topic, p.partition) in stray])
            partitions = [p for p in partitions if (p.topic, p.partition) not in stray]
            if not partitions:
                return
        wal_next = self.wal.next_offsets()
        try:
            committed = consumer.committed(partitions, timeout=30)
        except KafkaException as exc:
            log.warning("committed_offsets_unavailable", error=str(exc))
            committed = [TopicPartition(p.topic, p.partition, OFFSET_INVALID) for p in partitions]
        for tp, known in zip(partitions, committed, strict=True):
            key = (tp.topic, tp.partition)
            held = wal_next.get(key, -1)
            if known.offset >= 0:
                self._committed[key] = known.offset
            # Start after what the WAL holds or shipped when it is ahead of the group's commit;
            # otherwise at the commit, or (none yet) where auto.offset.reset says.
            position = max(held, known.offset)
            if self._distrust_commits and key not in self._positioned and 0 <= held < position:
                log.error(
                    "position_from_wal_after_torn_tail", partition=tp.partition,
                    topic=tp.topic, committed=known.offset, wal_next=held,
                    note="offsets from wal_next on were cut from a torn WAL tail: reading "
                         "them again (duplicates, if any, are removed by the dedup view)",
                )
                position = held
            self._positioned.add(key)
            tp.offset = position if position >= 0 else OFFSET_INVALID
            if tp.offset >= 0:
                self._appended.setdefault(key, tp.offset)
            self._assigned.add(key)
        consumer.incremental_assign(partitions)
        self.rebalanced = True
        if self._paused:
            consumer.pause(partitions)
        log.info("partitions_assigned", partitions=_names(partitions),
                 positions={f"{t.topic}[{t.partition}]": t.offset for t in partitions})

    def _hold_stray(self, consumer: Consumer, stray: list[TopicPartition]) -> None:
        """Partitions of topics not configured (:func:`stray_partitions`): assigned, so the
        client's assignment stays the group's, but paused, never positioned, read or
        committed; the next step leaves the group and joins again."""
        for tp in stray:
            tp.offset = OFFSET_INVALID
        consumer.incremental_assign(stray)
        consumer.pause(stray)
        self._stray.update((p.topic, p.partition) for p in stray)
        self._rejoin = "leave"
        log.warning("assignment_outside_subscription", partitions=_names(stray),
                    topics=list(self.settings.topics),
                    action="leaving the group and joining again with the configured topics")

    def _rejoin_step(self) -> None:
        """Leave the group, then join again with the configured topics.

        librdkafka sends LeaveGroup on ``unsubscribe()`` for a static member too (only
        closing the client skips it, KIP-345), and clears the member id when it does; the
        broker then forgets the member and its assignment, and the join that follows is a
        new member's, which makes the group rebalance by the subscription. Subscribing before
        the leave has gone out would fold the two into one join that keeps the member id, so
        the join waits for the cleared member id (at most 30 s).
        """
        if self._rejoin == "leave":
            self._consumer.unsubscribe()
            self._rejoin = "join"
            self._left_at = time.monotonic()
        elif self._rejoin == "join" and (
            not self._consumer.memberid() or time.monotonic() - self._left_at > 30
        ):
            self._rejoin = None
            self.subscribe()
            log.info("group_rejoined", topics=list(self.settings.topics))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        self._drop_pending(keys)
        # Everything appended is already fsynced: commit it before letting the partitions go.
        if self.policy == "wal":
            self._commit({tp: pos for tp, pos in self._appended.items() if tp in keys},
                         asynchronous=False)
        else:
            self.commit_shipped(force=True, asynchronous=False)
        self._forget(keys)
        consumer.incremental_unassign(partitions)
        log.info("partitions_revoked", partitions=_names(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(p.topic, p.partition) for p in partitions}
        self._drop_pending(keys)
        self._forget(keys)
        consumer.incremental_unassign(partitions)
        log.warning("partitions_lost", partitions=_names(partitions))

    def _forget(self, keys: set[TP]) -> None:
        self._assigned -= keys
        self._stray -= keys
        for key in keys:
            self._appended.pop(key, None)
            self._committed.pop(key, None)

    def _drop_pending(self, keys: set[TP]) -> None:
        """Records not yet durable of partitions we give up: their new owner reads them."""
        if self._pending is None:
            return
        import pyarrow.compute as pc

        batch = self._pending
        topics = batch.column("_topic").dictionary_decode()
        keep = [
            (t, p) not in keys
            for t, p in zip(topics.to_pylist(), batch.column("_partition").to_pylist(),
                            strict=True)
        ]
        kept = batch.filter(pc.equal(keep, True)) if not all(keep) else batch
        self._pending = kept if kept.num_rows else None

    # ----------------------------------------------------------------------------- pausing

    def _update_backpressure(self) -> None:
        """Pause or resume after a step: a batch pending for a full disk keeps the pause it
        made; otherwise the WAL over its cap (with hysteresis, :func:`should_pause`) pauses,
        then a reason from ``hold``; with neither, a paused consumer resumes."""
        if self._pending is not None:
            return  # paused for a full disk; resumes once the pending batch is durable
        size = self.wal.total_bytes()
        cap = self.settings.wal_max_bytes
        self._over_cap = should_pause(size, cap, paused=self._over_cap)
        held = self._hold() if self._hold is not None else None
        if self._over_cap:
            if size > cap or not self._paused:
                self._pause(f"WAL holds {size} bytes, over WAL_MAX_BYTES={cap}")
        elif held is not None:
            self._pause(held)
        elif self._paused:
            self._resume()

    def _pause(self, reason: str) -> None:
        if not self._paused:
            self._consumer.pause(self._assignment())
            self._paused = True
            log.warning("consumer_paused", reason=reason)
        self.pause_reason = reason

    def _resume(self) -> None:
        self._consumer.resume(self._assignment())
        self._paused = False
        self.pause_reason = None
        log.info("consumer_resumed", wal_bytes=self.wal.total_bytes())

    def pause_all(self) -> None:
        self._consumer.pause(self._assignment())
        self._paused = True

    def _assignment(self) -> list[TopicPartition]:
        """The client's assignment, less stray partitions (they stay paused until revoked)."""
        return [tp for tp in self._consumer.assignment()
                if (tp.topic, tp.partition) not in self._stray]

    @property
    def paused(self) -> bool:
        return self._paused

    def positions(self) -> dict[TP, int]:
        """Per assigned partition, the next offset after the last durable record."""
        return dict(self._appended)

    def lag(self) -> dict[TP, int]:
        """Per assigned partition, offsets left to consume past what the WAL holds (see
        :func:`lag_of`: 0 once a partition ending with a transaction marker is fully read);
        empty until the client's first statistics arrive."""
        held = self._pending_partitions()
        read = {tp: pos for tp, pos in self._read.items() if tp not in held}
        return lag_of(self.positions(), self.high_watermarks, read)

    def _pending_partitions(self) -> set[TP]:
        """Partitions with polled records not yet durable (a full disk): their consumer
        position is ahead of the WAL because of records, not markers."""
        batch = self._pending
        if batch is None:
            return set()
        topics = batch.column("_topic").dictionary_decode().to_pylist()
        return set(zip(topics, batch.column("_partition").to_pylist(), strict=True))

    # ----------------------------------------------------------------------------- errors

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise ConsumerError(f"Kafka client error: {err.str()}")
        if (suppressed := self._limited.allow(f"kafka_{err.code()}")) is not None:
            log.warning("kafka_error", error=err.str(), code=err.name(), suppressed=suppressed)

    def _on_stats(self, raw: str) -> None:
        self.high_watermarks = high_watermarks_from_stats(raw, self._assigned)
        # The consumer's position, taken here on the polling thread (the metrics thread only
        # reads the copy): with the end above, what lag() compares.
        held = self._pending_partitions()
        try:
            self._read = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.position(
                [TopicPartition(t, p) for t, p in self._assigned])
                if (tp.topic, tp.partition) not in held}
        except KafkaException:
            self._read = {}

    def poll_callbacks(self, timeout: float = 0.1) -> None:
        """Serve rebalance and commit callbacks without taking records (partitions paused)."""
        message = self._consumer.poll(timeout)
        if message is not None and message.error() is None:
            # A record slipped in between pausing and polling: it is not in the WAL and its
            # offset is not committed, so the next start reads it again. Nothing is lost.
            log.debug("record_left_for_next_start", partition=message.partition(),
                      offset=message.offset())

    def close(self) -> None:
        self._consumer.close()


def _concat(first: Any, second: Any) -> Any:
    import pyarrow as pa

    table = pa.Table.from_batches([first, second]).unify_dictionaries().combine_chunks()
    return table.to_batches(max_chunksize=table.num_rows)[0]


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{p.topic}[{p.partition}]" for p in partitions]
