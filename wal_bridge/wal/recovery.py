"""Recovery at start: scan results in, the segment index and a report out.

Every segment file a crash (or a disk) left is decided on, in sequence order:

=================================================  ==========================================
what the scan found                                what recovery does
=================================================  ==========================================
open, shorter than a segment header                removed: it never held a record
a segment header that does not decode              quarantined
damage followed by a good frame (any state)        quarantined: corruption, not a torn write
sealed, any damage, or no seal frame               quarantined: a sealed segment is immutable
open, damage with no good frame after it           tail cut (kept in ``N.torn``), rest kept
open, ends in a seal frame                         handed to the WAL to finish its seal
open, records and no seal frame                    handed to the WAL to seal
open, no record                                    removed
sealed, whole                                      kept, converted if its Parquet file is there
=================================================  ==========================================

Recovery never seals: the open segments it hands over are sealed by the
:class:`~wal_bridge.wal.log.Wal`, which is the one place a segment is sealed. A quarantine takes
a :class:`~wal_bridge.errors.CorruptionError` naming the segment and the byte offset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from wal_bridge import durable
from wal_bridge.errors import CorruptionError
from wal_bridge.logs import get_logger
from wal_bridge.wal.codec import SEGMENT_HEADER_SIZE, DecodeError
from wal_bridge.wal.layout import WalLayout
from wal_bridge.wal.outbox import Outbox
from wal_bridge.wal.quarantine import Quarantine
from wal_bridge.wal.segment import OPEN, SEALED, ScanResult, Segment, scan

log = get_logger("wal_bridge.wal")


@dataclass
class RecoveryReport:
    """What recovery did, for the start-up log line."""

    sealed: list[int] = field(default_factory=list)  # open segments sealed at start
    truncated: list[tuple[int, int]] = field(default_factory=list)  # (segment, bytes cut)
    quarantined: list[tuple[int, str]] = field(default_factory=list)  # (segment, reason)
    removed_temp: int = 0
    removed_empty: int = 0
    scanned_bytes: int = 0
    duration_s: float = 0.0


@dataclass
class Recovered:
    """The index recovery rebuilt: every segment kept, by number (the ``unsealed`` ones
    included), the open segments the WAL must seal, and the next sequence number."""

    index: dict[int, Segment]
    unsealed: list[Segment]
    next_seq: int
    report: RecoveryReport


def recover(layout: WalLayout, outbox: Outbox, quarantine: Quarantine) -> Recovered:
    """Bring the directory to a state where every segment is sealed (or handed over to be),
    quarantined or gone; load the outbox's and the quarantine's state on the way."""
    started = time.monotonic()
    report = RecoveryReport()
    for directory in layout.directories:
        report.removed_temp += len(durable.remove_temp_files(directory))
    max_seq = max(outbox.load(), quarantine.load())
    converted = layout.converted()
    index: dict[int, Segment] = {}
    unsealed: list[Segment] = []
    for seq, state in layout.list_segments():
        path = layout.segment(seq, state)
        max_seq = max(max_seq, seq)
        data = path.read_bytes()
        report.scanned_bytes += len(data)
        segment = _recover_segment(layout, quarantine, seq, state, data, report=report)
        if segment is None:
            continue
        if segment.state == OPEN:
            unsealed.append(segment)
            if segment.seal is None:
                report.sealed.append(seq)
        segment.converted = seq in converted
        if segment.converted:
            segment.parquet_bytes = outbox.bytes(seq)
        index[seq] = segment
    report.duration_s = time.monotonic() - started
    return Recovered(index, unsealed, max_seq + 1, report)


def _recover_segment(
    layout: WalLayout, quarantine: Quarantine, seq: int, state: str, data: bytes, *,
    report: RecoveryReport,
) -> Segment | None:
    """Decide what one segment file becomes; None when it leaves the index."""
    path = layout.segment(seq, state)
    if state == OPEN and len(data) < SEGMENT_HEADER_SIZE:
        path.unlink()  # created, but its header never made it: it holds no record
        report.removed_empty += 1
        return None
    try:
        # A sealed segment's seal frame holds its offset ranges: verifying the checksums is
        # enough, and skipping the per-frame group-by is most of the scan's speed.
        result = scan(data, ranges=state == OPEN)
        if state == SEALED and (result.error is not None or result.seal is None):
            result = scan(data)  # damaged: the ranges of its good frames, for the report
        elif result.seal is not None and state == SEALED:
            result.ranges = dict(result.seal.ranges)
    except DecodeError as exc:
        error = CorruptionError(path, exc.offset, f"segment header: {exc.reason}")
        _quarantine(quarantine, seq, error, ScanResult(seq, 0, len(data), 0), report)
        return None
    if result.error is not None and not (state == OPEN and result.tail_only):
        error = CorruptionError(path, result.error.offset, result.error.reason)
        _quarantine(quarantine, seq, error, result, report)
        return None
    if state == SEALED and result.seal is None:
        error = CorruptionError(path, result.size, "sealed segment has no seal frame")
        _quarantine(quarantine, seq, error, result, report)
        return None
    if result.error is not None:  # torn tail of the open segment: cut it, keep it
        _cut_tail(layout, path, data, result)
        report.truncated.append((seq, result.size - result.valid_end))
    if state == OPEN and result.seal is None and result.records == 0:
        path.unlink()
        durable.fsync_dir(layout.segments)
        report.removed_empty += 1
        return None
    return Segment(seq, state, path, result.valid_end, result.records, result.created_ms,
                   result.ranges, result.seal)


def _quarantine(quarantine: Quarantine, seq: int, error: CorruptionError, result: ScanResult,
                report: RecoveryReport) -> None:
    quarantine.set_aside(seq, error, result.ranges)
    report.quarantined.append((seq, error.reason))


def _cut_tail(layout: WalLayout, path: Path, data: bytes, result: ScanResult) -> None:
    """Cut the torn tail off an open segment, keeping the bytes in ``N.torn``."""
    assert result.error is not None
    torn = layout.torn(result.seq)
    durable.write_atomic(torn, data[result.valid_end :])
    durable.truncate(path, result.valid_end)
    log.warning(
        "segment_tail_truncated", segment=result.seq, bytes=result.size - result.valid_end,
        offset=result.valid_end, reason=result.error.reason, kept=str(torn),
    )
