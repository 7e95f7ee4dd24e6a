"""Salvage: what a damaged sealed segment still holds, and which offsets must come from Kafka.

Pure: bytes in, an :class:`Inventory` and a :class:`Salvage` out, so that every decision of
:mod:`~wal_bridge.wal.recovery` can be tested on hand-made bytes. Nothing here reads a file.

A segment's bytes are looked at frame by frame (a frame is found again at the next frame magic
after damage, see :func:`~wal_bridge.wal.segment.frames_from`):

- every records frame whose CRC holds and whose Arrow content decodes is *kept*;
- the first seal frame whose CRC holds ends the segment: any byte after it is *after the seal*
  (cut off and kept aside, like an open segment's torn tail);
- every other byte before the seal frame (or the end of the file) is *damaged*: a records frame
  or a seal frame that no longer verifies.

The offsets the damaged bytes held (:attr:`Salvage.missing`) are the seal frame's ranges minus
the kept records, when the seal frame verifies. When it does not, they are read from the
neighbouring frames: per partition, the offsets strictly between the last kept offset before a
damaged region and the first kept offset after it (the neighbouring segments give the bounds at
the segment's ends). A damaged region that is exactly one seal frame (its magic, kind and
length still match) held no record. Offsets in those runs that Kafka never had (compaction,
transaction markers) are not missing: the re-fetch reads what Kafka has.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import pyarrow as pa

from wal_bridge.wal.codec import (
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    SEGMENT_HEADER_SIZE,
    DecodeError,
    FrameKind,
    decode_records,
    decode_segment_header,
    encode_frame,
    encode_records,
    encode_segment_header,
)
from wal_bridge.wal.segment import (
    Range,
    Ranges,
    SealInfo,
    TopicPartition,
    batch_ranges,
    frames_from,
    merge_ranges,
)

Run = tuple[int, int]  # first and last offset, inclusive
Runs = dict[TopicPartition, list[Run]]


@dataclass
class Kept:
    """One records frame that verifies: where it is and what it holds."""

    offset: int
    end: int
    batch: pa.RecordBatch
    ranges: Ranges


@dataclass
class Inventory:
    """What the bytes of one segment hold, frame by frame (see the module docstring).

    ``damaged`` lists ``(start, end)`` byte regions before the seal frame that no good frame
    covers; ``after_seal`` is the byte position just past the seal frame when bytes follow it.
    """

    seq: int
    created_ms: int
    size: int
    kept: list[Kept] = field(default_factory=list)
    seal: SealInfo | None = None
    seal_offset: int | None = None
    seal_end: int | None = None
    damaged: list[tuple[int, int]] = field(default_factory=list)
    after_seal: int | None = None

    @property
    def whole(self) -> bool:
        """Nothing to salvage: every byte belongs to a good frame and the seal frame is last."""
        return self.seal is not None and not self.damaged and self.after_seal is None

    @property
    def records(self) -> int:
        return sum(k.batch.num_rows for k in self.kept)

    @property
    def batches(self) -> list[pa.RecordBatch]:
        return [k.batch for k in self.kept]

    def kept_ranges(self) -> Ranges:
        ranges: Ranges = {}
        for k in self.kept:
            merge_ranges(ranges, k.ranges)
        return ranges

    def kept_offsets(self) -> dict[TopicPartition, list[int]]:
        """Per partition, every offset a kept frame holds."""
        out: dict[TopicPartition, list[int]] = {}
        for k in self.kept:
            batch = k.batch
            topics = batch.column("_topic").dictionary_decode().to_pylist()
            for t, p, o in zip(topics, batch.column("_partition").to_pylist(),
                               batch.column("_offset").to_pylist(), strict=True):
                out.setdefault((t, p), []).append(o)
        return out


def inventory(data: bytes) -> Inventory:
    """Sort a segment's bytes into kept frames, the seal frame, damaged regions and the bytes
    after the seal frame. Raises DecodeError when the segment header does not verify."""
    view = memoryview(data)
    seq, created_ms = decode_segment_header(view)
    inv = Inventory(seq, created_ms, len(data))
    covered = SEGMENT_HEADER_SIZE
    for frame in frames_from(view, SEGMENT_HEADER_SIZE):
        if frame.kind is FrameKind.SEAL:
            try:
                seal = SealInfo.from_json(frame.body)
            except (ValueError, KeyError, TypeError):
                continue  # a seal frame whose JSON does not read is damage like any other
            if frame.offset > covered:
                inv.damaged.append((covered, frame.offset))
            inv.seal, inv.seal_offset, inv.seal_end = seal, frame.offset, frame.end
            covered = frame.end
            break
        try:
            batch = decode_records(frame)
        except DecodeError:
            continue
        if frame.offset > covered:
            inv.damaged.append((covered, frame.offset))
        inv.kept.append(Kept(frame.offset, frame.end, batch, batch_ranges(batch)))
        covered = frame.end
    if inv.seal is None:
        if covered < len(data):
            inv.damaged.append((covered, len(data)))
    elif covered < len(data):
        inv.after_seal = covered
    return inv


def looks_like_seal_frame(data: bytes, start: int, end: int) -> bool:
    """Is the damaged region ``data[start:end]`` at the end of a segment exactly one seal frame:
    its header's magic and kind are a seal frame's, and its length ends it at ``end`` (or past
    it: a seal frame cut short). Only its checksum or JSON fails; it held no record."""
    if end - start < FRAME_HEADER_SIZE:
        return False
    magic, kind, length = struct.unpack_from("<4sB3xI", data, start)
    return bool(magic == FRAME_MAGIC and kind == FrameKind.SEAL
                and start + FRAME_HEADER_SIZE + length >= end)


def missing_runs(rng: Range, have: Iterable[int]) -> list[Run]:
    """The offsets of ``rng`` not in ``have``, as inclusive runs."""
    runs: list[Run] = []
    nxt = rng.first
    for offset in sorted({o for o in have if rng.first <= o <= rng.last}):
        if offset > nxt:
            runs.append((nxt, offset - 1))
        nxt = offset + 1
    if nxt <= rng.last:
        runs.append((nxt, rng.last))
    return runs


def missing_from_seal(inv: Inventory) -> Runs:
    """The seal frame's offsets that no kept frame holds (the seal's count confirms a
    partition whose records were all read back)."""
    assert inv.seal is not None
    have = inv.kept_offsets()
    out: Runs = {}
    for tp, rng in sorted(inv.seal.ranges.items()):
        got = have.get(tp, [])
        if len(set(got)) >= rng.count:
            continue
        runs = missing_runs(rng, got)
        if runs:
            out[tp] = runs
    return out


class Ambiguous(ValueError):
    """The offsets that damaged bytes held cannot be bounded: no seal frame, and no
    neighbouring frame or segment on one side of the damage for some partition."""


def missing_from_neighbours(inv: Inventory, data: bytes, before: Mapping[TopicPartition, int],
                            after: Mapping[TopicPartition, int]) -> Runs:
    """The offsets the damaged regions of a segment without a seal frame held, bounded by the
    kept frames around each region; at the segment's ends by ``before`` (per partition, the
    last offset of the segments before it) and ``after`` (the first offset of the segments
    after it). Raises :class:`Ambiguous` when a bound is missing."""
    regions = [(a, b) for a, b in inv.damaged
               if not (b == inv.size and looks_like_seal_frame(data, a, b))]
    partitions = set(inv.kept_ranges()) | set(before) | set(after)
    out: Runs = {}
    for start, end in regions:
        for tp in sorted(partitions):
            lows = [k.ranges[tp].last for k in inv.kept if k.end <= start and tp in k.ranges]
            highs = [k.ranges[tp].first for k in inv.kept if k.offset >= end and tp in k.ranges]
            low = max(lows) if lows else before.get(tp)
            high = min(highs) if highs else after.get(tp)
            if low is None and high is None:
                continue  # a partition of a neighbouring segment only
            if low is None or high is None:
                raise Ambiguous(
                    f"bytes {start}..{end} are damaged and {tp[0]}[{tp[1]}] has no known "
                    f"offset {'before' if low is None else 'after'} them")
            if high - low > 1:
                out.setdefault(tp, []).append((low + 1, high - 1))
    return out


def subtract_runs(runs: Runs, minus: Runs) -> Runs:
    """The offsets of ``runs`` that ``minus`` does not hold, as runs."""
    out: Runs = {}
    for tp, items in runs.items():
        cut = sorted(minus.get(tp, []))
        for a, b in items:
            pos = a
            for c, d in cut:
                if d < pos or c > b:
                    continue
                if c > pos:
                    out.setdefault(tp, []).append((pos, c - 1))
                pos = max(pos, d + 1)
            if pos <= b:
                out.setdefault(tp, []).append((pos, b))
    return out


def runs_to_ranges(runs: Runs) -> Ranges:
    """Runs as the ranges the WAL holds (first, last, and the count the runs span)."""
    out: Ranges = {}
    for tp, items in runs.items():
        for a, b in items:
            merge_ranges(out, {tp: Range(a, b, b - a + 1)})
    return out


def runs_to_json(runs: Runs) -> list[dict[str, object]]:
    return [{"topic": t, "partition": p, "first_offset": a, "last_offset": b,
             "count": b - a + 1} for (t, p), items in sorted(runs.items()) for a, b in items]


def runs_from_json(items: Iterable[Mapping[str, object]]) -> Runs:
    out: Runs = {}
    for i in items:
        tp = (str(i["topic"]), int(str(i["partition"])))
        out.setdefault(tp, []).append((int(str(i["first_offset"])), int(str(i["last_offset"]))))
    return out


def run_count(runs: Runs) -> int:
    return sum(b - a + 1 for items in runs.values() for a, b in items)


def encode_sealed(seq: int, created_ms: int, batches: Iterable[pa.RecordBatch],
                  seal: SealInfo) -> bytes:
    """The bytes of a whole sealed segment: header, one records frame per batch, ``seal``.

    Written in one :func:`wal_bridge.durable.write_atomic`, so a crash leaves either the old
    file or this one. Used for a salvaged segment (its kept frames, with a seal frame that
    says what it now holds) and for the records a re-fetch read from Kafka.
    """
    parts = [encode_segment_header(seq, created_ms)]
    parts += [encode_frame(FrameKind.RECORDS, encode_records(b)) for b in batches if b.num_rows]
    parts.append(encode_frame(FrameKind.SEAL, seal.to_json()))
    return b"".join(parts)


@dataclass
class RefetchJob:
    """Offsets the damaged frames of segment ``of_segment`` held, to be read again from Kafka
    into a new sealed segment numbered ``seq`` (``segments/M.refetch.json``)."""

    seq: int
    of_segment: int
    need: Runs
    reason: str
    byte_offset: int
    created_at_ms: int

    @property
    def records(self) -> int:
        return run_count(self.need)

    def to_json(self) -> dict[str, object]:
        return {"segment": self.seq, "of_segment": self.of_segment,
                "ranges": runs_to_json(self.need), "reason": self.reason,
                "byte_offset": self.byte_offset, "created_at_ms": self.created_at_ms}

    @classmethod
    def from_json(cls, seq: int, raw: Mapping[str, object]) -> RefetchJob:
        ranges = raw.get("ranges", [])
        return cls(seq, int(str(raw["of_segment"])),
                   runs_from_json(ranges if isinstance(ranges, list) else []),
                   str(raw.get("reason", "")), int(str(raw.get("byte_offset", 0))),
                   int(str(raw.get("created_at_ms", 0))))
