"""Recovery at start: scan results in, the segment index and a report out.

Every segment file a crash (or a disk) left is decided on, in sequence order. Damage that
touches no verified record holds no record back; the records it did touch are read again from
Kafka (:mod:`wal_bridge.refetch`); only what cannot be healed goes to ``quarantine/``.

=======================================================  =====================================
what the scan found                                      what recovery does
=======================================================  =====================================
open, shorter than a segment header                      removed: it never held a record
open, a segment header that does not decode              quarantined
open, damage followed by a good frame                    quarantined: no seal frame says what
                                                         the damaged frames held
open, damage with no good frame after it                 tail cut (kept in ``N.torn``), rest
                                                         kept
open, ends in a seal frame                               handed to the WAL to finish its seal
open, records and no seal frame                          handed to the WAL to seal
open, no record                                          removed
sealed, whole                                            kept, converted if its Parquet file is
                                                         there
converted, Parquet file complete (footer verifies, its   ships that file, whatever happened to
segment and ranges match the seal frame)                 the segment file
converted, Parquet file incomplete or not matching       Parquet files removed; the segment is
                                                         decided on as sealed (converted again)
sealed, bytes after a good seal frame                    cut (kept in ``N.torn``), rest kept
sealed, records frames damaged, seal frame good          rewritten with the frames that verify
                                                         and a seal frame of what they hold
                                                         (same object key); the seal's other
                                                         offsets are re-fetched from Kafka
sealed, seal frame damaged                               rewritten the same way, with a new
                                                         object key (no object had the old one:
                                                         it was never converted); offsets of
                                                         damaged records frames from the
                                                         neighbouring frames, re-fetched
sealed, seal frame and neighbours unknown (damage at an  quarantined: what the damage held is
end, no neighbouring segment of that partition)          ambiguous
sealed, a segment header that does not decode            quarantined (unless its Parquet file
                                                         is complete: then it ships)
=======================================================  =====================================

A rewritten segment is written whole (:func:`~wal_bridge.wal.salvage.encode_sealed`) through
:func:`wal_bridge.durable.write_atomic`; the file as it was is kept as ``N.damaged``. The
re-fetch job (``M.refetch.json``, M a new segment number) is made durable first, so a crash
anywhere leaves either the damaged file with its job (decided on again, the job reused) or the
rewritten file with its job: exactly once, never lost. Every decision is logged
(``segment_salvaged``, ``segment_tail_truncated``, ``converted_file_*``) with the segment, the
byte offset and the offset ranges, and counted in :class:`RecoveryReport`.

Recovery never seals an open segment: those it hands over are sealed by the
:class:`~wal_bridge.wal.log.Wal`, which is the one place a segment is sealed. A quarantine takes
a :class:`~wal_bridge.errors.CorruptionError` naming the segment and the byte offset.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wal_bridge import durable
from wal_bridge.errors import CorruptionError
from wal_bridge.logs import get_logger
from wal_bridge.wal.codec import SEGMENT_HEADER_SIZE, DecodeError
from wal_bridge.wal.layout import WalLayout
from wal_bridge.wal.outbox import Outbox
from wal_bridge.wal.quarantine import Quarantine
from wal_bridge.wal.salvage import (
    Ambiguous,
    Inventory,
    RefetchJob,
    Runs,
    encode_sealed,
    inventory,
    missing_from_neighbours,
    missing_from_seal,
    run_count,
    runs_to_json,
    subtract_runs,
)
from wal_bridge.wal.segment import (
    OPEN,
    SEALED,
    Ranges,
    SealInfo,
    Segment,
    TopicPartition,
    ranges_to_json,
    scan,
)

if TYPE_CHECKING:
    from wal_bridge.wal.log import KeyPolicy

log = get_logger("wal_bridge.wal")


@dataclass
class RecoveryReport:
    """What recovery did, for the start-up log line, the metrics and ``inspect``."""

    sealed: list[int] = field(default_factory=list)  # open segments sealed at start
    # (segment, bytes cut) of open segments' torn tails: records there may have been committed
    truncated: list[tuple[int, int]] = field(default_factory=list)
    cut_after_seal: list[tuple[int, int]] = field(default_factory=list)  # (segment, bytes cut)
    quarantined: list[tuple[int, str]] = field(default_factory=list)  # (segment, reason)
    # One entry per salvage decision: segment, decision, byte_offset, ranges...
    salvaged: list[dict[str, Any]] = field(default_factory=list)
    salvaged_bytes: int = 0  # bytes of verified frames kept from damaged segments
    damaged_bytes: int = 0  # bytes that did not verify (or followed a seal frame), set aside
    refetch: list[int] = field(default_factory=list)  # re-fetch jobs made (their segment M)
    removed_temp: int = 0
    removed_empty: int = 0
    scanned_bytes: int = 0
    duration_s: float = 0.0


@dataclass
class Recovered:
    """The index recovery rebuilt: every segment kept, by number (the ``unsealed`` ones
    included), the open segments the WAL must seal, the pending re-fetches by their segment
    number, and the next sequence number."""

    index: dict[int, Segment]
    unsealed: list[Segment]
    next_seq: int
    report: RecoveryReport
    refetch: dict[int, RefetchJob] = field(default_factory=dict)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Context:
    layout: WalLayout
    quarantine: Quarantine
    report: RecoveryReport
    keys: KeyPolicy | None
    instance_id: str
    now_ms: Callable[[], int]
    jobs: dict[int, RefetchJob]
    next_seq: int

    def job_for(self, seq: int, need: Runs, reason: str, offset: int) -> RefetchJob | None:
        """The re-fetch job of segment ``seq``'s damaged offsets, made durable before the
        segment is rewritten. Offsets a pending job of ``seq`` already asks for (one that an
        interrupted recovery made) are not asked for again; None when nothing is left."""
        for job in self.jobs.values():
            if job.of_segment == seq:
                need = subtract_runs(need, job.need)
        if not need:
            return next((j for j in self.jobs.values() if j.of_segment == seq), None)
        job = RefetchJob(self.next_seq, seq, need, reason, offset, self.now_ms())
        self.next_seq += 1
        durable.write_atomic(self.layout.refetch(job.seq), json.dumps(job.to_json()).encode())
        self.jobs[job.seq] = job
        self.report.refetch.append(job.seq)
        return job


def recover(layout: WalLayout, outbox: Outbox, quarantine: Quarantine, *,
            keys: KeyPolicy | None = None, instance_id: str = "",
            now_ms: Callable[[], int] = _wall_ms) -> Recovered:
    """Bring the directory to a state where every segment is sealed (or handed over to be),
    salvaged, quarantined or gone; load the outbox's, the quarantine's and the pending
    re-fetches' state on the way. ``keys`` and ``instance_id`` name the objects of a segment
    whose seal frame is rewritten (without them such a segment is quarantined)."""
    started = time.monotonic()
    report = RecoveryReport()
    for directory in layout.directories:
        report.removed_temp += len(durable.remove_temp_files(directory))
    listing = layout.list_segments()
    jobs = _load_jobs(layout, {seq for seq, _ in listing})
    done = [seq for seq, _ in layout.read_refetched()]  # numbers given to re-fetches
    max_seq = max(outbox.load(), quarantine.load(), *jobs, *done, *(s for s, _ in listing), 0)
    ctx = _Context(layout, quarantine, report, keys, instance_id, now_ms, jobs, max_seq + 1)
    converted = layout.converted()
    index: dict[int, Segment] = {}
    unsealed: list[Segment] = []
    deferred: list[tuple[int, bytes, Inventory]] = []
    for seq, state in listing:
        path = layout.segment(seq, state)
        data = path.read_bytes()
        report.scanned_bytes += len(data)
        if state == SEALED:
            segment = _recover_sealed(ctx, seq, data, converted=seq in converted)
            if isinstance(segment, Inventory):
                deferred.append((seq, data, segment))
                continue
        else:
            segment = _recover_open(ctx, seq, data)
        if segment is None:
            continue
        if segment.state == OPEN:
            unsealed.append(segment)
            if segment.seal is None:
                report.sealed.append(seq)
        if segment.state == SEALED and not segment.converted:
            segment.converted = seq in converted and layout.parquet(seq).exists()
        if segment.converted:
            segment.parquet_bytes = outbox.bytes(seq)
        index[seq] = segment
    for seq, data, inv in deferred:  # no seal frame: bounded by the segments around it
        segment = _reseal(ctx, seq, data, inv, index)
        if segment is not None:
            index[seq] = segment
    report.duration_s = time.monotonic() - started
    return Recovered(index, unsealed, ctx.next_seq, report, jobs)


@dataclass
class Salvaged:
    """What :func:`salvage_segment` made of one sealed segment found damaged while running."""

    segment: Segment | None  # the rewritten segment, None when it left the index
    next_seq: int
    report: RecoveryReport


def salvage_segment(layout: WalLayout, quarantine: Quarantine, seq: int, *, keys: KeyPolicy,
                    instance_id: str, now_ms: Callable[[], int], jobs: dict[int, RefetchJob],
                    next_seq: int, index: dict[int, Segment]) -> Salvaged:
    """Decide on sealed segment ``seq``, found damaged after recovery (at conversion), as
    recovery would: the same table, the same files. ``jobs`` gets its re-fetch job, if any;
    ``index`` is the rest of the WAL (for the neighbours' bounds). The caller holds the WAL's
    locks."""
    report = RecoveryReport()
    ctx = _Context(layout, quarantine, report, keys, instance_id, now_ms, jobs, next_seq)
    data = layout.segment(seq, SEALED).read_bytes()
    result = _recover_sealed(ctx, seq, data, converted=False)
    if isinstance(result, Inventory):
        result = _reseal(ctx, seq, data, result, index)
    return Salvaged(result, ctx.next_seq, report)


def _load_jobs(layout: WalLayout, segments: set[int]) -> dict[int, RefetchJob]:
    """The pending re-fetches; one whose segment M exists already was done (a crash came
    between writing M and removing the job): its job file is removed."""
    jobs: dict[int, RefetchJob] = {}
    for seq, raw in layout.read_refetch():
        if seq in segments:
            layout.refetch(seq).unlink(missing_ok=True)
            durable.fsync_dir(layout.segments)
            continue
        try:
            jobs[seq] = RefetchJob.from_json(seq, raw)
        except (KeyError, ValueError, TypeError):
            log.error("refetch_job_unreadable", segment=seq, path=str(layout.refetch(seq)))
    return jobs


def _recover_open(ctx: _Context, seq: int, data: bytes) -> Segment | None:
    """Decide what an open segment file becomes; None when it leaves the index."""
    layout, report = ctx.layout, ctx.report
    path = layout.segment(seq, OPEN)
    if len(data) < SEGMENT_HEADER_SIZE:
        path.unlink()  # created, but its header never made it: it holds no record
        report.removed_empty += 1
        return None
    try:
        result = scan(data)
    except DecodeError as exc:
        error = CorruptionError(path, exc.offset, f"segment header: {exc.reason}")
        _quarantine(ctx, seq, error, {})
        return None
    if result.error is not None and not result.tail_only:
        error = CorruptionError(path, result.error.offset, result.error.reason)
        _quarantine(ctx, seq, error, result.ranges)
        return None
    if result.error is not None:  # torn tail of the open segment: cut it, keep it
        _cut_tail(layout, path, data, end=result.valid_end, reason=result.error.reason, seq=seq)
        report.truncated.append((seq, result.size - result.valid_end))
    if result.seal is None and result.records == 0:
        path.unlink()
        durable.fsync_dir(layout.segments)
        report.removed_empty += 1
        return None
    return Segment(seq, OPEN, path, result.valid_end, result.records, result.created_ms,
                   result.ranges, result.seal)


def _recover_sealed(ctx: _Context, seq: int, data: bytes, *, converted: bool
                    ) -> Segment | Inventory | None:
    """Decide what a sealed segment file becomes: a Segment to index, None when it leaves the
    index, or its Inventory when it has no seal frame (decided once the index is known)."""
    whole = _whole(data)
    if whole is None:
        return _recover_damaged(ctx, seq, data, converted=converted)
    seal, created_ms = whole  # the common case: checksums only, the seal frame has the ranges
    if converted and (shipped := _ship_converted(
            ctx, seq, data, seal, inv=None, damaged=False, created_ms=created_ms)):
        return shipped
    return Segment(seq, SEALED, ctx.layout.segment(seq, SEALED), len(data), seal.records,
                   created_ms, dict(seal.ranges), seal)


def _recover_damaged(ctx: _Context, seq: int, data: bytes, *, converted: bool
                     ) -> Segment | Inventory | None:
    """:func:`_recover_sealed` for a segment that is not whole (see the module's table)."""
    path = ctx.layout.segment(seq, SEALED)
    try:
        inv: Inventory | None = inventory(data)
    except DecodeError as exc:
        inv = None
        header_error = exc
    seal = inv.seal if inv is not None else None
    if converted:
        shipped = _ship_converted(
            ctx, seq, data, seal, inv=inv, damaged=inv is None or not inv.whole,
            created_ms=inv.created_ms if inv is not None else None)
        if shipped is not None:
            return shipped
    if inv is None:
        error = CorruptionError(path, header_error.offset, f"segment header: {header_error.reason}")
        _quarantine(ctx, seq, error, {})
        return None
    if seal is not None and not inv.damaged:
        assert inv.after_seal is not None
        _cut_after_seal(ctx, seq, path, data, inv.after_seal)
        return Segment(seq, SEALED, path, inv.after_seal, seal.records, inv.created_ms,
                       dict(seal.ranges), seal)
    if seal is None:
        return inv
    need = missing_from_seal(inv)
    kept = replace(seal, records=inv.records, ranges=inv.kept_ranges())
    return _rewrite(ctx, seq, data, inv, seal=kept, need=need, what="records frames damaged")


def _whole(data: bytes) -> tuple[SealInfo, int] | None:
    """The seal and creation time of a sealed segment whose every frame verifies and whose
    seal frame is its last; None when anything is wrong. Verifies the checksums and skips the
    per-frame group-by (the seal frame holds the ranges): most of recovery's speed."""
    try:
        result = scan(data, ranges=False)
    except DecodeError:
        return None
    if result.error is not None or result.seal is None:
        return None
    return result.seal, result.created_ms


def _ship_converted(ctx: _Context, seq: int, data: bytes, seal: SealInfo | None, *,
                    inv: Inventory | None, damaged: bool, created_ms: int | None
                    ) -> Segment | None:
    """A converted segment whose Parquet files are complete and agree with its seal frame
    ships them, whatever happened to the segment file; incomplete or disagreeing files are
    removed (the segment is converted again). None when the files do not ship."""
    layout = ctx.layout
    # Here only, not with the module: Parquet's reader (pyarrow.compute among its imports) is
    # not needed before the first poll unless a segment was damaged.
    from wal_bridge.parquet import converted_seal

    footer = converted_seal(layout.parquet(seq), layout.dead_letters(seq), seq)
    agrees = footer is not None and (seal is None or (
        seal.records == footer.records and seal.ranges == footer.ranges
        and seal.sealed_at_ms == footer.sealed_at_ms))
    if footer is None or not agrees:
        why = "incomplete (its footer does not verify)" if footer is None else (
            "its footer disagrees with the seal frame")
        for stale in layout.outbox_files(seq):
            stale.unlink(missing_ok=True)
        durable.fsync_dir(layout.outbox)
        log.warning("converted_file_removed", segment=seq, reason=why,
                    path=str(layout.parquet(seq)), action="converting the segment again")
        ctx.report.salvaged.append({"segment": seq, "decision": "reconvert", "reason": why})
        return None
    assert footer is not None
    if seal is None:
        if ctx.keys is None:
            return None
        key, dead_key = ctx.keys.object_keys(footer.sealed_at_ms, footer.instance, seq)
        seal = replace(footer, key=key, dead_letter_key=dead_key)
    path = layout.segment(seq, SEALED)
    size = len(data)
    if inv is not None and inv.seal is not None and not inv.damaged and inv.after_seal:
        _cut_after_seal(ctx, seq, path, data, inv.after_seal)
        size = inv.after_seal
    elif damaged:
        offset = inv.damaged[0][0] if inv is not None and inv.damaged else 0
        ctx.report.salvaged.append({"segment": seq, "decision": "ship_converted",
                                    "byte_offset": offset, "key": seal.key,
                                    "ranges": ranges_to_json(seal.ranges)})
        log.warning("segment_salvaged", segment=seq, decision="ship_converted",
                    byte_offset=offset, records=seal.records, key=seal.key,
                    ranges=ranges_to_json(seal.ranges),
                    note="the segment file is damaged; its complete Parquet file ships")
    created = created_ms if created_ms is not None else seal.sealed_at_ms
    return Segment(seq, SEALED, path, size, seal.records, created, dict(seal.ranges), seal,
                   converted=True)


def _reseal(ctx: _Context, seq: int, data: bytes, inv: Inventory,
            index: dict[int, Segment]) -> Segment | None:
    """A sealed segment whose seal frame is damaged: its damaged records frames are bounded
    by the frames and segments around them, and it gets a new seal frame (a new key: it was
    never converted, so no object has the old one). Ambiguous damage is quarantined."""
    path = ctx.layout.segment(seq, SEALED)
    before: dict[TopicPartition, int] = {}
    after: dict[TopicPartition, int] = {}
    for other in index.values():
        for tp, rng in other.ranges.items():
            if other.seq < seq:
                before[tp] = max(before.get(tp, rng.last), rng.last)
            elif other.seq > seq:
                after[tp] = min(after.get(tp, rng.first), rng.first)
    kept_tps = set(inv.kept_ranges())
    try:
        need = missing_from_neighbours(
            inv, data, {tp: o for tp, o in before.items() if tp in kept_tps},
            {tp: o for tp, o in after.items() if tp in kept_tps})
    except Ambiguous as exc:
        offset = inv.damaged[0][0] if inv.damaged else inv.size
        _quarantine(ctx, seq, CorruptionError(path, offset, f"seal frame damaged; {exc}"),
                    inv.kept_ranges())
        return None
    if ctx.keys is None or not inv.kept:
        offset = inv.damaged[0][0] if inv.damaged else inv.size
        why = "no frame verifies" if not inv.kept else "no destination to name its object"
        _quarantine(ctx, seq, CorruptionError(path, offset, f"seal frame damaged; {why}"),
                    inv.kept_ranges())
        return None
    now = ctx.now_ms()
    instance = ctx.instance_id or "unknown"
    key, dead_key = ctx.keys.object_keys(now, instance, seq)
    seal = SealInfo(seq, instance, key, dead_key, now, inv.records, inv.kept_ranges())
    return _rewrite(ctx, seq, data, inv, seal=seal, need=need, what="seal frame damaged")


def _rewrite(ctx: _Context, seq: int, data: bytes, inv: Inventory, *, seal: SealInfo,
             need: Runs, what: str) -> Segment | None:
    """Replace a damaged sealed segment by its verified frames and ``seal``; keep the old file
    as ``N.damaged``; make the re-fetch job of ``need`` durable first."""
    layout, report = ctx.layout, ctx.report
    path = layout.segment(seq, SEALED)
    offset = inv.damaged[0][0] if inv.damaged else inv.size
    job = ctx.job_for(seq, need, what, offset) if need else None
    kept_as = layout.free_damaged(seq, data)
    durable.write_atomic(kept_as, data)
    kept_bytes = sum(k.end - k.offset for k in inv.kept)
    report.salvaged_bytes += kept_bytes
    report.damaged_bytes += sum(b - a for a, b in inv.damaged) + (
        inv.size - inv.after_seal if inv.after_seal is not None else 0)
    entry = {
        "segment": seq, "decision": "rewrite", "reason": what, "byte_offset": offset,
        "damaged_bytes": [[a, b] for a, b in inv.damaged], "kept_frames": len(inv.kept),
        "kept_records": inv.records, "kept_bytes": kept_bytes, "key": seal.key,
        "ranges": ranges_to_json(seal.ranges), "refetch": runs_to_json(need),
        "refetch_segment": job.seq if job else None,
    }
    report.salvaged.append(entry)
    log.warning("segment_salvaged", **{k: v for k, v in entry.items() if k != "decision"},
                decision="rewrite", records_to_refetch=run_count(need),
                kept=str(kept_as))
    if not inv.kept:
        path.unlink()
        durable.fsync_dir(layout.segments)
        return None
    body = encode_sealed(seq, inv.created_ms, inv.batches, seal)
    durable.write_atomic(path, body)
    return Segment(seq, SEALED, path, len(body), seal.records, inv.created_ms,
                   dict(seal.ranges), seal)


def _quarantine(ctx: _Context, seq: int, error: CorruptionError, ranges: Ranges) -> None:
    ctx.quarantine.set_aside(seq, error, ranges)
    ctx.report.quarantined.append((seq, error.reason))


def _cut_after_seal(ctx: _Context, seq: int, path: Path, data: bytes, end: int) -> None:
    """Bytes after a good seal frame are no part of the segment: cut them, keep them."""
    _cut_tail(ctx.layout, path, data, end=end, reason="bytes after the seal frame", seq=seq)
    ctx.report.cut_after_seal.append((seq, len(data) - end))
    ctx.report.damaged_bytes += len(data) - end
    ctx.report.salvaged.append({"segment": seq, "decision": "cut_after_seal",
                                "byte_offset": end, "bytes": len(data) - end})


def _cut_tail(layout: WalLayout, path: Path, data: bytes, *, end: int, reason: str,
              seq: int) -> None:
    """Cut the bytes from ``end`` on off a segment file, keeping them in ``N.torn``."""
    torn = layout.free_torn(seq)
    durable.write_atomic(torn, data[end:])
    durable.truncate(path, end)
    log.warning("segment_tail_truncated", segment=seq, bytes=len(data) - end, offset=end,
                reason=reason, kept=str(torn))
