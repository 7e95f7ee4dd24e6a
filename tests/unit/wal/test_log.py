"""The WAL directory: appends, sealing rules, recovery decisions, the lock and the identity."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from wal_bridge.config import Destination
from wal_bridge.errors import ConfigError, WalLockedError
from wal_bridge.wal.codec import SEGMENT_HEADER_SIZE, RecordColumns
from wal_bridge.wal.log import Wal
from wal_bridge.wal.segment import Range, scan

KEYS = Destination("gs", "bucket", "raw")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def batch(partition: int, first: int, count: int, topic: str = "events"):  # type: ignore[no-untyped-def]
    offsets = list(range(first, first + count))
    return RecordColumns(
        [topic] * count, [partition] * count, offsets, [1_700_000_000_000 + o for o in offsets],
        [None] * count, [json.dumps({"n": o}).encode() for o in offsets], [None] * count,
    ).to_arrow()


def open_wal(root: Path, **kwargs) -> Wal:  # type: ignore[no-untyped-def]
    kwargs.setdefault("batch_size", 10)
    return Wal.open(root, keys=KEYS, **kwargs)


def files(root: Path, sub: str) -> list[str]:
    return sorted(p.name for p in (root / sub).iterdir())


def test_a_batch_crossing_the_size_limit_is_split_and_sealed(tmp_path: Path) -> None:
    """Segments hold exactly BATCH_SIZE records; the remainder starts the next segment."""
    wal = open_wal(tmp_path)
    wal.append(batch(0, 0, 25))
    states = [(s.seq, s.state, s.records) for s in wal.snapshot()]
    assert states == [(1, "sealed", 10), (2, "sealed", 10), (3, "open", 5)]
    assert wal.snapshot()[0].seal is not None
    assert wal.snapshot()[0].seal.ranges == {("events", 0): Range(0, 9, 10)}  # type: ignore[union-attr]
    wal.close()


def test_the_time_trigger_seals_a_partial_segment(tmp_path: Path) -> None:
    """A segment whose first record is BATCH_TIMEOUT old is sealed even with no new records."""
    clock = Clock()
    wal = open_wal(tmp_path, batch_timeout=60, monotonic=clock)
    assert not wal.seal_if_due()  # nothing to seal yet
    wal.append(batch(0, 0, 3))
    clock.now += 59.9
    assert not wal.seal_if_due()
    clock.now += 0.2
    assert wal.seal_if_due()
    assert [(s.state, s.records) for s in wal.snapshot()] == [("sealed", 3)]
    wal.close()


def test_object_keys_follow_the_documented_layout(tmp_path: Path) -> None:
    """The key is {prefix}/dt={YYYY-MM-DD}/{timestamp}-{instance}-{segment}.parquet."""
    wal = open_wal(tmp_path, instance_id="bridge-a", now_ms=lambda: 1_795_000_000_123)
    wal.append(batch(0, 0, 10))
    seal = wal.snapshot()[0].seal
    assert seal is not None
    assert seal.key == "raw/dt=2026-11-18/20261118T110640123Z-bridge-a-0000000001.parquet"
    assert seal.dead_letter_key == (
        "dead-letter/dt=2026-11-18/20261118T110640123Z-bridge-a-0000000001.parquet"
    )
    wal.close()


def test_an_open_segment_is_sealed_at_restart_with_its_records(tmp_path: Path) -> None:
    """What a killed process appended is kept, sealed at start, and appending goes on anew."""
    wal = open_wal(tmp_path)
    wal.append(batch(1, 100, 4))
    wal.close()  # no seal: as if killed
    wal = open_wal(tmp_path)
    assert wal.recovery.sealed == [1]
    wal.append(batch(1, 104, 1))
    assert [(s.seq, s.state, s.records) for s in wal.snapshot()] == [
        (1, "sealed", 4), (2, "open", 1),
    ]
    assert wal.next_offsets() == {("events", 1): 105}
    wal.close()


def _segment_with_frames(root: Path, frames: int) -> Path:
    wal = open_wal(root, batch_size=1000)
    for i in range(frames):
        wal.append(batch(0, i * 5, 5))
    wal.close()
    return root / "segments" / "0000000001.open"


@pytest.mark.parametrize("seed", range(5))
def test_a_torn_tail_is_cut_and_kept_beside_the_segment(tmp_path: Path, seed: int) -> None:
    """A tail torn at a random byte of the last frame is truncated; earlier frames survive."""
    path = _segment_with_frames(tmp_path, 3)
    data = path.read_bytes()
    whole = scan(data)
    last_start = scan(data[: whole.size]).valid_end - (whole.valid_end - _frame_start(data, 2))
    cut = random.Random(seed).randrange(last_start + 1, len(data))
    path.write_bytes(data[:cut])
    wal = open_wal(tmp_path, batch_size=1000)
    assert wal.recovery.truncated == [(1, cut - last_start)]
    assert (tmp_path / "segments" / "0000000001.torn").read_bytes() == data[last_start:cut]
    assert [(s.state, s.records) for s in wal.snapshot()] == [("sealed", 10)]
    wal.close()


def _frame_start(data: bytes, index: int) -> int:
    """Byte position of frame ``index`` (0-based) in a segment file."""
    from wal_bridge.wal.segment import iter_frames

    return [f.offset for f in iter_frames(memoryview(data))][index]


def test_garbage_appended_to_an_open_segment_is_cut(tmp_path: Path) -> None:
    """Random bytes after the last good frame are a torn tail, not corruption."""
    path = _segment_with_frames(tmp_path, 2)
    good = path.read_bytes()
    path.write_bytes(good + random.Random(1).randbytes(777))
    wal = open_wal(tmp_path, batch_size=1000)
    assert wal.recovery.truncated == [(1, 777)]
    assert wal.recovery.quarantined == []
    assert wal.snapshot()[0].records == 10
    wal.close()


def test_a_zero_filled_tail_is_cut(tmp_path: Path) -> None:
    """Zeros after the last frame (a crash on a preallocating file system) never parse."""
    path = _segment_with_frames(tmp_path, 1)
    path.write_bytes(path.read_bytes() + bytes(4096))
    wal = open_wal(tmp_path, batch_size=1000)
    assert wal.recovery.truncated == [(1, 4096)]
    wal.close()


def test_a_flipped_bit_before_the_end_quarantines_the_segment(tmp_path: Path) -> None:
    """Damage followed by good frames is corruption: moved to quarantine/ with a reason."""
    path = _segment_with_frames(tmp_path, 3)
    data = bytearray(path.read_bytes())
    second = _frame_start(bytes(data), 1)
    data[second + 40] ^= 0x10
    path.write_bytes(bytes(data))
    wal = open_wal(tmp_path, batch_size=1000)
    assert [seq for seq, _ in wal.recovery.quarantined] == [1]
    assert files(tmp_path, "quarantine") == ["0000000001.open", "0000000001.reason.json"]
    reason = json.loads((tmp_path / "quarantine" / "0000000001.reason.json").read_text())
    assert reason["byte_offset"] == second
    assert "checksum" in reason["reason"]
    assert reason["ranges"] == [
        {"topic": "events", "partition": 0, "first_offset": 0, "last_offset": 4, "records": 5}
    ]
    assert wal.snapshot() == []
    # The quarantined range still counts: the consumer must not read past what it may hold.
    assert wal.next_offsets() == {("events", 0): 5}
    assert wal.unshipped_offsets() == {("events", 0): 0}
    wal.close()


@pytest.mark.parametrize("where", ["middle", "end"])
def test_a_damaged_sealed_segment_is_salvaged_not_quarantined(tmp_path: Path, where: str) -> None:
    """A flipped bit in a sealed segment's only records frame leaves its offsets to re-fetch;
    one in its seal frame keeps every record under a new seal. Nothing is quarantined."""
    wal = open_wal(tmp_path, batch_size=10)
    wal.append(batch(0, 0, 10))
    wal.close()
    path = tmp_path / "segments" / "0000000001.sealed"
    data = bytearray(path.read_bytes())
    data[SEGMENT_HEADER_SIZE + 30 if where == "middle" else len(data) - 3] ^= 0x01
    path.write_bytes(bytes(data))
    wal = open_wal(tmp_path)
    assert wal.recovery.quarantined == []
    assert (tmp_path / "segments" / "0000000001.damaged").read_bytes() == bytes(data)
    if where == "middle":
        assert wal.snapshot() == []
        assert [job.need for job in wal.refetch_jobs()] == [{("events", 0): [(0, 9)]}]
        assert wal.next_offsets() == {("events", 0): 10}
        assert wal.unshipped_offsets() == {("events", 0): 0}
    else:
        assert [(s.records, s.ranges) for s in wal.snapshot()] == [
            (10, {("events", 0): Range(0, 9, 10)})]
        assert wal.refetch_jobs() == []
        assert scan(path.read_bytes()).error is None
    wal.close()


def test_a_segment_with_a_bad_magic_number_is_quarantined(tmp_path: Path) -> None:
    """A file that is not a WAL segment is never read as one, nor deleted."""
    path = _segment_with_frames(tmp_path, 1)
    path.write_bytes(b"NOTAWAL!" + path.read_bytes()[8:])
    wal = open_wal(tmp_path)
    assert wal.recovery.quarantined[0][0] == 1
    assert "magic" in wal.recovery.quarantined[0][1]
    wal.close()


def test_a_crash_between_seal_frame_and_rename_keeps_the_key(tmp_path: Path) -> None:
    """An open segment that already ends in a seal frame is renamed, keeping its object key."""
    wal = open_wal(tmp_path, batch_size=5)
    wal.append(batch(0, 0, 5))
    key = wal.snapshot()[0].seal.key  # type: ignore[union-attr]
    wal.close()
    sealed = tmp_path / "segments" / "0000000001.sealed"
    sealed.rename(sealed.with_suffix(".open"))
    wal = open_wal(tmp_path, batch_size=5)
    assert wal.recovery.sealed == []
    assert [(s.state, s.seal.key) for s in wal.snapshot()] == [("sealed", key)]  # type: ignore[union-attr]
    wal.close()


def test_leftover_temp_files_and_empty_segments_are_removed(tmp_path: Path) -> None:
    """Temp files of interrupted writes and segments without records do not survive a start."""
    wal = open_wal(tmp_path)
    wal.close()
    (tmp_path / "outbox" / ".0000000001.parquet.123.tmp").write_bytes(b"partial")
    (tmp_path / "segments" / "0000000007.open").write_bytes(b"WALB")  # torn at creation
    wal = open_wal(tmp_path)
    assert wal.recovery.removed_temp == 1
    assert wal.recovery.removed_empty == 1
    assert files(tmp_path, "outbox") == []
    assert files(tmp_path, "segments") == []
    wal.append(batch(0, 0, 1))
    assert wal.snapshot()[0].seq == 8  # sequence numbers are never reused
    wal.close()


def test_shipping_records_offsets_and_deletes_the_files(tmp_path: Path) -> None:
    """After a shipped segment is deleted, its offsets still steer the consumer's start."""
    wal = open_wal(tmp_path, batch_size=5)
    wal.append(batch(2, 40, 5))
    tmp = tmp_path / "outbox" / "x.tmp"
    tmp.write_bytes(b"parquet")
    wal.mark_converted(1, tmp)
    assert [s.seq for s in wal.to_ship()] == [1]
    wal.mark_shipped(1)
    assert files(tmp_path, "segments") == []
    assert files(tmp_path, "outbox") == []
    wal.close()
    wal = open_wal(tmp_path, batch_size=5)
    assert wal.next_offsets() == {("events", 2): 45}
    assert wal.unshipped_offsets() == {}
    wal.append(batch(2, 45, 1))
    assert wal.snapshot()[0].seq == 2
    wal.close()


def test_unshipped_offsets_are_the_first_record_not_yet_shipped(tmp_path: Path) -> None:
    """COMMIT_POLICY=upload may commit up to, and not past, the oldest unshipped record."""
    wal = open_wal(tmp_path, batch_size=5)
    wal.append(batch(0, 0, 7))
    wal.append(batch(1, 3, 2))
    assert wal.unshipped_offsets() == {("events", 0): 0, ("events", 1): 3}
    assert wal.next_offsets() == {("events", 0): 7, ("events", 1): 5}
    wal.close()


def test_a_second_process_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    """The directory lock names the holder and tells the operator what to do."""
    wal = open_wal(tmp_path)
    with pytest.raises(WalLockedError, match=r"in use by pid \d+.*own WAL_DIR"):
        open_wal(tmp_path)
    wal.close()
    open_wal(tmp_path).close()  # released on close


def test_the_instance_identity_lives_with_the_directory(tmp_path: Path) -> None:
    """The identity is fixed at first start; another INSTANCE_ID for the same WAL is refused."""
    first = open_wal(tmp_path)
    identity = first.instance_id
    first.close()
    again = open_wal(tmp_path)
    assert again.instance_id == identity
    again.close()
    with pytest.raises(ConfigError, match="INSTANCE_ID='other'"):
        open_wal(tmp_path, instance_id="other")


class FullDiskAfter:
    """Stands in for the WAL's low-level write: fails with ENOSPC after ``writes`` writes."""

    def __init__(self, writes: int) -> None:
        self.writes = writes
        from wal_bridge.wal import log as module

        self.real = module._write_all

    def __call__(self, fd: int, data: bytes) -> None:
        import errno as errno_module
        import os

        if self.writes <= 0:
            self.real(fd, data[: len(data) // 2])  # a partial write, as a full disk leaves
            raise OSError(errno_module.ENOSPC, os.strerror(errno_module.ENOSPC))
        self.writes -= 1
        self.real(fd, data)


def test_a_full_disk_keeps_a_durable_prefix_and_rolls_back_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On ENOSPC the append reports the durable prefix; the rest can be appended later."""
    from wal_bridge.wal import log as module

    wal = open_wal(tmp_path, batch_size=10)
    wal.append(batch(0, 0, 4))
    # Room for the rest of segment 1 (one frame) and its seal frame, then the disk is full.
    monkeypatch.setattr(module, "_write_all", FullDiskAfter(writes=2))
    done = wal.append(batch(0, 4, 12))
    assert done == 6
    assert wal.disk_full is not None
    monkeypatch.undo()
    assert wal.append(batch(0, 4 + done, 12 - done)) == 6
    assert wal.disk_full is None
    wal.close()
    wal = open_wal(tmp_path, batch_size=10)
    segments = wal.snapshot()
    assert [s.records for s in segments] == [10, 6]
    assert sum(r.count for s in segments for r in s.ranges.values()) == 16
    assert wal.next_offsets() == {("events", 0): 16}
    wal.close()


def test_a_seal_that_hits_a_full_disk_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full segment whose seal did not fit stays durable and is sealed once there is room."""
    from wal_bridge.wal import log as module

    wal = open_wal(tmp_path, batch_size=5)
    monkeypatch.setattr(module, "_write_all", FullDiskAfter(writes=2))  # header + records only
    assert wal.append(batch(0, 0, 5)) == 5
    assert [(s.state, s.records) for s in wal.snapshot()] == [("open", 5)]
    monkeypatch.undo()
    assert wal.append(batch(0, 5, 2)) == 2
    assert [(s.state, s.records) for s in wal.snapshot()] == [("sealed", 5), ("open", 2)]
    wal.close()
