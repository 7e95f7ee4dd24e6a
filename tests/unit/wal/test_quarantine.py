"""The quarantine: a segment set aside with its reason, counted, and released after replay."""

from __future__ import annotations

import json
from pathlib import Path

from wal_bridge.errors import CorruptionError
from wal_bridge.wal.layout import WalLayout
from wal_bridge.wal.quarantine import Quarantine
from wal_bridge.wal.segment import Range


def test_set_aside_then_release_keeps_every_file(tmp_path: Path) -> None:
    """The file and its outbox files move in with a reason; release renames them .replayed."""
    layout = WalLayout(tmp_path)
    for directory in layout.directories:
        directory.mkdir(parents=True, exist_ok=True)
    segment = layout.segment(3, "sealed")
    segment.write_bytes(b"s" * 100)
    layout.parquet(3).write_bytes(b"p" * 5)
    quarantine = Quarantine(layout, lambda: 1_700_000_000_000)
    ranges = {("t", 0): Range(0, 9, 10)}

    quarantine.set_aside(3, CorruptionError(segment, 42, "frame checksum mismatch"), ranges)

    info = json.loads(layout.reason(3).read_text())
    assert (info["file"], info["byte_offset"], info["reason"]) == (
        "0000000003.sealed", 42, "frame checksum mismatch")
    assert sorted(p.name for p in layout.quarantine.iterdir()) == [
        "0000000003.parquet", "0000000003.reason.json", "0000000003.sealed"]
    assert (quarantine.status().segments, quarantine.status().bytes) == (1, 100)
    reloaded = Quarantine(layout, lambda: 0)
    assert reloaded.load() == 3
    assert reloaded.ranges == {3: ranges}

    reloaded.release(3, {"segment": 3, "new_segments": [4]})

    assert sorted(p.name for p in layout.quarantine.iterdir()) == [
        "0000000003.parquet", "0000000003.replayed.json", "0000000003.sealed.replayed"]
    assert reloaded.status().segments == 0
    assert reloaded.ranges == {}
