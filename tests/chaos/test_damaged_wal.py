"""Damaged WAL files: stop the bridge, damage a segment, start again.

Damage at the end of the open segment is what a crash leaves (a torn write, garbage after it):
recovery cuts it and the bridge reads those records again from Kafka, since they were never
committed. Damage to sealed segments (bytes after the seal frame, a flipped byte in a records
frame or in the seal frame, a Parquet file cut short) is salvaged: every frame that verifies
ships from the WAL, a complete Parquet file ships whatever happened to its segment, and the
running bridge reads the damaged frames' offsets again from Kafka, though they were committed.
Nothing is quarantined and every record lands once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from scripts.services.toxiproxy import ToxiproxyClient
from tests.chaos.oracle import read_topic
from tests.chaos.scenario import ChaosBridge, Scenario, held_records, wal_files
from tests.support import committed_offsets, wait_for
from wal_bridge.wal.codec import (
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    SEGMENT_HEADER_SIZE,
    FrameKind,
    decode_records,
)
from wal_bridge.wal.segment import iter_frames

SEED = int(os.environ.get("WAL_BRIDGE_CHAOS_SEED") or random.randrange(1 << 32))
# One segment that stays open for the whole first run: it is what the damage lands in.
KEEP_OPEN = {"BATCH_SIZE": "100000", "BATCH_TIMEOUT": "600"}


def frame_offsets(data: bytes) -> list[tuple[int, int]]:
    """(offset, end) of every frame of an undamaged segment."""
    return [(f.offset, f.end) for f in iter_frames(memoryview(data))]


def damage_tail(path: Path, kind: str, rng: random.Random) -> tuple[str, int | None]:
    """Damage the end of an open segment as a crash (or a lying disk) would.

    Returns a description and how many bytes recovery must cut (None: the segment is too
    short to hold a header any more, and is removed instead).
    """
    data = bytearray(path.read_bytes())
    frames = frame_offsets(bytes(data))
    last = frames[-1][0]
    if kind == "torn_tail":
        cut = rng.randrange(1, len(data))
        path.write_bytes(data[:cut])
        what = f"cut at byte {cut} of {len(data)}"
        if cut < SEGMENT_HEADER_SIZE:
            return what, None
        good_end = max(b for b in {SEGMENT_HEADER_SIZE, *(e for _, e in frames)} if b <= cut)
        return what, cut - good_end
    if kind == "garbage_tail":
        garbage = os.urandom(rng.randint(1, 8192)).replace(FRAME_MAGIC, b"XXXX")
        path.write_bytes(bytes(data) + garbage)
        return f"{len(garbage)} random bytes appended", len(garbage)
    if kind == "absurd_length":
        struct.pack_into("<I", data, last + 8, 0xFFFF_FFF0)
        path.write_bytes(data)
        return f"length of the last frame (byte {last}) set to 0xFFFFFFF0", len(data) - last
    assert kind == "bad_magic"
    data[last:last + 4] = b"XXXX"
    path.write_bytes(data)
    return f"magic of the last frame (byte {last}) overwritten", len(data) - last


@pytest.mark.parametrize("kind", ["torn_tail", "garbage_tail", "absurd_length", "bad_magic"])
def test_a_damaged_tail_is_cut_and_read_again(scenario: Scenario, kind: str) -> None:
    """Damage at the end of the open segment (torn at a random byte, garbage appended, an absurd
    length or a bad magic in its last frame) is cut at start, and nothing is lost."""
    rng = random.Random(f"{SEED}-{kind}")
    # COMMIT_POLICY=upload: nothing in the open segment is committed, as after a real crash
    # mid-write, so whatever the damage takes must come back from Kafka.
    bridge = scenario.bridge(COMMIT_POLICY="upload", **KEEP_OPEN)
    bridge.start()
    scenario.wait_assigned(bridge)
    for _ in range(3):  # three polls at least: several frames in the segment
        scenario.workload.produce(400)
        wait_for(lambda: held_records(scenario.wal_dir(), ("open",))
                 >= len(scenario.workload.acked), 60,
                 "the records appended to the open segment", on_timeout=bridge.tail)
    bridge.kill()
    (segment,) = (scenario.wal_dir() / "segments").glob("*.open")
    what, cut_bytes = damage_tail(segment, kind, rng)
    scenario.workload.produce(300)
    bridge.start(BATCH_SIZE="500", BATCH_TIMEOUT="1")
    scenario.wait_all_landed()
    started = bridge.events("bridge_starting")[0]
    assert not started["quarantined"], f"{what}: quarantined\n{bridge.tail()}"
    truncated = sum(e["bytes"] for e in bridge.events("segment_tail_truncated"))
    assert truncated == (cut_bytes or 0), f"{what}: cut {truncated} bytes\n{bridge.tail()}"
    scenario.finish(damage=what, seed=SEED, truncated_bytes=truncated)


def test_a_torn_tail_of_committed_records_is_read_again(scenario: Scenario) -> None:
    """Under COMMIT_POLICY=wal a torn tail can hold committed records (a disk that lost
    fsynced data): the restarted bridge reads them again from the WAL's own position."""
    rng = random.Random(f"{SEED}-committed")
    bridge = scenario.bridge(COMMIT_POLICY="wal", **KEEP_OPEN)
    bridge.start()
    scenario.wait_assigned(bridge)
    for _ in range(3):
        scenario.workload.produce(400)
        wait_for(lambda: held_records(scenario.wal_dir(), ("open",))
                 >= len(scenario.workload.acked), 60,
                 "the records appended to the open segment", on_timeout=bridge.tail)
    wait_for(lambda: sum(max(o, 0) for o in committed_offsets(
        scenario.kafka.bootstrap, scenario.group, scenario.topic).values())
             >= len(scenario.workload.acked), 60, "every appended record committed",
             on_timeout=bridge.tail)
    bridge.kill()
    (segment,) = (scenario.wal_dir() / "segments").glob("*.open")
    frames = frame_offsets(segment.read_bytes())
    last_start, last_end = frames[-1]
    cut = rng.randrange(last_start + 1, last_end)
    segment.write_bytes(segment.read_bytes()[:cut])
    bridge.start(BATCH_SIZE="500", BATCH_TIMEOUT="1")
    scenario.wait_all_landed()
    assert bridge.events("position_from_wal_after_torn_tail"), bridge.tail()
    scenario.finish(damage=f"committed frame cut at byte {cut}", seed=SEED)


def records_frames(data: bytes) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """(offset, end, (partition, offset) records) of each records frame of a whole segment."""
    return [(f.offset, f.end, list(zip(b.column("_partition").to_pylist(),
                                       b.column("_offset").to_pylist(), strict=True)))
            for f in iter_frames(memoryview(data)) if f.kind is FrameKind.RECORDS
            for b in [decode_records(f)]]


# What each sealed segment gets: (damage, which records frame, Parquet file cut in half?,
# the decision recovery logs for it). A flipped byte with the Parquet file intact ships that
# file; the others are salvaged from the segment file, their damaged frames re-fetched.
SEALED_DAMAGES = [
    ("zeros_after_seal", None, False, "cut_after_seal"),
    ("garbage_after_seal", None, False, "cut_after_seal"),
    ("flipped_byte", 0, True, "rewrite"),
    ("flipped_byte", "middle", True, "rewrite"),
    ("flipped_byte", -1, True, "rewrite"),
    ("damaged_seal_frame", None, True, "rewrite"),
    ("parquet_cut_short", None, True, "reconvert"),
    ("flipped_byte", 0, False, "ship_converted"),
]


def damage_sealed(path: Path, kind: str, which: int | str | None, rng: random.Random
                  ) -> set[tuple[int, int]]:
    """Damage a sealed segment file; return the (partition, offset) of the records whose
    frame no longer verifies."""
    data = bytearray(path.read_bytes())
    frames = records_frames(bytes(data))
    if kind == "zeros_after_seal":
        path.write_bytes(bytes(data) + bytes(4096))
        return set()
    if kind == "garbage_after_seal":
        path.write_bytes(bytes(data) + os.urandom(rng.randint(1, 8192)))
        return set()
    if kind == "damaged_seal_frame":
        seal_at = frames[-1][1]
        data[rng.randrange(seal_at + FRAME_HEADER_SIZE, len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        return set()
    if kind == "parquet_cut_short":
        return set()
    index = len(frames) // 2 if which == "middle" else int(str(which))
    start, end, held = frames[index]
    data[rng.randrange(start + FRAME_HEADER_SIZE, end)] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return set(held)


def piling_up(scenario: Scenario, toxiproxy: ToxiproxyClient) -> tuple[ChaosBridge, Any, Path]:
    """A started bridge (COMMIT_POLICY=wal, segments sealed at 500 records or 4 s: several
    polls, so several frames, each) whose emulator is cut off behind a proxy once a first file
    has shipped (with it the table's schema reached the bucket, as it must before any segment
    converts): segments then pile up sealed and converted, none shipped. Returns the bridge,
    the proxy and its WAL directory."""
    proxy = toxiproxy.create_proxy(f"gcs-{scenario.topic[-8:]}", urlparse(scenario.gcs.url).netloc)
    bridge = scenario.bridge(emulator=proxy.url, COMMIT_POLICY="wal", BATCH_TIMEOUT="4")
    bridge.start()
    scenario.workload.produce(100)
    wait_for(lambda: bridge.events("segment_shipped"), 90, "a first segment shipped",
             on_timeout=bridge.tail)
    toxiproxy.disable(proxy.name)
    return bridge, proxy, scenario.wal_dir()


def test_damaged_sealed_segments_are_salvaged_and_healed_from_kafka(
    scenario: Scenario, toxiproxy: ToxiproxyClient
) -> None:
    """Each damage of the table lands on its own sealed, converted segment (offsets committed,
    COMMIT_POLICY=wal); at restart recovery salvages every one, quarantines none, the running
    bridge re-fetches exactly the damaged frames' offsets, and every record lands once."""
    rng = random.Random(f"{SEED}-sealed")
    bridge, proxy, wal = piling_up(scenario, toxiproxy)

    def candidates() -> list[Path]:
        """Converted segments of three records frames or more (polls of separate bursts)."""
        out = []
        for path in sorted((wal / "segments").glob("*.sealed")):
            parquet = wal / "outbox" / path.name.replace(".sealed", ".parquet")
            with contextlib.suppress(FileNotFoundError, ValueError):
                if parquet.exists() and len(records_frames(path.read_bytes())) >= 3:
                    out.append(path)
        return out

    for _ in range(200):  # bursts: each poll a frame, several frames a segment
        scenario.workload.produce(60)
        time.sleep(0.15)
        if len(candidates()) >= len(SEALED_DAMAGES):
            break
    wait_for(lambda: len(candidates()) >= len(SEALED_DAMAGES), 90,
             f"{len(SEALED_DAMAGES)} converted segments of three frames", on_timeout=bridge.tail)
    bridge.kill()
    damaged: dict[int, str] = {}
    refetch: set[tuple[int, int]] = set()
    for path, (kind, which, cut_parquet, decision) in zip(candidates(), SEALED_DAMAGES,
                                                          strict=False):
        seq = int(path.name.split(".")[0])
        held = damage_sealed(path, kind, which, rng)
        if cut_parquet:
            parquet = wal / "outbox" / f"{seq:010d}.parquet"
            parquet.write_bytes(parquet.read_bytes()[: parquet.stat().st_size // 2])
        if decision == "rewrite":
            refetch |= held
        damaged[seq] = decision
    toxiproxy.enable(proxy.name)
    scenario.workload.produce(300)
    bridge.start()
    scenario.wait_assigned(bridge)
    started = bridge.events("bridge_starting")[0]
    assert started["quarantined"] == [], bridge.tail()
    decisions = {seq: decision for seq, decision in started["salvaged"] if seq in damaged}
    assert decisions == damaged, bridge.tail()
    scenario.wait_all_landed()
    done = bridge.events("refetch_done")
    assert sum(e["records"] for e in done) == len(refetch), bridge.tail()
    assert not bridge.events("refetch_data_lost"), bridge.tail()
    assert not wal_files(wal)["quarantined"]
    scenario.finish(damage=damaged, refetched_records=len(refetch), seed=SEED)


def test_damaged_offsets_gone_from_kafka_are_reported_and_nothing_waits(
    scenario: Scenario, toxiproxy: ToxiproxyClient
) -> None:
    """A damaged frame whose offsets retention already deleted: the running bridge reports
    them exactly (an error line, `inspect`), keeps them in quarantine, and everything else,
    the damaged segment's verified frames included, lands once."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    rng = random.Random(f"{SEED}-lost")
    bridge, proxy, wal = piling_up(scenario, toxiproxy)

    def target() -> Path | None:
        for path in sorted((wal / "segments").glob("*.sealed")):
            with contextlib.suppress(FileNotFoundError, ValueError):
                if len(records_frames(path.read_bytes())) >= 3:
                    return path
        return None

    for _ in range(100):
        scenario.workload.produce(60)
        time.sleep(0.15)
        if target() is not None:
            break
    wait_for(target, 60, "a sealed segment of three frames", on_timeout=bridge.tail)
    bridge.kill()
    path = target()
    assert path is not None
    seq = int(path.name.split(".")[0])
    held = damage_sealed(path, "flipped_byte", 0, rng)
    for stale in (wal / "outbox").glob(f"{seq:010d}.*"):
        stale.unlink()  # not converted: the segment file is all there is
    by_partition: dict[int, list[int]] = {}
    for p, o in held:
        by_partition.setdefault(p, []).append(o)
    admin = AdminClient({"bootstrap.servers": scenario.kafka.bootstrap})
    for future in admin.delete_records([TopicPartition(scenario.topic, p, max(o) + 1)
                                        for p, o in by_partition.items()]).values():
        future.result(30)
    toxiproxy.enable(proxy.name)
    bridge.start()
    scenario.wait_assigned(bridge)

    wait_for(lambda: bridge.events("refetch_data_lost"), 60, "the loss reported",
             on_timeout=bridge.tail)
    lost = sorted((e["partition"], e["first_offset"], e["last_offset"])
                  for e in bridge.events("refetch_data_lost"))
    assert lost == sorted((p, min(o), max(o)) for p, o in by_partition.items()), bridge.tail()
    report = json.loads(subprocess.run(
        [sys.executable, "-m", "wal_bridge.cli", "inspect", "--json", str(wal)],
        env=scenario.env(), capture_output=True, text=True, timeout=60, check=True).stdout)
    assert sorted((u["partition"], u["first_offset"], u["last_offset"])
                  for u in report["unrecoverable"]) == lost
    assert report["totals"]["unrecoverable_records"] == len(held)
    # Everything Kafka still holds lands, the damaged segment's verified frames included.
    expected = read_topic(scenario.kafka.bootstrap, scenario.topic)
    wait_for(lambda: scenario.landed.covers(expected), 120, "every record Kafka holds",
             on_timeout=bridge.tail)
    scenario.drain(bridge)
    verdict = scenario.verdict()
    assert not verdict.duplicated, verdict.problems()
    assert len(wal_files(wal)["quarantined"]) == 1
    scenario.record(verdict, lost_offsets=len(held), seed=SEED)
