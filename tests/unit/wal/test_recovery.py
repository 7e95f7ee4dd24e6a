"""Recovery: what each kind of damage a crash or a disk leaves becomes, decided from real bytes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fakes import records_batch as batch
from wal_bridge.config import Destination
from wal_bridge.failpoints import DISARMED
from wal_bridge.wal.layout import WalLayout
from wal_bridge.wal.log import Wal
from wal_bridge.wal.outbox import Outbox
from wal_bridge.wal.quarantine import Quarantine
from wal_bridge.wal.recovery import recover
from wal_bridge.wal.segment import iter_frames

KEYS = Destination("gs", "bucket", "raw")


def leave(root: Path, *, sealed: bool) -> Path:
    """A WAL killed with one segment of three frames (five records each), sealed or open."""
    wal = Wal.open(root, keys=KEYS, batch_size=15 if sealed else 1000, instance_id="bridge-a")
    for i in range(3):
        wal.append(batch(i * 5, 5))
    wal.close()
    return root / "segments" / ("0000000001.sealed" if sealed else "0000000001.open")


def run(root: Path):  # type: ignore[no-untyped-def]
    layout = WalLayout(root)
    return recover(layout, Outbox(layout, DISARMED, lambda: 0), Quarantine(layout, lambda: 0),
                   keys=KEYS, instance_id="bridge-a")


def flip_frame(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[[f.offset for f in iter_frames(memoryview(data))][index] + 40] ^= 1
    return bytes(out)


# (damage, sealed?, outcome): outcome is what recovery does with the segment.
TABLE: list[tuple[str, Callable[[bytes], bytes], bool, str]] = [
    ("intact open", lambda d: d, False, "seal"),
    ("torn tail of an open segment", lambda d: d[:-7], False, "cut"),
    ("garbage after an open segment", lambda d: d + b"\x07" * 300, False, "cut"),
    ("flipped bit in the last frame of an open one", lambda d: flip_frame(d, 2), False, "cut"),
    ("flipped bit mid open segment", lambda d: flip_frame(d, 1), False, "quarantine"),
    ("bad segment magic", lambda d: b"NOTAWAL!" + d[8:], False, "quarantine"),
    ("header never written", lambda d: d[:10], False, "remove"),
    ("intact sealed", lambda d: d, True, "keep"),
    ("flipped bit in the seal frame", lambda d: flip_frame(d, 3), True, "salvage"),
    ("torn tail of a sealed segment", lambda d: d[:-3], True, "salvage"),
    ("zeros after a sealed segment", lambda d: d + bytes(4096), True, "salvage"),
    ("flipped bit mid sealed segment", lambda d: flip_frame(d, 1), True, "salvage"),
    ("bad magic of a sealed segment", lambda d: b"NOTAWAL!" + d[8:], True, "quarantine"),
]


@pytest.mark.parametrize(("damage", "sealed", "outcome"), [t[1:] for t in TABLE],
                         ids=[t[0] for t in TABLE])
def test_each_kind_of_damage_has_one_outcome(tmp_path: Path, damage: Callable[[bytes], bytes],
                                             sealed: bool, outcome: str) -> None:
    """Torn tails of an open segment are cut; damage with good frames after it in an open
    segment, or a segment header that does not decode, is quarantined with a CorruptionError's
    reason and byte offset; a sealed segment's damage is salvaged (see test_salvage.py)."""
    path = leave(tmp_path, sealed=sealed)
    path.write_bytes(damage(path.read_bytes()))
    recovered = run(tmp_path)
    report = recovered.report
    assert [seq for seq, _ in report.quarantined] == ([1] if outcome == "quarantine" else [])
    assert bool(report.truncated) is (outcome == "cut")
    assert [s.seq for s in recovered.unsealed] == ([1] if outcome in ("seal", "cut") else [])
    assert report.sealed == [s.seq for s in recovered.unsealed]  # recovery hands over, never seals
    assert path.exists() is (outcome in ("seal", "cut", "keep", "salvage"))
    assert list(recovered.index) == ([1] if outcome in ("seal", "cut", "keep", "salvage") else [])
    assert bool(report.salvaged) is (outcome == "salvage")
    assert recovered.next_seq == (3 if recovered.refetch else 2)
    if outcome == "quarantine":
        info = json.loads((tmp_path / "quarantine" / "0000000001.reason.json").read_text())
        assert info["file"] == path.name
        assert isinstance(info["byte_offset"], int)


def test_the_sequence_never_goes_back_after_shipping_and_quarantine(tmp_path: Path) -> None:
    """The next segment number is past every segment shipped, quarantined or present."""
    layout = WalLayout(tmp_path)
    for directory in layout.directories:
        directory.mkdir(parents=True, exist_ok=True)
    layout.state.write_text(json.dumps({"last_shipped_segment": 7, "shipped": []}))
    (layout.quarantine / "0000000009.reason.json").write_text("{}")
    assert run(tmp_path).next_seq == 10
