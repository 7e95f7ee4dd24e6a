"""The outbox: publishing converted files, upload status, and state.json moving forward."""

from __future__ import annotations

from pathlib import Path

from wal_bridge.failpoints import DISARMED
from wal_bridge.wal.layout import WalLayout
from wal_bridge.wal.outbox import Outbox
from wal_bridge.wal.segment import Range


def outbox(root: Path) -> Outbox:
    layout = WalLayout(root)
    for directory in layout.directories:
        directory.mkdir(parents=True, exist_ok=True)
    return Outbox(layout, DISARMED, lambda: 1_700_000_000_000)


def test_publishing_marks_the_segment_converted_with_its_bytes(tmp_path: Path) -> None:
    """The dead-letter file and the data file take their final names; their bytes are told."""
    box = outbox(tmp_path)
    data, dead = tmp_path / "outbox" / ".a.tmp", tmp_path / "outbox" / ".b.tmp"
    data.write_bytes(b"x" * 10)
    dead.write_bytes(b"y" * 3)
    assert box.publish(4, data, dead) == 13
    assert box.layout.converted() == {4}
    assert box.layout.dead_letters(4).read_bytes() == b"y" * 3


def test_upload_failures_count_and_stay_beside_the_file(tmp_path: Path) -> None:
    """Each failure adds one attempt and keeps the last error; removing clears every file."""
    box = outbox(tmp_path)
    assert box.record_upload_failure(4, "503", permanent=False) == 1
    assert box.record_upload_failure(4, "403", permanent=True) == 2
    status = box.layout.read_upload_status(4)
    assert status == {"attempts": 2, "last_error": "403", "stuck": True,
                      "last_attempt_ms": 1_700_000_000_000}
    box.remove(4)
    assert box.layout.read_upload_status(4) is None


def test_shipped_offsets_only_move_forward_and_survive_a_restart(tmp_path: Path) -> None:
    """A segment shipped out of order never moves a partition's next offset back."""
    box = outbox(tmp_path)
    box.write_state(box.record_shipped(2, {("t", 0): Range(10, 19, 10)}))
    box.write_state(box.record_shipped(1, {("t", 0): Range(0, 9, 10), ("t", 1): Range(0, 0, 1)}))
    again = outbox(tmp_path)
    assert again.load() == 2
    assert again.shipped_next == {("t", 0): 20, ("t", 1): 1}
