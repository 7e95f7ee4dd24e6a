"""The WAL directory's names and its read-only readers, on a directory a real WAL wrote."""

from __future__ import annotations

from pathlib import Path

from tests.fakes import records_batch as batch
from wal_bridge.config import Destination
from wal_bridge.wal.layout import WalLayout
from wal_bridge.wal.log import Wal


def test_paths_are_named_once_under_the_root(tmp_path: Path) -> None:
    """Every file the WAL writes has its name here, ten-digit sequence numbers included."""
    layout = WalLayout(tmp_path)
    assert layout.relative(layout.segment(3, "open")) == "segments/0000000003.open"
    assert layout.relative(layout.torn(3)) == "segments/0000000003.torn"
    assert [layout.relative(p) for p in layout.outbox_files(3)] == [
        "outbox/0000000003.parquet", "outbox/0000000003.dead.parquet",
        "outbox/0000000003.status.json"]
    assert layout.relative(layout.reason(3)) == "quarantine/0000000003.reason.json"
    assert layout.relative(layout.replay_report(3)) == "quarantine/0000000003.replayed.json"
    assert [layout.relative(p) for p in (layout.lock, layout.identity, layout.state)] == [
        "LOCK", "instance.json", "state.json"]


def test_readers_see_what_the_wal_wrote_and_never_write(tmp_path: Path) -> None:
    """Segments, shipped offsets and identity read back; an empty directory reads as empty."""
    empty = WalLayout(tmp_path / "nothing")
    assert (empty.list_segments(), empty.read_identity(), empty.read_quarantine()) == ([], None, [])
    assert empty.read_shipped().next_offsets == {}
    assert not (tmp_path / "nothing").exists()

    wal = Wal.open(tmp_path, keys=Destination("gs", "b", "raw"), batch_size=5,
                   instance_id="bridge-a")
    wal.append(batch(0, 7))
    tmp = tmp_path / "outbox" / "x.tmp"
    tmp.write_bytes(b"PAR1")
    wal.mark_converted(1, tmp)
    wal.mark_shipped(1)
    wal.close()
    layout = WalLayout(tmp_path)
    assert layout.list_segments() == [(2, "open")]
    assert [(seq, state, len(data)) for seq, state, data in layout.read_segments()] == [
        (2, "open", (tmp_path / "segments" / "0000000002.open").stat().st_size)]
    assert layout.read_shipped().next_offsets == {("events", 0): 5}
    assert layout.read_shipped().last_segment == 1
    assert layout.read_identity() == "bridge-a"
    assert layout.converted() == set()
