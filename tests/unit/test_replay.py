"""`wal_bridge replay` without a broker: salvage, planning, local rebuilds and shipping."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from wal_bridge.cli import main
from wal_bridge.commands.common import PartitionOffsets
from wal_bridge.commands.replay import missing_runs, split_need
from wal_bridge.config import Destination
from wal_bridge.wal.codec import RecordColumns
from wal_bridge.wal.log import Wal
from wal_bridge.wal.segment import Range, iter_frames, salvage

KEYS = Destination("gs", "bucket", "raw")


def batch(partition: int, first: int, count: int):  # type: ignore[no-untyped-def]
    offsets = list(range(first, first + count))
    return RecordColumns(
        ["events"] * count, [partition] * count, offsets, [1_700_000_000_000] * count,
        [b"k"] * count, [json.dumps({"n": o}).encode() for o in offsets], [None] * count,
    ).to_arrow()


def sealed_wal(root: Path, frames: int = 3, per_frame: int = 10) -> None:
    """A WAL whose first segment is sealed with ``frames`` records frames of one partition."""
    wal = Wal.open(root, keys=KEYS, batch_size=frames * per_frame, instance_id="bridge-a")
    for i in range(frames):
        wal.append(batch(0, i * per_frame, per_frame))
    wal.close()


def corrupt(path: Path, frame_index: int | None) -> None:
    """Flip a byte inside a records frame (or the segment header when ``frame_index`` is None)."""
    data = bytearray(path.read_bytes())
    if frame_index is None:
        data[10] ^= 0xFF
    else:
        frame = list(iter_frames(memoryview(bytes(data))))[frame_index]
        data[frame.offset + 40] ^= 0xFF
    path.write_bytes(bytes(data))


def env(tmp_path: Path) -> dict[str, str]:
    return {"WAL_DIR": str(tmp_path / "wal"), "DESTINATION": f"file://{tmp_path / 'dest'}",
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "BATCH_SIZE": "1000", "METRICS_PORT": "0",
            "LOG_LEVEL": "error"}


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_missing_runs_are_the_offsets_no_good_frame_holds() -> None:
    """The complement of the salvaged offsets inside the segment's range."""
    assert missing_runs(Range(0, 29, 30), [*range(0, 10), *range(20, 25)]) == [(10, 19),
                                                                               (25, 29)]
    assert missing_runs(Range(5, 9, 5), range(5, 10)) == []


def test_salvage_reads_frames_after_the_damage_and_the_seal(tmp_path: Path) -> None:
    """Only the damaged frame is lost; the seal frame still gives the whole range."""
    sealed_wal(tmp_path)
    corrupt(tmp_path / "segments" / "0000000001.sealed", 1)

    found = salvage((tmp_path / "segments" / "0000000001.sealed").read_bytes())
    batches, seal = found.batches, found.seal

    assert [b.column("_offset").to_pylist()[0] for b in batches] == [0, 20]
    assert seal is not None
    assert seal.ranges == {("events", 0): Range(0, 29, 30)}


def test_recovery_asks_kafka_for_exactly_the_damaged_frame(tmp_path: Path) -> None:
    """Recovery keeps the 20 records that verify and re-fetches offsets 10-19, nothing else."""
    sealed_wal(tmp_path)
    corrupt(tmp_path / "segments" / "0000000001.sealed", 1)
    wal = Wal.open(tmp_path, keys=KEYS)

    assert [(s.seq, s.records) for s in wal.snapshot()] == [(1, 20)]
    assert [job.need for job in wal.refetch_jobs()] == [{("events", 0): [(10, 19)]}]
    assert wal.quarantined() == []
    wal.close()


def test_offsets_gone_from_kafka_are_reported_not_fetched() -> None:
    """Below the earliest offset: lost; past the end: lost; the rest: fetched."""
    offsets = {("events", 0): PartitionOffsets("events", 0, earliest=15, latest=40,
                                               committed=None)}
    fetch, lost = split_need({("events", 0): [(10, 19), (35, 44)]}, offsets)
    assert fetch == {("events", 0): [(15, 19), (35, 39)]}
    assert [(x["first_offset"], x["last_offset"], x["count"]) for x in lost] == [
        (10, 14, 5), (40, 44, 5)]
    assert "earliest offset is now 15" in lost[0]["why"]


def test_a_segment_with_a_damaged_header_is_rebuilt_from_its_own_frames(tmp_path: Path) -> None:
    """All frames and the seal survive: no broker needed; the file is kept as .replayed."""
    sealed_wal(tmp_path / "wal")
    corrupt(tmp_path / "wal" / "segments" / "0000000001.sealed", None)

    result = CliRunner().invoke(main, ["replay", "--quarantined"], env=env(tmp_path))

    assert result.exit_code == 0, result.output
    assert "30 records (30 from the file, 0 from Kafka)" in result.output
    qdir = tmp_path / "wal" / "quarantine"
    assert sorted(p.name for p in qdir.iterdir()) == ["0000000001.replayed.json",
                                                      "0000000001.sealed.replayed"]
    report = json.loads((qdir / "0000000001.replayed.json").read_text())
    assert (report["records"], report["from_file"], report["from_kafka"]) == (30, 30, 0)
    assert report["new_segments"] == [2]
    assert "segment header" in report["quarantine"]["reason"]
    landed = [pq.read_table(p) for p in (tmp_path / "dest" / "raw").rglob("*.parquet")]
    offsets = sorted(o for t in landed for o in t.column("_kafka_offset").to_pylist())
    assert offsets == list(range(30))
    assert list((tmp_path / "wal" / "segments").iterdir()) == []


def test_sealed_segments_are_converted_and_shipped_under_their_seal_keys(tmp_path: Path) -> None:
    """Replay --all ships pending segments to the keys fixed at seal time and truncates."""
    wal = Wal.open(tmp_path / "wal", keys=KEYS, batch_size=10, instance_id="bridge-a")
    wal.append(batch(0, 0, 25))
    keys = [s.seal.key for s in wal.snapshot() if s.seal is not None]
    wal.close()

    result = CliRunner().invoke(main, ["replay", "--all"], env=env(tmp_path))

    assert result.exit_code == 0, result.output
    assert len(keys) == 2
    for key in keys:
        assert (tmp_path / "dest" / key).exists()
    landed = sorted((tmp_path / "dest" / "raw").rglob("*.parquet"))
    assert len(landed) == 3  # the open segment was sealed at open, as every start does
    state = json.loads((tmp_path / "wal" / "state.json").read_text())
    assert state["shipped"] == [{"topic": "events", "partition": 0, "next_offset": 25}]


def test_replay_refuses_while_the_wal_is_locked(tmp_path: Path) -> None:
    """A running bridge holds the lock: replay exits 3 and says to stop it first."""
    wal = Wal.open(tmp_path / "wal", keys=KEYS, batch_size=10)
    wal.append(batch(0, 0, 10))
    try:
        result = CliRunner().invoke(main, ["replay", "--all"], env=env(tmp_path))
    finally:
        wal.close()
    assert result.exit_code == 3
    assert "stop that bridge first" in result.output
    assert "retries stuck segments every 60 s" in result.output


def test_dry_run_changes_nothing_and_says_what_it_would_do(tmp_path: Path) -> None:
    """The plan lists each segment's action; not one file changes."""
    wal = Wal.open(tmp_path / "wal", keys=KEYS, batch_size=10)
    wal.append(batch(0, 0, 15))
    wal.close()
    before = tree(tmp_path)

    result = CliRunner().invoke(main, ["replay", "--all", "--dry-run"], env=env(tmp_path))

    assert result.exit_code == 0, result.output
    assert "0000000001  sealed" in result.output
    assert "convert, upload to raw/dt=" in result.output
    assert "seal (as at every start), convert, upload" in result.output
    assert tree(tmp_path) == before


@pytest.mark.parametrize("args", [[], ["abc"]])
def test_replay_needs_a_target(tmp_path: Path, args: list[str]) -> None:
    """No target, or a target that is not a segment number, is a usage error."""
    result = CliRunner().invoke(main, ["replay", *args], env=env(tmp_path))
    assert result.exit_code == 2


def test_an_unknown_segment_fails(tmp_path: Path) -> None:
    """Naming a segment the WAL does not hold exits 1 and says so."""
    Wal.open(tmp_path / "wal", keys=KEYS).close()
    result = CliRunner().invoke(main, ["replay", "42"], env=env(tmp_path))
    assert result.exit_code == 1
    assert "no such segment" in result.output
