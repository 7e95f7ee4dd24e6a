"""Segment files: names, scanning real segment bytes (whole and damaged), sealed reads, salvage."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from wal_bridge.config import Destination
from wal_bridge.errors import CorruptionError
from wal_bridge.wal.codec import SEGMENT_HEADER_SIZE, DecodeError, RecordColumns
from wal_bridge.wal.log import Wal
from wal_bridge.wal.segment import (
    OPEN,
    SEALED,
    Range,
    SealInfo,
    batch_ranges,
    iter_frames,
    merge_ranges,
    parse_segment_name,
    read_sealed,
    salvage,
    scan,
    segment_name,
)

KEYS = Destination("gs", "bucket", "raw")


def batch(first: int, count: int, partition: int = 0):  # type: ignore[no-untyped-def]
    offsets = list(range(first, first + count))
    return RecordColumns(
        ["events"] * count, [partition] * count, offsets, [1_700_000_000_000] * count,
        [None] * count, [json.dumps({"n": o}).encode() for o in offsets], [None] * count,
    ).to_arrow()


def segment_bytes(root: Path, *, frames: int = 3, per_frame: int = 5, sealed: bool) -> bytes:
    """A real segment written by the WAL: ``frames`` records frames, sealed or left open."""
    size = frames * per_frame if sealed else 10_000
    wal = Wal.open(root, keys=KEYS, batch_size=size, instance_id="bridge-a")
    for i in range(frames):
        wal.append(batch(i * per_frame, per_frame))
    wal.close()
    return (root / "segments" / segment_name(1, SEALED if sealed else OPEN)).read_bytes()


def starts(data: bytes) -> list[int]:
    return [f.offset for f in iter_frames(memoryview(data))]


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x10
    return bytes(out)


def test_names_round_trip_and_nothing_else_parses() -> None:
    """``0000000042.open`` and ``.sealed`` are segments; torn tails and temp files are not."""
    assert segment_name(42, OPEN) == "0000000042.open"
    assert parse_segment_name("0000000042.sealed") == (42, SEALED)
    for other in ("0000000042.torn", "42.open", ".0000000042.open.1.tmp", "0000000042.parquet"):
        assert parse_segment_name(other) is None


def test_a_whole_sealed_segment_scans_to_its_records_ranges_and_seal(tmp_path: Path) -> None:
    """Every frame verifies; the seal frame names the key and the ranges of all records."""
    data = segment_bytes(tmp_path, sealed=True)
    result = scan(data)
    assert (result.seq, result.records, result.frames) == (1, 15, 4)
    assert (result.error, result.valid_end, result.size) == (None, len(data), len(data))
    assert result.ranges == {("events", 0): Range(0, 14, 15)}
    assert result.seal is not None
    assert result.seal.ranges == result.ranges
    assert result.seal.key.startswith("raw/dt=")
    assert scan(data, ranges=False).ranges == {}  # checksums only: the seal has the ranges


# What recovery is told about each kind of damage: where the good bytes end (at the last frame,
# a middle frame, or the end of what was written), what is wrong, and whether a good frame
# follows it (no: a torn tail, which recovery cuts; yes: corruption, which it quarantines).
Damage = Callable[[bytes, list[int]], bytes]
CORRUPT: list[tuple[str, Damage, str, str, bool]] = [
    ("torn in the last frame", lambda d, s: d[: s[-1] + 20], "runs past the end", "last", True),
    ("torn in a frame header", lambda d, s: d[: s[-1] + 5], "frame header needs", "last", True),
    ("garbage after the end", lambda d, s: d + b"\x01garbage" * 50, "bad frame magic", "end",
     True),
    ("zeros after the end", lambda d, s: d + bytes(4096), "bad frame magic", "end", True),
    ("bad magic in the last frame", lambda d, s: d[: s[-1]] + b"XXXX" + d[s[-1] + 4 :],
     "bad frame magic", "last", True),
    ("flipped bit in a middle frame", lambda d, s: flip(d, s[1] + 40), "checksum", "middle",
     False),
    ("absurd length in a middle frame",
     lambda d, s: d[: s[1] + 8] + struct.pack("<I", 0xFFFF_FFF0) + d[s[1] + 12 :],
     "exceeds", "middle", False),
    ("bad magic in a middle frame", lambda d, s: d[: s[1]] + b"XXXX" + d[s[1] + 4 :],
     "bad frame magic", "middle", False),
]


@pytest.mark.parametrize(("damage", "reason", "at", "tail_only"), [c[1:] for c in CORRUPT],
                         ids=[c[0] for c in CORRUPT])
def test_damage_is_located_and_told_apart_from_a_torn_tail(
    tmp_path: Path, damage: Damage, reason: str, at: str, tail_only: bool
) -> None:
    """The scan keeps every frame before the damage and says whether good frames follow."""
    data = segment_bytes(tmp_path, sealed=False)  # three frames of five records
    frames = starts(data)
    result = scan(damage(data, frames))
    where, records = {"last": (frames[2], 10), "middle": (frames[1], 5),
                      "end": (len(data), 15)}[at]
    assert result.error is not None
    assert reason in result.error.reason, result.error.reason
    assert (result.error.offset, result.valid_end, result.records) == (where, where, records)
    assert result.tail_only is tail_only


def test_a_frame_after_the_seal_frame_is_damage(tmp_path: Path) -> None:
    """A sealed segment ends at its seal frame: a records frame after it is reported there."""
    sealed = segment_bytes(tmp_path / "a", sealed=True)
    extra = segment_bytes(tmp_path / "b", frames=1, sealed=False)[SEGMENT_HEADER_SIZE:]
    result = scan(sealed + extra)
    assert result.error is not None
    assert result.error.reason == "frame after the seal frame"
    assert result.error.offset == len(sealed)


@pytest.mark.parametrize("damage", [lambda d: b"NOTAWAL!" + d[8:], lambda d: flip(d, 10),
                                    lambda d: d[:20]], ids=["magic", "checksum", "short"])
def test_a_bad_segment_header_is_not_scanned(tmp_path: Path, damage: Callable[[bytes], bytes]
                                             ) -> None:
    """A file that does not start with a valid segment header raises at byte 0."""
    with pytest.raises(DecodeError) as caught:
        scan(damage(segment_bytes(tmp_path, sealed=True)))
    assert caught.value.offset == 0


def test_reading_a_damaged_sealed_segment_names_the_file_and_the_byte(tmp_path: Path) -> None:
    """read_sealed wraps the codec's error in a CorruptionError: segment file and offset."""
    data = segment_bytes(tmp_path, sealed=True)
    path = tmp_path / "segments" / "0000000001.sealed"
    assert sum(b.num_rows for b in read_sealed(path)) == 15
    second = starts(data)[1]
    path.write_bytes(flip(data, second + 40))
    with pytest.raises(CorruptionError) as caught:
        read_sealed(path)
    assert (caught.value.segment, caught.value.offset) == (path, second)
    assert "0000000001.sealed: corrupt at byte" in str(caught.value)
    path.write_bytes(data[: starts(data)[-1]])  # whole frames, but no seal frame
    with pytest.raises(CorruptionError, match="no seal frame"):
        read_sealed(path)


def test_salvage_keeps_every_good_frame_around_the_damage(tmp_path: Path) -> None:
    """Frames before and after a damaged one, and the seal, survive; so with a bad header."""
    data = segment_bytes(tmp_path, sealed=True)
    frames = starts(data)
    found = salvage(flip(data, frames[1] + 40))
    assert [b.column("_offset")[0].as_py() for b in found.batches] == [0, 10]
    assert found.seal is not None
    assert found.seal.ranges == {("events", 0): Range(0, 14, 15)}
    headless = salvage(flip(data, 10))
    assert sum(b.num_rows for b in headless.batches) == 15
    assert salvage(b"\x00" * 100).batches == []


def test_seal_info_round_trips_through_json() -> None:
    """The seal frame's JSON gives back the same keys, counts and ranges."""
    info = SealInfo(7, "bridge-a", "raw/k.parquet", "dead-letter/k.parquet", 1_700_000_000_000,
                    12, {("events", 3): Range(10, 21, 12)})
    assert SealInfo.from_json(info.to_json()) == info


def test_ranges_are_grouped_per_partition_and_merge() -> None:
    """First and last offset and the count, per (topic, partition); merging widens them."""
    ranges = batch_ranges(batch(5, 3, partition=1))
    assert ranges == {("events", 1): Range(5, 7, 3)}
    merge_ranges(ranges, batch_ranges(batch(8, 2, partition=1)))
    merge_ranges(ranges, batch_ranges(batch(0, 1, partition=2)))
    assert ranges == {("events", 1): Range(5, 9, 5), ("events", 2): Range(0, 0, 1)}
    assert batch_ranges(batch(0, 0)) == {}
