"""Salvage: each kind of damage to a sealed segment, on real segment bytes, from recovery's
decision to the bucket (Kafka stood in for behind the re-fetch stage's two calls)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pyarrow.parquet as pq
import pytest

from tests.fakes import records_batch
from wal_bridge.config import Destination, Settings
from wal_bridge.conversion import Converter
from wal_bridge.refetch import Fetched, Refetcher, Watermarks
from wal_bridge.sealer import Sealer
from wal_bridge.sink.local import LocalSink
from wal_bridge.uploader import Uploader
from wal_bridge.wal.log import Wal
from wal_bridge.wal.salvage import Runs, inventory, missing_from_neighbours
from wal_bridge.wal.segment import iter_frames, scan

KEYS = Destination("gs", "bucket", "raw")
TP = ("events", 0)
# Segment 1: three records frames of five records (offsets 0-14); segment 2: offsets 15-29.
TOPIC_END = 30


@dataclass
class Kafka:
    """The topic as the re-fetch stage sees it: offsets ``earliest`` .. 29 still held."""

    earliest: int = 0
    asked: list[Runs] | None = None

    def offsets(self, _settings: Settings, _topics: Iterable[str]) -> dict[Any, Watermarks]:
        return {TP: Watermarks(self.earliest, TOPIC_END)}

    def fetch(self, _settings: Settings, runs: Runs) -> Fetched:
        self.asked = [*(self.asked or []), runs]
        return Fetched([records_batch(a, b - a + 1) for items in runs.values() for a, b in items])


def wal_of_two_segments(root: Path, *, convert_first: bool) -> Path:
    """A stopped WAL with two sealed segments (segment 1 converted when asked); returns
    segment 1's path."""
    wal = Wal.open(root, keys=KEYS, batch_size=15, instance_id="bridge-a")
    for first in range(0, TOPIC_END, 5):
        wal.append(records_batch(first, 5))
    if convert_first:
        sealer = Sealer(wal, Converter.open(1024, root, None))
        sealer.convert(wal.snapshot()[0])
    wal.close()
    return root / "segments" / "0000000001.sealed"


def frame_at(data: bytes, index: int) -> int:
    """Byte position of frame ``index`` (0-2 records, 3 the seal frame)."""
    return [f.offset for f in iter_frames(memoryview(data))][index]


def flip(index: int) -> Callable[[bytes], bytes]:
    def damage(data: bytes) -> bytes:
        out = bytearray(data)
        out[frame_at(data, index) + 40] ^= 0x04
        return bytes(out)
    return damage


def flip_two(*indices: int) -> Callable[[bytes], bytes]:
    def damage(data: bytes) -> bytes:
        out = bytearray(data)
        for i in indices:
            out[frame_at(data, i) + 40] ^= 0x04
        return bytes(out)
    return damage


GARBAGE = random.Random(7).randbytes(3000)

# (name, damage to segment 1's file, segment 1 converted first?, damage to its Parquet file,
#  the recovery decision, offsets of segment 1 that ship from the WAL, offsets re-fetched)
TABLE: list[tuple[str, Callable[[bytes], bytes], bool, Callable[[bytes], bytes] | None, str,
                  list[int], list[tuple[int, int]]]] = [
    ("zeros after the seal frame", lambda d: d + bytes(4096), False, None,
     "cut_after_seal", list(range(15)), []),
    ("garbage after the seal frame", lambda d: d + GARBAGE, False, None,
     "cut_after_seal", list(range(15)), []),
    ("flipped byte in the first records frame", flip(0), False, None,
     "rewrite", list(range(5, 15)), [(0, 4)]),
    ("flipped byte in the middle records frame", flip(1), False, None,
     "rewrite", [*range(5), *range(10, 15)], [(5, 9)]),
    ("flipped byte in the last records frame", flip(2), False, None,
     "rewrite", list(range(10)), [(10, 14)]),
    ("damaged seal frame", flip(3), False, None, "rewrite", list(range(15)), []),
    ("damaged seal frame and last records frame", flip_two(2, 3), False, None,
     "rewrite", list(range(10)), [(10, 14)]),
    ("truncated converted Parquet file", lambda d: d, True, lambda p: p[: len(p) // 2],
     "reconvert", list(range(15)), []),
    ("damaged segment, complete Parquet file", flip(1), True, None,
     "ship_converted", list(range(15)), []),
]


def stages(wal: Wal, root: Path, bucket: Path, kafka: Kafka) -> tuple[Sealer, Uploader, Refetcher]:
    """The sealer, an uploader into the local ``bucket`` and a re-fetcher reading ``kafka``."""
    sealer = Sealer(wal, Converter.open(1024, root, None))
    uploader = Uploader(wal, LocalSink(Destination("file", str(bucket), "raw")),
                        threading.Event(), initial_backoff=0.01, max_backoff=0.02)
    refetcher = Refetcher(cast(Settings, None), wal, fetch=kafka.fetch, offsets=kafka.offsets)
    return sealer, uploader, refetcher


def drain(sealer: Sealer, uploader: Uploader, refetcher: Refetcher) -> None:
    """Run the stages until none of them finds work."""
    for _ in range(50):
        if not (refetcher.step() | sealer.step() | uploader.step()):
            return
    raise AssertionError("the stages never settled")


def landed(bucket: Path) -> list[int]:
    """Every offset in the bucket's data files, with repeats."""
    return sorted(o for p in bucket.rglob("*.parquet") if "dead-letter" not in p.parts
                  for o in pq.read_table(p).column("_kafka_offset").to_pylist())


@pytest.mark.parametrize(("damage", "converted", "parquet_damage", "decision", "from_wal",
                          "refetched"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_each_damage_is_salvaged_and_every_record_lands_once(
    tmp_path: Path, damage: Callable[[bytes], bytes], converted: bool,
    parquet_damage: Callable[[bytes], bytes] | None, decision: str, from_wal: list[int],
    refetched: list[tuple[int, int]],
) -> None:
    """Recovery keeps every record that verifies, asks Kafka for exactly the damaged offsets,
    quarantines nothing, and the bucket ends with each of the 30 records once."""
    root = tmp_path / "wal"
    path = wal_of_two_segments(root, convert_first=converted)
    original = path.read_bytes()
    path.write_bytes(damage(original))
    parquet = root / "outbox" / "0000000001.parquet"
    if parquet_damage is not None:
        parquet.write_bytes(parquet_damage(parquet.read_bytes()))

    wal = Wal.open(root, keys=KEYS, batch_size=15, instance_id="bridge-a")
    report = wal.recovery
    assert report.quarantined == []
    assert [d["decision"] for d in report.salvaged if d["segment"] == 1] == [decision]
    first = next((s for s in wal.snapshot() if s.seq == 1), None)
    held = first.records if first is not None else 0
    assert held == len(from_wal)
    assert [j.need for j in wal.refetch_jobs()] == ([{TP: refetched}] if refetched else [])
    if decision == "cut_after_seal":
        assert path.read_bytes() == original
        assert (root / "segments" / "0000000001.torn").read_bytes() == damage(original)[
            len(original):]
    if decision == "rewrite":
        assert (root / "segments" / "0000000001.damaged").read_bytes() == damage(original)
        assert scan(path.read_bytes()).error is None
        # WAL records ship from the WAL: the rewritten file holds exactly the kept offsets.
        assert sorted(o for b in inventory(path.read_bytes()).batches
                      for o in b.column("_offset").to_pylist()) == from_wal

    kafka = Kafka()
    bucket = tmp_path / "bucket"
    sealer, uploader, refetcher = stages(wal, root, bucket, kafka)
    drain(sealer, uploader, refetcher)

    assert kafka.asked == ([{TP: refetched}] if refetched else None)
    assert landed(bucket) == list(range(TOPIC_END))
    assert wal.snapshot() == []
    assert wal.refetch_jobs() == []
    assert wal.quarantined() == []
    wal.close()


def test_a_range_gone_from_kafka_is_reported_and_held_in_quarantine(tmp_path: Path) -> None:
    """Offsets Kafka no longer holds are quarantined exactly (topic, partition, offsets) and
    counted; the verified records and what Kafka still holds land, nothing waits."""
    root = tmp_path / "wal"
    path = wal_of_two_segments(root, convert_first=False)
    path.write_bytes(flip(0)(path.read_bytes()))  # offsets 0-4 damaged
    wal = Wal.open(root, keys=KEYS, batch_size=15, instance_id="bridge-a")
    kafka = Kafka(earliest=3)  # 0-2 deleted by retention, 3-4 still there
    bucket = tmp_path / "bucket"
    sealer, uploader, refetcher = stages(wal, root, bucket, kafka)
    drain(sealer, uploader, refetcher)

    assert kafka.asked == [{TP: [(3, 4)]}]
    assert landed(bucket) == list(range(3, TOPIC_END))
    (lost_seq,) = wal.quarantined()
    assert wal.quarantine_status().lost_records == 3
    assert refetcher.metrics.value("wal_bridge_refetch_lost_records_total") == 3
    (entry,) = wal.layout.read_quarantine()
    assert entry.seq == lost_seq
    assert entry.file is None
    assert [(i["topic"], i["partition"], i["first_offset"], i["last_offset"])
            for i in entry.info["lost"]] == [("events", 0, 0, 2)]
    # The lost offsets still count as held: nothing past them is committed under upload.
    assert wal.unshipped_offsets() == {TP: 0}
    wal.close()


def test_a_crash_after_the_refetched_segment_is_written_lands_it_once(tmp_path: Path) -> None:
    """A re-fetched segment on disk beside its job (a crash before the job's removal) is taken
    as done at the next start: its records are not read a second time."""
    root = tmp_path / "wal"
    path = wal_of_two_segments(root, convert_first=False)
    path.write_bytes(flip(1)(path.read_bytes()))
    wal = Wal.open(root, keys=KEYS, batch_size=15, instance_id="bridge-a")
    (job,) = wal.refetch_jobs()
    job_file = wal.layout.refetch(job.seq).read_bytes()
    wal.complete_refetch(job, [records_batch(5, 5)], [])
    wal.close()
    (root / "segments" / f"{job.seq:010d}.refetch.json").write_bytes(job_file)  # the crash

    wal = Wal.open(root, keys=KEYS, batch_size=15, instance_id="bridge-a")
    assert wal.refetch_jobs() == []
    assert sorted((s.seq, s.records) for s in wal.snapshot()) == [(1, 10), (2, 15),
                                                                 (job.seq, 5)]
    wal.close()


def test_a_crash_before_the_rewrite_reuses_the_job(tmp_path: Path) -> None:
    """Recovery interrupted between the job and the rewrite decides again with the same job:
    one re-fetch, never two."""
    root = tmp_path / "wal"
    path = wal_of_two_segments(root, convert_first=False)
    damaged = flip(2)(path.read_bytes())
    path.write_bytes(damaged)
    Wal.open(root, keys=KEYS, batch_size=15, instance_id="bridge-a").close()
    path.write_bytes(damaged)  # as if the rewrite had not happened
    wal = Wal.open(root, keys=KEYS, batch_size=15, instance_id="bridge-a")
    assert [(j.of_segment, j.need) for j in wal.refetch_jobs()] == [(1, {TP: [(10, 14)]})]
    wal.close()


def test_damage_without_a_seal_frame_or_a_neighbour_is_ambiguous(tmp_path: Path) -> None:
    """The last segment's last records frame and seal frame damaged: nothing bounds what the
    records frame held, so the segment is quarantined (replay with the operator)."""
    root = tmp_path / "wal"
    wal_of_two_segments(root, convert_first=False)
    path = root / "segments" / "0000000002.sealed"
    path.write_bytes(flip_two(2, 3)(path.read_bytes()))
    wal = Wal.open(root, keys=KEYS, batch_size=15, instance_id="bridge-a")
    assert [seq for seq, _ in wal.recovery.quarantined] == [2]
    assert "seal frame damaged" in wal.recovery.quarantined[0][1]
    wal.close()


def test_neighbouring_frames_bound_the_damage_when_the_seal_frame_is_lost() -> None:
    """Between two verified frames of a partition, the offsets strictly between them are the
    damaged ones; a partition without a kept frame on one side needs a neighbouring segment."""
    root_data = _segment_bytes()
    data = flip_two(1, 3)(root_data)
    inv = inventory(data)
    assert inv.seal is None
    assert missing_from_neighbours(inv, data, {}, {}) == {TP: [(5, 9)]}


def _segment_bytes() -> bytes:
    """Segment 1 of :func:`wal_of_two_segments`, built in memory."""
    from wal_bridge.wal.salvage import encode_sealed
    from wal_bridge.wal.segment import Range, SealInfo

    batches = [records_batch(first, 5) for first in (0, 5, 10)]
    seal = SealInfo(1, "bridge-a", "k", "d", 1, 15, {TP: Range(0, 14, 15)})
    return encode_sealed(1, 1, batches, seal)


def test_a_second_damage_to_a_salvaged_segment_asks_for_its_own_offsets(tmp_path: Path) -> None:
    """A salvaged segment damaged again before its re-fetch ran gets a second job for the
    newly damaged offsets; the first job is kept, and no offset is asked for twice."""
    root = tmp_path / "wal"
    path = wal_of_two_segments(root, convert_first=False)
    path.write_bytes(flip(1)(path.read_bytes()))  # offsets 5-9
    Wal.open(root, keys=KEYS, batch_size=15, instance_id="bridge-a").close()
    path.write_bytes(flip(1)(path.read_bytes()))  # the rewritten file's second frame: 10-14
    wal = Wal.open(root, keys=KEYS, batch_size=15, instance_id="bridge-a")
    assert sorted(run for j in wal.refetch_jobs() for run in j.need[TP]) == [(5, 9), (10, 14)]
    assert [(s.seq, s.records) for s in wal.snapshot()] == [(1, 5), (2, 15)]
    assert sorted(p.name for p in (root / "segments").glob("*.damaged")) == [
        "0000000001.2.damaged", "0000000001.damaged"]
    wal.close()


def test_subtracting_runs_keeps_what_the_other_does_not_hold() -> None:
    """Runs minus runs, per partition: the offsets left, as runs."""
    from wal_bridge.wal.salvage import subtract_runs

    assert subtract_runs({TP: [(0, 9), (20, 29)]}, {TP: [(3, 4), (8, 22)]}) == {
        TP: [(0, 2), (5, 7), (23, 29)]}
    assert subtract_runs({TP: [(0, 9)]}, {TP: [(0, 9)]}) == {}
    assert subtract_runs({TP: [(0, 9)]}, {("other", 0): [(0, 9)]}) == {TP: [(0, 9)]}


def test_damage_found_at_conversion_is_salvaged_like_at_recovery(tmp_path: Path) -> None:
    """A sealed segment damaged while the bridge runs is salvaged when conversion finds it:
    its verified frames convert and ship, its damaged offsets are re-fetched, and the bucket
    ends with every record once; nothing is quarantined."""
    root = tmp_path / "wal"
    wal = Wal.open(root, keys=KEYS, batch_size=15, instance_id="bridge-a")
    for first in range(0, TOPIC_END, 5):
        wal.append(records_batch(first, 5))
    path = root / "segments" / "0000000001.sealed"
    path.write_bytes(flip(2)(path.read_bytes()))  # offsets 10-14, under the running WAL
    kafka = Kafka()
    bucket = tmp_path / "bucket"
    sealer, uploader, refetcher = stages(wal, root, bucket, kafka)

    assert not sealer.convert(wal.snapshot()[0])
    assert [j.need for j in wal.refetch_jobs()] == [{TP: [(10, 14)]}]
    assert sealer.metrics.value("wal_bridge_salvage_decisions_total",
                                {"decision": "rewrite"}) == 1
    drain(sealer, uploader, refetcher)

    assert landed(bucket) == list(range(TOPIC_END))
    assert wal.quarantined() == []
    wal.close()
