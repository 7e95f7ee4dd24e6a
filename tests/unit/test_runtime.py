"""The runtime: readiness from a status snapshot, the snapshot of a real bridge's stages, and
the stage loops that must outlive a bad step but stop on a fatal error."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wal_bridge.config import Settings, parse_destination
from wal_bridge.errors import ConfigError, WalFatalError
from wal_bridge.metrics import BridgeStatus
from wal_bridge.runtime import Bridge, StageLoop, readiness
from wal_bridge.wal.codec import RecordColumns

READY = BridgeStatus(rebalanced=True, partitions_assigned=3)


def test_an_assigned_bridge_with_nothing_wrong_is_ready() -> None:
    """Assigned, not paused, no full disk, nothing stuck, not stopping: ready, no reasons."""
    health = readiness(READY)
    assert health.ready
    assert list(health.reasons) == []


@pytest.mark.parametrize(("status", "reason"), [
    (BridgeStatus(), "no partition assignment yet"),
    (BridgeStatus(rebalanced=True, paused=True, pause_reason="disk full: ENOSPC"),
     "consumer paused: disk full: ENOSPC"),
    (BridgeStatus(rebalanced=True, paused=True,
                  pause_reason="schema registry unreachable: schema id 7: ConnectError"),
     "consumer paused: schema registry unreachable: schema id 7: ConnectError"),
    (BridgeStatus(rebalanced=True, disk_full=True), "disk full: cannot convert"),
    (BridgeStatus(rebalanced=True, schema_blocked="HTTP 403: no permission"),
     "cannot store the table's schema: HTTP 403: no permission"),
    (BridgeStatus(rebalanced=True, stuck=(7,)), "1 segment(s) stuck in the outbox: [7]"),
    (BridgeStatus(rebalanced=True, stopping=True), "shutting down"),
    (BridgeStatus(rebalanced=True, stopping=True, fatal="fsync failed"),
     "fatal error: fsync failed"),
])
def test_readiness_says_why_it_is_not_ready(status: BridgeStatus, reason: str) -> None:
    """Not assigned, paused (a full disk, a registry away), a full disk, a stuck segment, a
    shutdown or a fatal error each make /readyz fail, with the reason as its body shows it."""
    health = readiness(status)
    assert not health.ready
    assert any(reason in r for r in health.reasons), health.reasons


def test_a_pause_for_the_shutdown_drain_is_not_a_reason_of_its_own() -> None:
    """Paused without a reason (the drain pauses everything) adds nothing to 'shutting down'."""
    health = readiness(BridgeStatus(rebalanced=True, paused=True, stopping=True))
    assert list(health.reasons) == ["shutting down"]


def test_many_stuck_segments_name_the_first_ten() -> None:
    """The reason counts every stuck segment but lists only the first ten numbers."""
    (reason,) = readiness(BridgeStatus(rebalanced=True, stuck=tuple(range(1, 13)))).reasons
    assert reason.startswith("12 segment(s) stuck in the outbox: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]")


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    """A bridge over a local destination, not started: no broker is needed until run()."""
    (tmp_path / "dest").mkdir()
    settings = Settings(destination=parse_destination(f"file://{tmp_path / 'dest'}"),
                        wal_dir=tmp_path / "wal", batch_size=10, metrics_port=0)
    bridge = Bridge(settings)
    yield bridge
    bridge.wal.close()


def records(first: int, count: int) -> RecordColumns:
    offsets = list(range(first, first + count))
    return RecordColumns(["events"] * count, [0] * count, offsets, [1_700_000_000_000] * count,
                         [None] * count, [b"{\"n\":1}"] * count, [None] * count)


def test_the_status_reports_the_wal_and_the_stages(bridge: Bridge) -> None:
    """Segments by state, bytes, oldest age and stuck segments come from the WAL and the
    uploader; with no consumer yet the bridge is not ready, and the gauges say the same."""
    bridge.wal.append(records(0, 15).to_arrow())  # BATCH_SIZE 10: one sealed, one open
    bridge.uploader.stuck.add(7)

    status = bridge.status()

    assert dict(status.segments) == {"open": 1, "sealed": 1, "converted": 0, "quarantined": 0}
    assert status.wal_bytes == bridge.wal.total_bytes() > 0
    assert status.oldest_unshipped_age_s >= 0
    assert status.stuck == (7,)
    assert not status.rebalanced
    assert status.partitions_assigned == 0
    assert dict(status.lag) == {}
    metrics = bridge.metrics
    assert metrics.value("wal_bridge_segments", {"state": "sealed"}) == 1
    assert metrics.value("wal_bridge_segments", {"state": "open"}) == 1
    assert metrics.value("wal_bridge_wal_bytes") == status.wal_bytes
    assert metrics.value("wal_bridge_segments_stuck") == 1
    assert metrics.value("wal_bridge_ready") == 0
    assert "no partition assignment yet" in readiness(status).reasons


def test_converted_and_quarantined_segments_are_counted_apart(bridge: Bridge) -> None:
    """A converted segment counts as converted, not sealed; one whose damage cannot be healed
    (its segment header is gone) leaves the index, counts as quarantined and as a decision."""
    bridge.wal.append(records(0, 30).to_arrow())  # three sealed segments
    first, second, _ = bridge.wal.to_convert()
    assert bridge.sealer.convert(first)
    second.path.write_bytes(b"NOTAWAL!" + second.path.read_bytes()[8:])
    assert not bridge.sealer.convert(second)

    segments = bridge.status().segments

    assert dict(segments) == {"open": 0, "sealed": 1, "converted": 1, "quarantined": 1}
    assert bridge.metrics.value("wal_bridge_segments", {"state": "quarantined"}) == 1
    assert bridge.metrics.value("wal_bridge_salvage_decisions_total",
                                {"decision": "quarantine"}) == 1


def loop(step: Callable[[], bool],
         on_fatal: Callable[[BaseException], None]) -> tuple[StageLoop, threading.Event]:
    """A stage loop around ``step`` that idles 10 ms, and its halt event."""
    halt = threading.Event()
    stage = StageLoop("test", step, halt, on_fatal, idle=0.01)
    return stage, halt


def test_a_step_that_raises_leaves_the_loop_running() -> None:
    """An unexpected error in one step is logged and the next step runs (after a pause)."""
    calls: list[int] = []
    again = threading.Event()
    fatal: list[BaseException] = []

    def step() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("one bad step")
        again.set()
        return False

    stage, halt = loop(step, fatal.append)
    stage.start()
    try:
        assert again.wait(5.0), "the loop did not call step again after an error"
        assert stage.thread is not None
        assert stage.thread.is_alive()
        assert fatal == []
    finally:
        halt.set()
        stage.join(5.0)
    assert stage.thread is not None
    assert not stage.thread.is_alive()


@pytest.mark.parametrize("error", [WalFatalError("fsync failed"), ConfigError("bad schema")])
def test_a_fatal_error_stops_the_loop_and_is_reported(error: Exception) -> None:
    """A WAL that cannot promise durability, or a configuration error, is handed to on_fatal
    once and the loop ends without being halted."""
    calls: list[int] = []
    fatal: list[BaseException] = []

    def step() -> bool:
        calls.append(1)
        raise error

    stage, halt = loop(step, fatal.append)
    stage.start()
    stage.join(5.0)
    assert stage.thread is not None
    assert not stage.thread.is_alive()
    assert not halt.is_set()
    assert fatal == [error]
    assert len(calls) == 1
