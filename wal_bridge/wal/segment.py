"""Segment files: naming, the seal record, and scanning a segment's bytes for recovery.

A segment is named by its sequence number and state: ``0000000042.open`` while it is appended,
``0000000042.sealed`` once its seal frame is written. Scanning is pure: bytes in, a
:class:`ScanResult` out, so every recovery decision can be tested on hand-made bytes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from wal_bridge.errors import CorruptionError
from wal_bridge.wal.codec import (
    FRAME_MAGIC,
    SEGMENT_HEADER_SIZE,
    DecodeError,
    Frame,
    FrameKind,
    Truncated,
    decode_frame,
    decode_records,
    decode_segment_header,
)

OPEN = "open"
SEALED = "sealed"
SEQ_WIDTH = 10

TopicPartition = tuple[str, int]


def segment_name(seq: int, state: str) -> str:
    return f"{seq:0{SEQ_WIDTH}d}.{state}"


def parse_segment_name(name: str) -> tuple[int, str] | None:
    stem, _, state = name.partition(".")
    if state in (OPEN, SEALED) and stem.isdigit() and len(stem) == SEQ_WIDTH:
        return int(stem), state
    return None


@dataclass(frozen=True)
class Range:
    """The offsets of one partition held by a segment: first, last and how many."""

    first: int
    last: int
    count: int

    def merge(self, other: Range) -> Range:
        return Range(min(self.first, other.first), max(self.last, other.last),
                     self.count + other.count)


Ranges = dict[TopicPartition, Range]


def merge_ranges(into: Ranges, more: Ranges) -> None:
    for tp, rng in more.items():
        into[tp] = into[tp].merge(rng) if tp in into else rng


def batch_ranges(batch: pa.RecordBatch) -> Ranges:
    """Per (topic, partition): the first and last offset and the count, computed in Arrow."""
    if batch.num_rows == 0:
        return {}
    table = pa.table(
        {
            "t": batch.column("_topic").dictionary_decode(),
            "p": batch.column("_partition"),
            "o": batch.column("_offset"),
        }
    )
    grouped = table.group_by(["t", "p"], use_threads=False).aggregate(
        [("o", "min"), ("o", "max"), ("o", "count")])
    rows = zip(
        grouped.column("t").to_pylist(), grouped.column("p").to_pylist(),
        grouped.column("o_min").to_pylist(), grouped.column("o_max").to_pylist(),
        grouped.column("o_count").to_pylist(), strict=True,
    )
    return {(t, p): Range(lo, hi, n) for t, p, lo, hi, n in rows}


def ranges_to_json(ranges: Ranges) -> list[dict[str, Any]]:
    return [
        {"topic": t, "partition": p, "first_offset": r.first, "last_offset": r.last,
         "records": r.count}
        for (t, p), r in sorted(ranges.items())
    ]


def ranges_from_json(items: list[dict[str, Any]]) -> Ranges:
    return {
        (i["topic"], int(i["partition"])): Range(
            int(i["first_offset"]), int(i["last_offset"]), int(i["records"])
        )
        for i in items
    }


@dataclass(frozen=True)
class SealInfo:
    """What the seal frame records: fixed at seal time, so converting again gives the same key."""

    segment: int
    instance: str
    key: str
    dead_letter_key: str
    sealed_at_ms: int
    records: int
    ranges: Ranges = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "segment": self.segment, "instance": self.instance, "key": self.key,
                "dead_letter_key": self.dead_letter_key, "sealed_at_ms": self.sealed_at_ms,
                "records": self.records, "ranges": ranges_to_json(self.ranges),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes | memoryview) -> SealInfo:
        raw = json.loads(bytes(data))
        return cls(
            segment=int(raw["segment"]), instance=str(raw["instance"]), key=str(raw["key"]),
            dead_letter_key=str(raw["dead_letter_key"]), sealed_at_ms=int(raw["sealed_at_ms"]),
            records=int(raw["records"]), ranges=ranges_from_json(raw["ranges"]),
        )


@dataclass
class Segment:
    """The WAL's index entry of one segment (active, sealed or converted)."""

    seq: int
    state: str  # OPEN or SEALED
    path: Path
    bytes: int
    records: int
    created_ms: int
    ranges: Ranges = field(default_factory=dict)
    seal: SealInfo | None = None
    converted: bool = False
    parquet_bytes: int = 0
    first_append: float | None = None  # monotonic time of the first record, active only


@dataclass
class ScanResult:
    """What a segment's bytes hold, up to the first problem if there is one."""

    seq: int
    created_ms: int
    size: int
    valid_end: int  # byte position just past the last good frame
    records: int = 0
    frames: int = 0
    ranges: Ranges = field(default_factory=dict)
    seal: SealInfo | None = None
    error: DecodeError | None = None
    # True when no good frame follows the problem: the damage is a torn or garbage tail.
    tail_only: bool = True


def frames_from(data: memoryview, start: int) -> Iterator[Frame]:
    """Every frame whose checksum holds, from ``start`` on: after a bad one, the next is looked
    for at the next frame magic. Damage never stops it; it never raises."""
    raw = data.obj if isinstance(data.obj, bytes) else bytes(data)
    pos = start
    while 0 <= pos < len(data):
        try:
            frame = decode_frame(data, pos)
        except DecodeError:
            pos = raw.find(FRAME_MAGIC, pos + 1)
            continue
        yield frame
        pos = frame.end


def _good_frame_after(data: memoryview, start: int) -> bool:
    """Is there any frame with a valid checksum starting after ``start``?"""
    raw = data.obj if isinstance(data.obj, bytes) else bytes(data)
    return next(frames_from(data, raw.find(FRAME_MAGIC, start + 1)), None) is not None


def iter_frames(data: memoryview) -> Iterator[Frame]:
    """Yield the frames after the segment header; raise DecodeError at the first bad one."""
    pos = SEGMENT_HEADER_SIZE
    while pos < len(data):
        frame = decode_frame(data, pos)
        yield frame
        pos = frame.end


def scan(data: bytes, *, ranges: bool = True) -> ScanResult:
    """Scan a whole segment file's bytes. Raises DecodeError only for a bad segment header."""
    view = memoryview(data)
    seq, created_ms = decode_segment_header(view)
    result = ScanResult(seq=seq, created_ms=created_ms, size=len(data),
                        valid_end=SEGMENT_HEADER_SIZE)
    try:
        for frame in iter_frames(view):
            if result.seal is not None:
                raise DecodeError(frame.offset, "frame after the seal frame")
            if frame.kind is FrameKind.RECORDS:
                batch = decode_records(frame)
                result.records += batch.num_rows
                if ranges:
                    merge_ranges(result.ranges, batch_ranges(batch))
            else:
                try:
                    result.seal = SealInfo.from_json(frame.body)
                except (ValueError, KeyError, TypeError) as exc:
                    raise DecodeError(frame.offset, f"seal frame does not decode: {exc}") from exc
            result.frames += 1
            result.valid_end = frame.end
    except DecodeError as exc:
        result.error = exc
        result.tail_only = isinstance(exc, Truncated) or not _good_frame_after(view, exc.offset)
    return result


def iter_batches(data: bytes) -> Iterator[pa.RecordBatch]:
    """The record batches of a sealed segment; any damage raises DecodeError."""
    view = memoryview(data)
    decode_segment_header(view)
    sealed = False
    for frame in iter_frames(view):
        if sealed:
            raise DecodeError(frame.offset, "frame after the seal frame")
        if frame.kind is FrameKind.SEAL:
            sealed = True
            continue
        yield decode_records(frame)
    if not sealed:
        raise DecodeError(len(data), "segment has no seal frame")


def read_sealed(path: Path) -> list[pa.RecordBatch]:
    """The record batches of the sealed segment file at ``path``.

    Raises CorruptionError, naming the file and the byte offset, for any damage.
    """
    try:
        return list(iter_batches(path.read_bytes()))
    except DecodeError as exc:
        raise CorruptionError(path, exc.offset, exc.reason) from exc


@dataclass
class Salvaged:
    """What a damaged segment still holds: every records frame whose checksum (and Arrow
    content) holds, and its seal, when the seal frame survived."""

    batches: list[pa.RecordBatch] = field(default_factory=list)
    seal: SealInfo | None = None


def salvage(data: bytes) -> Salvaged:
    """Every good frame of a damaged segment, before and after the damage (for replay).

    A damaged segment header is skipped too: frames are then looked for from the first byte.
    """
    view = memoryview(data)
    try:
        decode_segment_header(view)
        start = SEGMENT_HEADER_SIZE
    except DecodeError:
        start = 0
    found = Salvaged()
    for frame in frames_from(view, start):
        if frame.kind is FrameKind.RECORDS:
            with contextlib.suppress(DecodeError):
                found.batches.append(decode_records(frame))
        else:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                found.seal = SealInfo.from_json(frame.body)
    return found
