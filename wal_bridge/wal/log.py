"""The write-ahead log: append, seal, the segment index and the offsets it answers for.

:class:`Wal` composes the WAL's other roles, each in its own module: the directory's lock and
identity (:mod:`~wal_bridge.wal.lock`), recovery at start (:mod:`~wal_bridge.wal.recovery`),
converted and shipped bookkeeping (:mod:`~wal_bridge.wal.outbox`), and the quarantine
(:mod:`~wal_bridge.wal.quarantine`). The files are named in :mod:`~wal_bridge.wal.layout`, and
every state change goes through :mod:`wal_bridge.durable` (temp file, fsync, rename, fsync
directory).

Sealing happens in one place, :meth:`Wal._seal_due`, under one rule (:meth:`Wal._due`): a
segment is sealed when it holds BATCH_SIZE records or its first record is BATCH_TIMEOUT seconds
old, whichever comes first; or at once when asked (shutdown, replay, and the segments a crash
left open, which recovery hands over). It is called by :meth:`Wal.append` on the consumer thread,
by :meth:`Wal.seal_if_due` on the sealer's, and by :meth:`Wal.seal`.

Threads: the consumer appends and seals; the sealer seals on time and converts; the uploader
ships. Three locks, always taken in this order when nested: ``_ship_lock`` (one
:meth:`mark_shipped` at a time, so ``state.json`` only moves forward); ``_append_lock`` for the
active segment (its file descriptor and counters), held across its writes and fsyncs; and
``_lock`` for the index, the shipped offsets and the quarantine's ranges, held only for
in-memory changes, so that the sealer and uploader never wait for the consumer's fsync, nor it
for theirs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from wal_bridge import durable
from wal_bridge.config import default
from wal_bridge.errors import CorruptionError, DiskFullError, WalBridgeError, WalFatalError
from wal_bridge.failpoints import DISARMED, Failpoints
from wal_bridge.logs import get_logger
from wal_bridge.wal.codec import (
    BATCH_SCHEMA,
    MAX_FRAME_BYTES,
    FrameKind,
    encode_frame,
    encode_records,
    encode_segment_header,
)
from wal_bridge.wal.layout import WalLayout
from wal_bridge.wal.lock import WalLock, ensure_identity
from wal_bridge.wal.outbox import Outbox
from wal_bridge.wal.quarantine import Quarantine, QuarantineStatus
from wal_bridge.wal.recovery import RecoveryReport, recover, salvage_segment
from wal_bridge.wal.salvage import RefetchJob, encode_sealed, runs_from_json, runs_to_ranges
from wal_bridge.wal.segment import (
    OPEN,
    SEALED,
    Ranges,
    SealInfo,
    Segment,
    TopicPartition,
    batch_ranges,
    merge_ranges,
    parse_segment_name,
)

log = get_logger("wal_bridge.wal")

# A frame body is kept well under the codec's hard limit so that one huge poll never fails.
TARGET_FRAME_BYTES = min(64 * 1024 * 1024, MAX_FRAME_BYTES // 2)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class KeyPolicy(Protocol):
    """Where a segment's files will go, asked once, at seal time, and kept in its seal frame
    (so converting again gives the same names): :class:`wal_bridge.config.Destination`."""

    def object_keys(self, sealed_at_ms: int, instance: str, seq: int) -> tuple[str, str]:
        """The keys of the segment's data file and of its dead-letter file."""
        ...


class Wal:
    """An open, locked WAL directory. Create with :meth:`open`; close with :meth:`close`."""

    def __init__(
        self,
        *,
        root: Path,
        instance_id: str,
        keys: KeyPolicy,
        batch_size: int,
        batch_timeout: float,
        failpoints: Failpoints,
        lock: WalLock,
        now_ms: Callable[[], int],
        monotonic: Callable[[], float],
    ) -> None:
        self.root = root
        self.instance_id = instance_id
        self.keys = keys
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.failpoints = failpoints
        self.layout = WalLayout(root)
        self.quarantine = Quarantine(self.layout, now_ms)
        self.outbox = Outbox(self.layout, failpoints, now_ms)
        self._dir_lock = lock
        self._now_ms = now_ms
        self._monotonic = monotonic
        self._ship_lock = threading.Lock()
        self._append_lock = threading.RLock()
        self._lock = threading.RLock()
        self._index: dict[int, Segment] = {}
        self._refetch: dict[int, RefetchJob] = {}  # pending re-fetches, by their segment M
        self._active: Segment | None = None
        self._active_fd: int | None = None
        self._fresh_seals: set[int] = set()  # seal frames this process wrote, not yet renamed
        self._next_seq = 1
        self.recovery = RecoveryReport()
        self.disk_full: str | None = None  # why the last append stopped short, if it did
        # Per partition, the offset ranges the last append made durable (what may be committed).
        self.last_appended: Ranges = {}

    # ----------------------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        keys: KeyPolicy,
        batch_size: int = default("batch_size"),
        batch_timeout: float = default("batch_timeout"),
        instance_id: str | None = None,
        failpoints: Failpoints = DISARMED,
        now_ms: Callable[[], int] = _now_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Wal:
        """Lock ``root``, fix the instance identity and recover whatever a crash left: every
        segment a crash left open is sealed before this returns. ``keys`` names the objects
        of each segment sealed (the destination); the batch defaults are the settings'."""
        for directory in WalLayout(root).directories:
            durable.make_dirs(directory)
        lock = WalLock.acquire(root)
        try:
            identity = ensure_identity(root, instance_id)
            wal = cls(root=root, instance_id=identity, keys=keys, batch_size=batch_size,
                      batch_timeout=batch_timeout, failpoints=failpoints, lock=lock,
                      now_ms=now_ms, monotonic=monotonic)
            wal._recover()
        except BaseException:
            lock.release()
            raise
        return wal

    def close(self) -> None:
        with self._append_lock, self._lock:
            if self._active_fd is not None:
                os.close(self._active_fd)
                self._active_fd = None
            self._dir_lock.release()

    def _recover(self) -> None:
        recovered = recover(self.layout, self.outbox, self.quarantine, keys=self.keys,
                            instance_id=self.instance_id, now_ms=self._now_ms)
        self._index = recovered.index
        self._refetch = recovered.refetch
        self._next_seq = recovered.next_seq
        with self._append_lock:
            for segment in recovered.unsealed:  # appends go to a new segment
                self._active = segment
                self._seal_due(force=True)
        self.recovery = recovered.report

    # ----------------------------------------------------------------------------- appending

    def append(self, batch: pa.RecordBatch) -> int:
        """Append a polled batch and make it durable: one fsync, more only when it seals.

        Segments hold exactly ``batch_size`` records: a batch that crosses the boundary is
        split, and each full segment is made durable and sealed on the way. Returns how many
        records, from the start of the batch, are durable: all of them, or fewer when the disk
        is full — the rest was rolled back and can be appended again once there is room.
        Raises WalFatalError when durability can no longer be promised.
        """
        with self._append_lock:
            pos = 0
            durable: Ranges = {}
            self.last_appended = durable
            while pos < batch.num_rows:
                try:
                    pos += self._append_part(batch.slice(pos), durable)
                except DiskFullError as exc:
                    self.disk_full = str(exc)
                    return pos
            self.disk_full = None
            return pos

    def _append_part(self, rest: pa.RecordBatch, durable: Ranges) -> int:
        """Write as much of ``rest`` as fits in the active segment; return how many records
        are now durable (0 when a due segment only got sealed: one whose seal failed on a full
        disk), and add their ranges to ``durable``."""
        if self._seal_due():
            return 0
        active = self._active or self._new_segment()
        part = rest.slice(0, self.batch_size - active.records)
        mark = (active.bytes, active.records, dict(active.ranges), active.first_append)
        try:
            for chunk in _chunks(part):
                self._write(FrameKind.RECORDS, encode_records(chunk))
        except OSError as exc:
            self._rollback(active, mark)
            raise _disk_error(exc, self.root) from exc
        if active.first_append is None:
            active.first_append = self._monotonic()
        active.records += part.num_rows
        ranges = batch_ranges(part)
        # A new dict, not an update in place: other threads read the index's ranges.
        merged = dict(active.ranges)
        merge_ranges(merged, ranges)
        active.ranges = merged
        self.failpoints.hit("after_append_before_fsync")
        seal = None
        if active.records >= self.batch_size and active.seal is None:
            # Full: the seal frame goes in before the fsync, so that one fsync makes the
            # records and the seal durable together (on a full disk it is written later).
            with contextlib.suppress(DiskFullError):
                seal = self._write_seal_frame(active)
        self._sync_active()
        if seal is not None:
            self._seal_frame_durable(active, seal)
        merge_ranges(durable, ranges)
        with contextlib.suppress(DiskFullError):  # durable already; sealing is retried
            self._seal_due()
        return int(part.num_rows)

    def _rollback(self, segment: Segment, mark: tuple[int, int, Ranges, float | None]) -> None:
        """Cut the active segment back to where it was before a write that failed."""
        assert self._active_fd is not None
        try:
            os.ftruncate(self._active_fd, mark[0])
        except OSError as exc:
            raise WalFatalError(f"cannot roll back a failed append: {exc}") from exc
        segment.bytes, segment.records, segment.ranges, segment.first_append = mark

    def _new_segment(self) -> Segment:
        seq = self._next_seq
        path = self.layout.segment(seq, OPEN)
        created = self._now_ms()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except OSError as exc:
            raise _disk_error(exc, self.root) from exc
        try:
            header = encode_segment_header(seq, created)
            _write_all(fd, header)
            # The header needs no fsync of its own: the first records' fsync (same file) makes
            # it durable before any record is acknowledged. A crash before that leaves an empty
            # (or header-only) open segment, which recovery removes. The entry does need its
            # directory fsync, so that the records' fsync never lands in a file that a power
            # cut could unname.
            durable.fsync_dir(self.layout.segments)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise _disk_error(exc, self.root) from exc
        self._next_seq += 1
        self._active_fd = fd
        with self._lock:
            self._active = Segment(seq, OPEN, path, len(header), 0, created)
            self._index[seq] = self._active
        self.failpoints.hit("after_segment_create")
        return self._active

    def _write(self, kind: FrameKind, body: bytes) -> None:
        assert self._active is not None
        assert self._active_fd is not None
        frame = encode_frame(kind, body)
        _write_all(self._active_fd, frame)
        self._active.bytes += len(frame)

    def _sync_active(self) -> None:
        assert self._active_fd is not None
        try:
            self.failpoints.fail("fsync_error")
            os.fsync(self._active_fd)
        except OSError as exc:
            # After a failed fsync the page cache can no longer be trusted (the kernel may have
            # dropped the dirty pages): stop, and let recovery read what really is on disk.
            raise WalFatalError(f"fsync of the WAL failed: {exc}; restart to recover") from exc
        self.failpoints.hit("after_fsync_before_commit")

    # ----------------------------------------------------------------------------- sealing

    def seal_if_due(self) -> bool:
        """Seal the active segment if it is due (the sealer's timer); return whether it did."""
        # A look without the lock first (another thread may be sealing it): most calls find
        # nothing due and never wait for an append's fsync.
        active = self._active
        if active is None or not self._due(active):
            return False
        with self._append_lock:
            return self._seal_due()

    def seal(self) -> bool:
        """Seal the active segment now if it holds any record (shutdown, replay, tests)."""
        with self._append_lock:
            return self._seal_due(force=True)

    def _due(self, segment: Segment) -> bool:
        """The sealing rule: BATCH_SIZE records, or a first record BATCH_TIMEOUT seconds old.
        Reads each field once: safe to ask without the lock, as a first look."""
        if segment.records >= self.batch_size:
            return True
        first_append = segment.first_append
        return first_append is not None and self._monotonic() - first_append >= self.batch_timeout

    def _seal_due(self, *, force: bool = False) -> bool:
        """The one place a segment is sealed: the active one, if it is due (or ``force``) and
        holds a record. Caller holds ``_append_lock``. Raises DiskFullError (the segment stays
        open and durable, and is sealed at the next call) or WalFatalError."""
        active = self._active
        if active is None or (active.records == 0 and active.seal is None):
            return False
        if not force and not self._due(active):
            return False
        if active.seal is None:
            self._write_seal(active)
        # Written by this process (here or with its last records), not before a crash that
        # came between the seal frame and the rename: only then is it logged as sealed.
        wrote_seal = active.seq in self._fresh_seals
        self._fresh_seals.discard(active.seq)
        first_append = active.first_append
        target = self.layout.segment(active.seq, SEALED)
        durable.rename(active.path, target)
        self.failpoints.hit("after_seal_rename")
        durable.fsync_dir(self.layout.segments)
        with self._lock:  # sealed and durable: from now on the sealer may take it
            active.path, active.state, active.first_append = target, SEALED, None
            self._active = None
        if wrote_seal:
            age = (self._monotonic() - first_append) if first_append else 0.0
            assert active.seal is not None
            log.info(
                "segment_sealed", segment=active.seq, records=active.records, bytes=active.bytes,
                key=active.seal.key, age_s=round(age, 3), partitions=len(active.ranges),
            )
        return True

    def _write_seal(self, active: Segment) -> None:
        """Write and fsync the seal frame, naming the object keys (fixed from now on)."""
        info = self._write_seal_frame(active)
        try:
            assert self._active_fd is not None
            os.fsync(self._active_fd)
        except OSError as exc:
            raise WalFatalError(f"cannot seal segment {active.seq}: {exc}") from exc
        self._seal_frame_durable(active, info)

    def _write_seal_frame(self, active: Segment) -> SealInfo:
        """Write (not fsync) the seal frame of ``active``, naming the object keys (fixed once
        it is durable). Raises DiskFullError (the frame rolled back) or WalFatalError."""
        if self._active_fd is None:  # recovered open segment: reopen for the seal frame
            self._active_fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
        sealed_at = self._now_ms()
        key, dead_key = self.keys.object_keys(sealed_at, self.instance_id, active.seq)
        info = SealInfo(active.seq, self.instance_id, key, dead_key, sealed_at, active.records,
                        dict(active.ranges))
        size = active.bytes
        try:
            self._write(FrameKind.SEAL, info.to_json())
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise WalFatalError(f"cannot seal segment {active.seq}: {exc}") from exc
            self._rollback(active, (size, active.records, active.ranges, active.first_append))
            raise _disk_error(exc, self.root) from exc
        return info

    def _seal_frame_durable(self, active: Segment, info: SealInfo) -> None:
        """The seal frame ``info`` of ``active`` was fsynced: close the segment for writing."""
        assert self._active_fd is not None
        os.close(self._active_fd)
        self._active_fd = None
        self.failpoints.hit("after_seal_trailer")
        active.seal = info
        self._fresh_seals.add(active.seq)

    # ----------------------------------------------------------------------------- converting

    def to_convert(self) -> list[Segment]:
        """Sealed segments not yet converted, oldest first."""
        with self._lock:
            return [s for s in sorted(self._index.values(), key=lambda s: s.seq)
                    if s.state == SEALED and not s.converted]

    def parquet_path(self, seq: int) -> Path:
        return self.layout.parquet(seq)

    def dead_letter_path(self, seq: int) -> Path:
        return self.layout.dead_letters(seq)

    def status_path(self, seq: int) -> Path:
        return self.layout.upload_status(seq)

    def mark_converted(self, seq: int, tmp: Path, dead_tmp: Path | None = None) -> None:
        """Publish fsynced Parquet temp files as the converted form of segment ``seq``
        (see :meth:`Outbox.publish`)."""
        size = self.outbox.publish(seq, tmp, dead_tmp)
        with self._lock:
            segment = self._index[seq]
            segment.converted = True
            segment.parquet_bytes = size

    # ----------------------------------------------------------------------------- quarantine

    def salvage_sealed(self, error: CorruptionError) -> RecoveryReport:
        """A sealed segment found damaged at conversion (``error`` names its file and the byte
        offset): decided on as recovery decides (:func:`~wal_bridge.wal.recovery.
        salvage_segment`): its verified frames are kept, the offsets of the others re-fetched,
        and only what cannot be healed is quarantined. Returns what was decided."""
        parsed = parse_segment_name(error.segment.name)
        if parsed is None:
            raise ValueError(f"{error.segment} is not a segment file")
        seq = parsed[0]
        log.error("segment_damaged_at_conversion", segment=seq, offset=error.offset,
                  reason=error.reason)
        with self._append_lock, self._lock:
            others = {s: seg for s, seg in self._index.items() if s != seq}
            done = salvage_segment(self.layout, self.quarantine, seq, keys=self.keys,
                                   instance_id=self.instance_id, now_ms=self._now_ms,
                                   jobs=self._refetch, next_seq=self._next_seq, index=others)
            self._next_seq = done.next_seq
            if done.segment is None:
                self._index.pop(seq, None)
            else:
                self._index[seq] = done.segment
        return done.report

    def release_quarantined(self, seq: int, report: dict[str, Any]) -> None:
        """Segment ``seq``, quarantined, was rebuilt into new segments that are durable: set
        its files aside with ``report`` (kept, renamed ``*.replayed``); its offsets are now
        held by the new segments only."""
        with self._lock:
            self.quarantine.release(seq, report)

    def quarantined(self) -> list[int]:
        """The quarantined segments, by number."""
        with self._lock:
            return sorted(self.quarantine.ranges)

    def quarantine_status(self) -> QuarantineStatus:
        """How many segments are quarantined and their bytes: a read of memory, no I/O."""
        with self._lock:
            return self.quarantine.status()

    # ----------------------------------------------------------------------------- re-fetch

    def refetch_jobs(self) -> list[RefetchJob]:
        """The offsets damaged frames held that must be read again from Kafka, oldest first
        (see :mod:`wal_bridge.refetch`)."""
        with self._lock:
            return [self._refetch[seq] for seq in sorted(self._refetch)]

    def complete_refetch(self, job: RefetchJob, batches: list[pa.RecordBatch],
                         lost: list[dict[str, Any]]) -> Segment | None:
        """What a re-fetch of ``job`` read from Kafka becomes segment ``job.seq``, sealed
        (a new object key), and the offsets Kafka no longer holds (``lost``: topic, partition,
        first_offset, last_offset, count, why) a quarantine entry of their own; then the job
        is removed. Returns the new segment, None when Kafka had no record of the job.

        Order: the loss entry, the segment file (one atomic write), the outcome
        (``M.refetched.json``, kept for ``inspect``), the job's removal, the index. A crash
        before the removal leaves segment M beside its job, which recovery takes as done: the
        records land once.
        """
        if lost:
            with self._append_lock:
                loss_seq = self._next_seq
                self._next_seq += 1
            with self._lock:
                self.quarantine.hold_lost(loss_seq, job.of_segment, lost,
                                          runs_to_ranges(runs_from_json(lost)))
        segment = None
        records = [b for b in batches if b.num_rows]
        if records:
            table = pa.Table.from_batches(records, schema=BATCH_SCHEMA)
            table = table.unify_dictionaries().combine_chunks().sort_by(
                [("_partition", "ascending"), ("_offset", "ascending")])
            parts = [b for b in table.to_batches(max_chunksize=10_000) for b in _chunks(b)]
            ranges: Ranges = {}
            for part in parts:
                merge_ranges(ranges, batch_ranges(part))
            now = self._now_ms()
            key, dead_key = self.keys.object_keys(now, self.instance_id, job.seq)
            seal = SealInfo(job.seq, self.instance_id, key, dead_key, now, table.num_rows,
                            ranges)
            path = self.layout.segment(job.seq, SEALED)
            body = encode_sealed(job.seq, now, parts, seal)
            durable.write_atomic(path, body)
            segment = Segment(job.seq, SEALED, path, len(body), table.num_rows, now, ranges,
                              seal)
        outcome = {**job.to_json(), "records": segment.records if segment else 0,
                   "lost": lost, "completed_at_ms": self._now_ms()}
        durable.write_atomic(self.layout.refetched(job.seq), json.dumps(outcome).encode())
        self.layout.refetch(job.seq).unlink(missing_ok=True)
        durable.fsync_dir(self.layout.segments)
        with self._lock:
            self._refetch.pop(job.seq, None)
            if segment is not None:
                self._index[job.seq] = segment
        return segment

    # ----------------------------------------------------------------------------- shipping

    def to_ship(self) -> list[Segment]:
        """Converted segments, oldest first."""
        with self._lock:
            return [s for s in sorted(self._index.values(), key=lambda s: s.seq) if s.converted]

    def mark_shipped(self, seq: int) -> None:
        """The object is confirmed in the destination: record its offsets, delete its files.

        The WAL's lock covers the in-memory change only; the segment stays in the index (and
        counts in every offset question) until its files are gone.
        """
        with self._ship_lock:
            with self._lock:
                segment = self._index[seq]
                state = self.outbox.record_shipped(seq, segment.ranges)
            self.outbox.write_state(state)
            self.failpoints.hit("after_shipped_record")
            self.outbox.remove(seq)
            segment.path.unlink()
            self.failpoints.hit("after_delete")
            durable.fsync_dir(self.layout.outbox)
            durable.fsync_dir(self.layout.segments)
            with self._lock:
                del self._index[seq]

    def record_upload_failure(self, seq: int, error: str, *, permanent: bool) -> int:
        """Keep the attempt count and last error beside the Parquet file (for inspect); return
        the number of attempts so far."""
        return self.outbox.record_upload_failure(seq, error, permanent=permanent)

    # ----------------------------------------------------------------------------- offsets

    def _held(self) -> list[Ranges]:
        """The ranges of every segment held, quarantined ones and pending re-fetches included
        (caller holds _lock)."""
        return ([s.ranges for s in self._index.values()] + list(self.quarantine.ranges.values())
                + [runs_to_ranges(job.need) for job in self._refetch.values()])

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last one the WAL holds or has shipped."""
        with self._lock:
            result = dict(self.outbox.shipped_next)
            for ranges in self._held():
                for tp, rng in ranges.items():
                    result[tp] = max(result.get(tp, 0), rng.last + 1)
            return result

    def unshipped_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the first offset held but not yet shipped (quarantine included).

        Under COMMIT_POLICY=upload this is the furthest position that may be committed: every
        record before it is in the destination.
        """
        with self._lock:
            result: dict[TopicPartition, int] = {}
            for ranges in self._held():
                for tp, rng in ranges.items():
                    result[tp] = min(result.get(tp, rng.first), rng.first)
            return result

    def shipped_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last one shipped (``state.json``)."""
        with self._lock:
            return dict(self.outbox.shipped_next)

    # ----------------------------------------------------------------------------- sizes

    def subscription_changed(self, topics: tuple[str, ...]) -> bool:
        """Whether the consumer last ran on other topics than ``topics`` (False the first
        time): a static member coming back would get the old topics' partitions."""
        before = self.layout.read_subscription()
        return before is not None and sorted(before) != sorted(topics)

    def record_subscription(self, topics: tuple[str, ...]) -> None:
        """Remember ``topics`` as the ones the consumer now runs with (durably)."""
        if self.layout.read_subscription() != tuple(topics):
            durable.write_atomic(self.layout.subscription,
                                 json.dumps({"topics": list(topics)}).encode())

    def total_bytes(self) -> int:
        """Bytes of segments and Parquet files not yet shipped (what WAL_MAX_BYTES caps)."""
        with self._lock:
            return sum(s.bytes + s.parquet_bytes for s in self._index.values())

    def snapshot(self) -> list[Segment]:
        """A copy of the index, oldest first: safe to read while the WAL moves on."""
        with self._lock:
            return [replace(s, ranges=dict(s.ranges)) for s in
                    sorted(self._index.values(), key=lambda s: s.seq)]


def _chunks(batch: pa.RecordBatch) -> list[pa.RecordBatch]:
    """Split a batch so that no frame body grows past TARGET_FRAME_BYTES."""
    if batch.num_rows <= 1 or batch.nbytes <= TARGET_FRAME_BYTES:
        return [batch]
    half = batch.num_rows // 2
    return _chunks(batch.slice(0, half)) + _chunks(batch.slice(half))


def _disk_error(exc: OSError, root: Path) -> WalBridgeError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"the disk under {root} is full ({exc.strerror})")
    return WalFatalError(f"cannot write to the WAL in {root}: {exc}")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
