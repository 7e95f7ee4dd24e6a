"""Power cuts on a filesystem that forgets what was not fsynced (LazyFS).

A ``kill -9`` leaves the page cache alone, so whatever the bridge wrote survives it, fsynced or
not. Here WAL_DIR is on LazyFS, which keeps every write in its own cache until fsync: each cut
kills the bridge with SIGKILL, then drops that cache (``lazyfs::clear-cache``), which is what
a power cut leaves, and mounts LazyFS again (the reboot). The kill comes first, so that no
process keeps an append descriptor across the clear (it would write at the old end of the
file, leaving a gap no power cut leaves).

After each cut, before the bridge starts again, what survived is checked against what the
bridge had reported before it (:class:`Acknowledged`): a segment logged as sealed is still
sealed and whole, a converted one still has a whole Parquet file, a shipped one has no file
left and ``state.json`` covers it; ``state.json`` never moves back; every offset the group
committed is held by the WAL or was shipped. Then the bridge restarts on what survived and must
get back to consuming. At the end, the oracle: every record in the topic landed exactly once.

LazyFS keeps directory operations (create, rename, unlink) whatever happens, so these tests show
a missing *file* fsync (a renamed file comes back empty) but not a missing *directory* fsync;
tests/unit and the failpoints check those.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.parquet as pq
import pytest

from scripts.services.lazyfs import LazyFs
from scripts.services.toxiproxy import ToxiproxyClient
from tests.chaos.scenario import ChaosBridge, Scenario, wal_files
from tests.support import committed_offsets, wait_for
from wal_bridge.failpoints import EXIT_CODE
from wal_bridge.wal.codec import DecodeError
from wal_bridge.wal.layout import WalLayout
from wal_bridge.wal.segment import OPEN, SEALED, scan

SEED = int(os.environ.get("WAL_BRIDGE_CHAOS_SEED") or random.randrange(1 << 32))
RATE = 150  # records a second, produced all along
GCS_CUT_SHARE = 0.4  # of the cycles, with the emulator cut off: sealed segments pile up
START_TIMEOUT = 60  # seconds from a restart to consuming: recovery that loops never gets there


@dataclass
class Acknowledged:
    """What the bridge reported durable before a cut, read from its log (every run)."""

    sealed: dict[int, int] = field(default_factory=dict)  # segment -> records
    keys: dict[int, str] = field(default_factory=dict)  # segment -> its object's key
    converted: dict[int, int] = field(default_factory=dict)  # segment -> rows
    shipped: set[int] = field(default_factory=set)

    @classmethod
    def read(cls, bridge: ChaosBridge) -> Acknowledged:
        acked = cls()
        for event in bridge.events("segment_sealed", this_run=False):
            acked.sealed[int(event["segment"])] = int(event["records"])
            acked.keys[int(event["segment"])] = str(event["key"])
        for event in bridge.events("segment_converted", this_run=False):
            acked.converted[int(event["segment"])] = int(event["rows"])
        acked.shipped = {int(e["segment"]) for e in bridge.events("segment_shipped",
                                                                   this_run=False)}
        return acked


@dataclass
class Survivors:
    """What one cut left, and the state it is checked against the next time."""

    last_segment: int = 0
    shipped_next: dict[int, int] = field(default_factory=dict)  # partition -> next offset
    checked_segments: int = 0


def read_state(layout: WalLayout) -> tuple[int, dict[int, int]]:
    """``state.json`` read strictly: a file that is there must parse (an empty one is the sign
    of a missing fsync before its rename)."""
    if not layout.state.exists():
        return 0, {}
    raw = layout.state.read_bytes()
    try:
        document = json.loads(raw)
    except ValueError:
        raise AssertionError(
            f"state.json came back unreadable after the cut: {raw[:80]!r}") from None
    return (int(document.get("last_shipped_segment", 0)),
            {int(item["partition"]): int(item["next_offset"])
             for item in document.get("shipped", [])})


def held_next(layout: WalLayout) -> dict[int, int]:
    """Per partition, the offset after the last one the WAL's segments hold."""
    out: dict[int, int] = {}
    for state in (OPEN, SEALED):
        for path in layout.segments.glob(f"*.{state}"):
            try:
                result = scan(path.read_bytes())
            except DecodeError:
                continue
            ranges = result.seal.ranges if result.seal is not None else result.ranges
            for (_, partition), rng in ranges.items():
                out[partition] = max(out.get(partition, 0), rng.last + 1)
    return out


def check_survivors(scene: Scenario, layout: WalLayout, acked: Acknowledged,
                    before: Survivors, cycle: int) -> Survivors:
    """Assert that nothing the bridge reported durable came back in an older state."""
    where = f"cycle {cycle}, after the power cut"
    last_segment, shipped_next = read_state(layout)
    assert last_segment >= before.last_segment, (
        f"{where}: state.json went back from segment {before.last_segment} to {last_segment}")
    for partition, offset in before.shipped_next.items():
        assert shipped_next.get(partition, 0) >= offset, (
            f"{where}: state.json went back on partition {partition}: {offset} -> "
            f"{shipped_next.get(partition, 0)}")
    for seq in sorted(acked.shipped):
        assert seq <= last_segment, (
            f"{where}: segment {seq} was logged shipped, state.json says {last_segment}")
        back = [p.name for p in (layout.segment(seq, OPEN), layout.segment(seq, SEALED),
                                 layout.parquet(seq)) if p.exists()]
        assert not back, f"{where}: segment {seq} was logged shipped, but {back} came back"
    checked = 0
    bucket = scene.gcs.client().bucket(scene.bucket)
    for seq, records in sorted(acked.sealed.items()):
        if seq in acked.shipped:
            continue
        path = layout.segment(seq, SEALED)
        if not path.exists():
            # Shipped, and the cut came before the bridge logged it: its object is there and
            # state.json counts it.
            shipped = seq <= last_segment and bucket.blob(acked.keys[seq]).exists()
            assert shipped, (
                f"{where}: segment {seq} was logged sealed; it is neither in segments/ "
                f"({sorted(p.name for p in layout.segments.iterdir())}) nor shipped")
            acked.shipped.add(seq)
            continue
        result = scan(path.read_bytes(), ranges=False)
        damage = result.error or ("no seal frame" if result.seal is None else None)
        assert damage is None, (
            f"{where}: sealed segment {seq} came back damaged ({path.stat().st_size} bytes): "
            f"{damage}")
        assert result.records == records, (
            f"{where}: sealed segment {seq} holds {result.records} records, logged {records}")
        checked += 1
    for seq, rows in sorted(acked.converted.items()):
        if seq in acked.shipped:
            continue
        parquet = layout.parquet(seq)
        assert parquet.exists(), f"{where}: segment {seq} was logged converted; no Parquet file"
        try:
            metadata = pq.read_metadata(parquet)
        except Exception as exc:  # noqa: BLE001 - any failure to read the footer is the finding
            raise AssertionError(
                f"{where}: the Parquet file of converted segment {seq} came back unreadable "
                f"({parquet.stat().st_size} bytes): {exc}") from None
        assert metadata.num_rows == rows, (
            f"{where}: {parquet.name} holds {metadata.num_rows} rows, logged {rows}")
        checked += 1
    # Offsets are committed only once durable: each must be held by the WAL or shipped.
    held = held_next(layout)
    committed = committed_offsets(scene.kafka.bootstrap, scene.group, scene.topic)
    for partition, offset in committed.items():
        if offset < 0:
            continue
        durable_up_to = max(held.get(partition, 0), shipped_next.get(partition, 0))
        assert offset <= durable_up_to, (
            f"{where}: partition {partition} committed up to {offset}, but the WAL holds and "
            f"state.json shipped only up to {durable_up_to}")
    return Survivors(last_segment, shipped_next, before.checked_segments + checked)


def test_lazyfs_drops_what_was_not_fsynced(lazyfs_binary: Path, tmp_path: Path) -> None:
    """The premise of the power-loss tests: on the harness's LazyFS mount a power cut keeps
    fsynced data and a rename, and drops unsynced appends and unsynced file contents."""
    mount = LazyFs(lazyfs_binary, tmp_path / "lazyfs").start()
    try:
        root = mount.mountpoint
        with open(root / "log", "ab") as handle:
            handle.write(b"synced")
            handle.flush()
            os.fsync(handle.fileno())
            handle.write(b"+unsynced")
        (root / "new").write_bytes(b"never fsynced")
        with open(root / "tmp", "wb") as handle:
            handle.write(b"renamed")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(root / "tmp", root / "renamed")
        assert (root / "log").read_bytes() == b"synced+unsynced"  # the cache serves reads
        mount.power_cut()
        assert (root / "log").read_bytes() == b"synced"
        assert (root / "new").read_bytes() == b""  # the name stays (a directory operation)
        assert (root / "renamed").read_bytes() == b"renamed"
    finally:
        mount.close()
    assert not mount.alive()


def power_cut(bridge: ChaosBridge, mount: LazyFs) -> float:
    """SIGKILL the bridge, then drop LazyFS's unsynced writes and remount (the reboot); return
    the seconds the filesystem's part took."""
    bridge.kill()
    return mount.power_cut()


@pytest.mark.parametrize(
    "cycles",
    [pytest.param(10, id="10-cycles"),
     pytest.param(50, id="50-cycles", marks=pytest.mark.long)],
)
def test_power_cuts_in_a_loop_lose_nothing_and_undo_nothing(
        scenario: Scenario, toxiproxy: ToxiproxyClient, lazyfs: LazyFs, lazyfs_wal_dir: Path,
        cycles: int) -> None:
    """Cut off at random moments under load, with every unsynced write dropped each time, the
    bridge never loses what it reported sealed, converted, shipped or committed, gets back to
    consuming after every restart, and lands every record exactly once."""
    rng = random.Random(SEED + cycles)
    layout = WalLayout(lazyfs_wal_dir)
    proxy = toxiproxy.create_proxy(f"gcs-{scenario.topic[-8:]}", urlparse(scenario.gcs.url).netloc)
    bridge = scenario.bridge(wal_dir=lazyfs_wal_dir, emulator=proxy.url)
    scenario.workload.start(RATE)
    survivors = Survivors()
    in_startup = shipping = gcs_cut = 0
    cycle_seconds: list[float] = []
    fs_seconds: list[float] = []
    for cycle in range(cycles):
        started = time.monotonic()
        # Some runs with the emulator away: what they seal and convert stays in the WAL,
        # so the cut meets sealed segments and Parquet files, not only the open segment.
        if rng.random() < GCS_CUT_SHARE:
            gcs_cut += 1
            toxiproxy.disable(proxy.name)
        else:
            toxiproxy.enable(proxy.name)
        bridge.start()
        if cycle > 0 and rng.random() < 0.25:
            # During start-up: imports, recovery of what the last cut left (its cuts and
            # seals), the group join.
            in_startup += 1
            time.sleep(rng.uniform(0.3, 2.5))
        else:
            # Every other restart must get back to consuming: recovery never loops.
            wait_for(lambda: bridge.events("partitions_assigned") or not bridge.alive(),
                     START_TIMEOUT, f"cycle {cycle}: consuming again after the restart",
                     interval=0.1, on_timeout=bridge.tail)
            time.sleep(rng.uniform(0.0, 3.0))
        assert bridge.alive(), f"cycle {cycle}: the bridge exited on its own\n{bridge.tail()}"
        fs_seconds.append(power_cut(bridge, lazyfs))
        shipping += bool(bridge.events("segment_shipped"))
        survivors = check_survivors(scenario, layout, Acknowledged.read(bridge), survivors,
                                    cycle)
        cycle_seconds.append(time.monotonic() - started)
    toxiproxy.enable(proxy.name)
    scenario.workload.stop()
    bridge.start()
    scenario.wait_assigned(bridge, START_TIMEOUT)
    quarantined = wal_files(lazyfs_wal_dir)["quarantined"]
    scenario.finish(cycles=cycles, seed=SEED, cuts_in_startup=in_startup,
                    cuts_while_working=cycles - in_startup, runs_that_shipped=shipping,
                    runs_without_gcs=gcs_cut,
                    power_cut_s_mean=round(sum(fs_seconds) / len(fs_seconds), 3),
                    acknowledged_checked=survivors.checked_segments,
                    cycle_s_mean=round(sum(cycle_seconds) / len(cycle_seconds), 2),
                    cycle_s_max=round(max(cycle_seconds), 2), quarantined=len(quarantined))
    # A power cut only takes what was never fsynced: nothing may look damaged afterwards.
    assert not quarantined, f"recovery quarantined {quarantined} after clean power cuts"
    # Enough runs must get as far as shipping, and enough cuts meet sealed or converted
    # segments, or the loop tested only the open segment.
    assert shipping >= max(1, cycles // 10), f"only {shipping} of {cycles} runs shipped"
    assert survivors.checked_segments >= max(1, cycles // 10), (
        f"only {survivors.checked_segments} sealed or converted segments met a cut")


def _open_holds_records(layout: WalLayout) -> str | None:
    held = sum(scan(p.read_bytes(), ranges=False).records
               for p in layout.segments.glob(f"*.{OPEN}"))
    return None if held > 0 else "no record left in the open segment"


def _sealed_whole(layout: WalLayout) -> str | None:
    sealed = sorted(layout.segments.glob(f"*.{SEALED}"))
    if not sealed:
        return "no sealed segment"
    result = scan(sealed[-1].read_bytes(), ranges=False)
    if result.seal is None or result.error is not None or result.records == 0:
        return f"{sealed[-1].name} came back damaged: {result.error}, {result.records} records"
    return None


def _parquet_whole(layout: WalLayout) -> str | None:
    converted = sorted(layout.outbox.glob("*[0-9].parquet"))
    if not converted:
        return "no Parquet file in the outbox"
    try:
        rows = pq.read_metadata(converted[-1]).num_rows
    except Exception as exc:  # noqa: BLE001 - any failure to read the footer is the finding
        return f"{converted[-1].name} came back unreadable: {exc}"
    return None if rows > 0 else f"{converted[-1].name} has no row"


def _state_covers_shipped(layout: WalLayout) -> str | None:
    last_segment, shipped = read_state(layout)
    if last_segment == 0 or not shipped:
        return f"state.json records nothing shipped (there: {layout.state.exists()})"
    return None


# Each step right after which the bridge dies and the power goes, what it did, and the check
# that this state change survived whole (None) or what is wrong with it.
STEPS: dict[str, tuple[str, Callable[[WalLayout], str | None]]] = {
    "after_fsync_before_commit": ("the records just fsynced are in the open segment",
                                  _open_holds_records),
    "after_seal_rename": ("the segment just renamed .sealed is whole, with its seal frame",
                          _sealed_whole),
    "after_convert_rename": ("the Parquet file just renamed into the outbox reads whole",
                             _parquet_whole),
    "after_shipped_record": ("state.json just rewritten reads and records the shipped segment",
                             _state_covers_shipped),
}


@pytest.mark.parametrize("step", sorted(STEPS))
def test_a_power_cut_right_after_a_state_change_keeps_it(
        scenario: Scenario, lazyfs: LazyFs, lazyfs_wal_dir: Path, step: str) -> None:
    """Stopped dead right after a state change (a failpoint) and with every unsynced write
    dropped, the WAL still holds that change whole, and a restart lands every record once."""
    scenario.workload.produce(1_200)
    bridge = scenario.bridge(wal_dir=lazyfs_wal_dir)
    bridge.start(WAL_BRIDGE_FAILPOINT=step)
    code = bridge.wait(timeout=120)
    assert code == EXIT_CODE, f"exit {code}, not {EXIT_CODE}\n{bridge.tail()}"
    lazyfs.power_cut()
    layout = WalLayout(lazyfs_wal_dir)
    what, check = STEPS[step]
    problem = check(layout)
    assert problem is None, f"{what}: {problem}; left: {wal_files(lazyfs_wal_dir)}"
    scenario.workload.produce(300)
    bridge.start()
    scenario.finish(failpoint=step, exit_code=code)
