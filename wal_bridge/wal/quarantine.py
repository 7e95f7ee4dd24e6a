"""The quarantine: damaged segments set aside with the reason, and released once replayed.

A segment goes to ``quarantine/`` when what its damage held cannot be healed: damage that no
seal frame or neighbouring frame bounds (found at recovery, or at conversion), or offsets that
a re-fetch found gone from Kafka (:meth:`Quarantine.hold_lost`: a reason file only, naming the
lost offsets exactly; the records that verified were shipped already). Its offset ranges
still count as held: the consumer must not read past them, and under COMMIT_POLICY=upload
nothing past their first offset is committed, until ``wal_bridge replay`` rebuilds the segment
and :meth:`Quarantine.release` sets its files aside (renamed ``*.replayed``, never deleted).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wal_bridge import durable
from wal_bridge.errors import CorruptionError
from wal_bridge.logs import get_logger
from wal_bridge.wal.layout import WalLayout
from wal_bridge.wal.segment import Ranges, ranges_from_json, ranges_to_json

log = get_logger("wal_bridge.wal")

HINT = "run `wal_bridge replay --quarantined` to re-fetch this range from Kafka"
LOSS_HINT = ("these offsets are lost: re-produce them if their source still has them, then "
             "`wal_bridge replay --quarantined --accept-loss` releases this entry")


@dataclass(frozen=True)
class QuarantineStatus:
    """How many segments are quarantined and the bytes of their files (for metrics)."""

    segments: int
    bytes: int
    lost_records: int = 0  # offsets a re-fetch found gone from Kafka (hold_lost entries)


class Quarantine:
    """The writer of ``quarantine/`` and the offset ranges it holds, by segment.

    Not thread-safe on its own: the :class:`~wal_bridge.wal.log.Wal` calls it under its index
    lock, which also guards :attr:`ranges`.
    """

    def __init__(self, layout: WalLayout, now_ms: Callable[[], int]) -> None:
        self.layout = layout
        self._now_ms = now_ms
        self.ranges: dict[int, Ranges] = {}  # seq -> the offsets the segment held
        self._bytes: dict[int, int] = {}
        self._lost: dict[int, int] = {}  # seq -> offsets gone from Kafka (hold_lost entries)

    def load(self) -> int:
        """Read what earlier runs quarantined; return the highest segment number (0: none)."""
        for entry in self.layout.read_quarantine():
            ranges: Ranges = {}
            with contextlib.suppress(ValueError, KeyError, TypeError):
                ranges = ranges_from_json(entry.info.get("ranges", []))
            self.ranges[entry.seq] = ranges
            self._bytes[entry.seq] = _size(entry.file)
            lost = entry.info.get("lost")
            if isinstance(lost, list):
                self._lost[entry.seq] = sum(int(i.get("count", 0)) for i in lost
                                            if isinstance(i, dict))
        return max(self.ranges, default=0)

    def set_aside(self, seq: int, error: CorruptionError, ranges: Ranges) -> None:
        """Move segment ``seq``'s damaged file (and any outbox file of it) into quarantine, with
        a reason file saying what is wrong, where (the error's byte offset) and which offsets
        it held. Only a :class:`CorruptionError` puts a segment here."""
        path, reason, offset = error.segment, error.reason, error.offset
        target = self.layout.quarantined(path.name)
        info = {
            "segment": seq, "file": path.name, "reason": reason, "byte_offset": offset,
            "quarantined_at_ms": self._now_ms(), "ranges": ranges_to_json(ranges), "hint": HINT,
        }
        durable.write_atomic(self.layout.reason(seq), json.dumps(info, indent=2).encode())
        durable.rename(path, target)
        # Its converted files leave the outbox with it: nothing would ever ship or delete them.
        for stale in self.layout.outbox_files(seq):
            if stale.exists():
                durable.rename(stale, self.layout.quarantined(stale.name))
        durable.fsync_dir(self.layout.quarantine)
        durable.fsync_dir(path.parent)
        durable.fsync_dir(self.layout.outbox)
        self.ranges[seq] = ranges
        self._bytes[seq] = _size(target)
        log.error("segment_quarantined", segment=seq, reason=reason, offset=offset,
                  path=str(target))

    def hold_lost(self, seq: int, of_segment: int, lost: list[dict[str, Any]],
                  ranges: Ranges) -> None:
        """Keep, under the new number ``seq``, the offsets of segment ``of_segment`` that were
        damaged and that Kafka no longer holds: a reason file with no segment file (the records
        that verified shipped with the salvaged segment). ``lost`` lists them exactly (topic,
        partition, first and last offset, count, why); ``ranges`` is what they span. They count
        as held until ``wal_bridge replay --quarantined --accept-loss`` releases them."""
        info = {
            "segment": seq, "file": "", "of_segment": of_segment,
            "reason": f"damaged in segment {of_segment} and gone from Kafka",
            "byte_offset": None, "quarantined_at_ms": self._now_ms(),
            "ranges": ranges_to_json(ranges), "lost": lost, "hint": LOSS_HINT,
        }
        durable.write_atomic(self.layout.reason(seq), json.dumps(info, indent=2).encode())
        self.ranges[seq] = ranges
        self._bytes[seq] = 0
        self._lost[seq] = sum(int(i["count"]) for i in lost)

    def release(self, seq: int, report: dict[str, Any]) -> None:
        """Segment ``seq`` was rebuilt into new, durable segments: keep ``report`` beside it,
        rename its files ``*.replayed`` (kept, never deleted) and stop counting its offsets."""
        layout = self.layout
        durable.write_atomic(layout.replay_report(seq),
                             json.dumps(report, indent=2, default=str).encode())
        entry = next((e for e in layout.read_quarantine() if e.seq == seq), None)
        if entry is not None and entry.file is not None and entry.file.exists():
            durable.rename(entry.file, layout.replayed(entry.file))
        # Outbox files of the segment (converted before the damage was found) would never be
        # shipped now: keep them beside it instead.
        for stale in layout.outbox_files(seq):
            if stale.exists():
                durable.move(stale, layout.replayed(stale))
        layout.reason(seq).unlink(missing_ok=True)
        durable.fsync_dir(layout.quarantine)
        self.ranges.pop(seq, None)
        self._bytes.pop(seq, None)
        self._lost.pop(seq, None)

    def status(self) -> QuarantineStatus:
        return QuarantineStatus(len(self.ranges), sum(self._bytes.values()),
                                sum(self._lost.values()))


def _size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except FileNotFoundError:
        return 0
