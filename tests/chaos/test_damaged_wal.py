"""Damaged WAL files: stop the bridge, damage a segment, start again.

Damage at the end of the open segment is what a crash leaves (a torn write, garbage after it):
recovery cuts it and the bridge reads those records again from Kafka, since they were never
committed. Damage inside a sealed segment is corruption: recovery quarantines the segment and
reports it, the rest goes on, and ``wal_bridge replay --quarantined`` rebuilds it from its good
frames and from Kafka.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from scripts.services.toxiproxy import ToxiproxyClient
from tests.chaos.oracle import read_topic
from tests.chaos.scenario import Scenario, held_records, wal_files
from tests.support import committed_offsets, wait_for
from wal_bridge.wal.codec import (
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
)
from wal_bridge.wal.segment import iter_frames, scan

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


def test_damaged_sealed_segments_are_quarantined_and_replayed(
    scenario: Scenario, toxiproxy: ToxiproxyClient
) -> None:
    """A flipped bit, an absurd length and a bad magic in sealed segments quarantine them with a
    reason; the rest lands; `wal_bridge replay --quarantined` brings back every record."""
    rng = random.Random(f"{SEED}-sealed")
    proxy = toxiproxy.create_proxy(f"gcs-{scenario.topic[-8:]}", urlparse(scenario.gcs.url).netloc)
    bridge = scenario.bridge(emulator=proxy.url)
    bridge.start()
    # A first file ships, and with it the table's schema reaches the bucket (it must, before
    # any segment converts); then segments pile up sealed and converted, none shipped.
    scenario.workload.produce(100)
    wait_for(lambda: bridge.events("segment_shipped"), 90, "a first segment shipped",
             on_timeout=bridge.tail)
    toxiproxy.disable(proxy.name)
    scenario.workload.produce(2_000)
    wal = scenario.wal_dir()
    wait_for(lambda: len(wal_files(wal)["parquet"]) >= 4, 90, "four converted segments",
             on_timeout=bridge.tail)
    bridge.kill()
    sealed = sorted((wal / "segments").glob("*.sealed"))[:3]
    damaged: dict[int, str] = {}
    held: set[tuple[int, int]] = set()  # (partition, offset) of the damaged segments' records
    for path, kind in zip(sealed, ["flipped_bit", "absurd_length", "bad_magic"], strict=True):
        data = bytearray(path.read_bytes())
        for (_, partition), r in scan(bytes(data)).ranges.items():
            held.update((partition, o) for o in range(r.first, r.last + 1))
        first, end = frame_offsets(bytes(data))[0]
        if kind == "flipped_bit":
            at = rng.randrange(first + FRAME_HEADER_SIZE, end)
            data[at] ^= 1 << rng.randrange(8)
        elif kind == "absurd_length":
            struct.pack_into("<I", data, first + 8, 0xFFFF_FFF0)
        else:
            assert data[:8] == SEGMENT_MAGIC
            data[:8] = b"NOTAWAL!"
        path.write_bytes(data)
        damaged[int(path.name.split(".")[0])] = kind
    toxiproxy.enable(proxy.name)
    scenario.workload.produce(500)
    bridge.start()
    scenario.wait_assigned(bridge)
    started = bridge.events("bridge_starting")[0]
    assert sorted(started["quarantined"]) == sorted(damaged), bridge.tail()
    reported = {e["segment"]: e["reason"] for e in bridge.events("segment_quarantined")}
    assert set(reported) == set(damaged), bridge.tail()
    for seq in damaged:
        reason = json.loads((wal / "quarantine" / f"{seq:010d}.reason.json").read_text())
        assert reason["reason"], reason
        assert "replay --quarantined" in reason["hint"], reason

    # Everything but the quarantined records lands, once; none of those, yet.
    expected = read_topic(scenario.kafka.bootstrap, scenario.topic)
    wait_for(lambda: scenario.landed.covers(set(expected) - held), 120,
             "every record outside the quarantined segments", on_timeout=bridge.tail)
    scenario.drain(bridge)
    before = scenario.verdict()
    assert set(before.missing) == held, f"missing {len(before.missing)}, held {len(held)}"
    assert not before.duplicated, before.problems()
    assert not before.corrupted, before.problems()

    replay = subprocess.run(
        [sys.executable, "-m", "wal_bridge.cli", "replay", "--quarantined"],
        env=scenario.env(), capture_output=True, text=True, timeout=180, check=False,
    )
    output = f"{replay.stdout}\n{replay.stderr}"
    assert replay.returncode == 0, f"replay exited {replay.returncode}\n{output}"
    assert not wal_files(wal)["quarantined"], f"still quarantined after replay\n{output}"
    scenario.finish(damage=damaged, quarantined_records=len(held),
                    reasons=sorted(reported.values()))
