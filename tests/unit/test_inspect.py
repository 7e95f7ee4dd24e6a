"""`wal_bridge inspect`: hand-made WAL directories read back field by field, never modified."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from wal_bridge.cli import main
from wal_bridge.commands.inspect import inspect_wal, render
from wal_bridge.config import Destination
from wal_bridge.wal.codec import FrameKind, RecordColumns, encode_frame, encode_records
from wal_bridge.wal.lock import lock_holder
from wal_bridge.wal.log import Wal
from wal_bridge.wal.segment import iter_frames

KEYS = Destination("gs", "bucket", "raw")
NOW = 1_795_000_000_000


def batch(partition: int, first: int, count: int, topic: str = "events"):  # type: ignore[no-untyped-def]
    offsets = list(range(first, first + count))
    return RecordColumns(
        [topic] * count, [partition] * count, offsets, [1_700_000_000_000 + o for o in offsets],
        [None] * count, [json.dumps({"n": o}).encode() for o in offsets], [None] * count,
    ).to_arrow()


def open_wal(root: Path, **kwargs: Any) -> Wal:
    kwargs.setdefault("batch_size", 10)
    kwargs.setdefault("instance_id", "bridge-a")
    kwargs.setdefault("now_ms", lambda: NOW - 60_000)
    return Wal.open(root, keys=KEYS, **kwargs)


def tree(root: Path) -> dict[str, tuple[str, float]]:
    """Every file under root with a hash of its bytes and its mtime."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_segments_by_state_with_keys_ranges_and_ages(tmp_path: Path) -> None:
    """Sealed segments show their object key and ranges; the open one has no key yet."""
    wal = open_wal(tmp_path)
    wal.append(batch(0, 0, 10))
    wal.append(batch(1, 100, 10))
    wal.append(batch(0, 10, 4))
    keys = [s.seal.key for s in wal.snapshot() if s.seal is not None]
    wal.close()

    report = inspect_wal(tmp_path, now=NOW)

    segs = report["segments"]
    assert [(s["segment"], s["state"], s["records"]) for s in segs] == [
        (1, "sealed", 10), (2, "sealed", 10), (3, "open", 4)]
    assert [s["key"] for s in segs] == [*keys, None]
    assert segs[0]["key"].startswith("raw/dt=")
    assert segs[0]["dead_letter_key"].startswith("dead-letter/dt=")
    assert segs[1]["ranges"] == [{"topic": "events", "partition": 1, "first_offset": 100,
                                  "last_offset": 109, "records": 10}]
    assert segs[2]["ranges"][0]["first_offset"] == 10
    assert segs[0]["age_s"] == 60.0
    assert segs[0]["bytes"] == (tmp_path / "segments" / "0000000001.sealed").stat().st_size
    assert all(s["damage"] is None and s["tail"] is None and s["upload"] is None for s in segs)
    assert report["instance_id"] == "bridge-a"
    assert report["lock"] == {"locked": False, "pid": None, "running": False}
    totals = report["totals"]
    assert totals["records"] == 24
    assert totals["by_state"] == {"open": 1, "sealed": 2, "converted": 0, "quarantined": 0}
    assert totals["oldest_age_s"] == 60.0
    parts = {p["partition"]: p for p in report["partitions"]}
    assert (parts[0]["pending_first_offset"], parts[0]["pending_last_offset"],
            parts[0]["pending_records"]) == (0, 13, 14)
    assert parts[1]["pending_records"] == 10


def test_a_frame_being_written_is_in_progress_while_locked_and_torn_after(tmp_path: Path) -> None:
    """Half a frame at the end of the open segment is progress while the lock is held, a torn
    tail once the process is gone: never damage."""
    wal = open_wal(tmp_path, batch_size=100)
    wal.append(batch(0, 0, 5))
    frame = encode_frame(FrameKind.RECORDS, encode_records(batch(0, 5, 5)))
    with open(tmp_path / "segments" / "0000000001.open", "ab") as handle:
        handle.write(frame[: len(frame) // 2])

    running = inspect_wal(tmp_path, now=NOW)
    (seg,) = running["segments"]
    assert running["lock"] == {"locked": True, "pid": os.getpid(), "running": True}
    assert seg["state"] == "open"
    assert seg["records"] == 5
    assert seg["damage"] is None
    assert seg["tail"]["status"] == "in_progress"
    assert seg["tail"]["bytes"] == len(frame) // 2
    assert "writing" in render(running)

    wal.close()
    stopped = inspect_wal(tmp_path, now=NOW)
    assert stopped["lock"]["locked"] is False
    assert stopped["segments"][0]["tail"]["status"] == "torn"


def test_damage_before_the_end_of_an_open_segment_is_reported(tmp_path: Path) -> None:
    """A bad frame followed by a good one is damage (recovery will quarantine it)."""
    wal = open_wal(tmp_path, batch_size=100)
    wal.append(batch(0, 0, 5))
    wal.append(batch(0, 5, 5))
    wal.close()
    path = tmp_path / "segments" / "0000000001.open"
    data = bytearray(path.read_bytes())
    data[32 + 20] ^= 0xFF  # inside the first frame's body
    path.write_bytes(bytes(data))

    (seg,) = inspect_wal(tmp_path, now=NOW)["segments"]

    assert seg["damage"] == {"reason": "frame checksum mismatch", "byte_offset": 32}
    assert seg["tail"] is None
    assert inspect_wal(tmp_path, now=NOW)["totals"]["damaged"] == 1


def test_converted_and_stuck_segments_show_attempts_and_the_last_error(tmp_path: Path) -> None:
    """An outbox Parquet file makes a segment converted; its status file says why it is stuck."""
    wal = open_wal(tmp_path)
    wal.append(batch(0, 0, 20))
    wal.close()
    (tmp_path / "outbox" / "0000000001.parquet").write_bytes(b"x" * 100)
    (tmp_path / "outbox" / "0000000001.dead.parquet").write_bytes(b"x" * 7)
    (tmp_path / "outbox" / "0000000001.status.json").write_text(json.dumps({
        "attempts": 4, "last_error": "HTTP 403: the service account lacks permission",
        "last_attempt_ms": NOW - 5000, "stuck": True}))
    (tmp_path / "outbox" / "0000000002.parquet").write_bytes(b"y" * 10)

    report = inspect_wal(tmp_path, now=NOW)

    first, second = report["segments"]
    assert first["state"] == "converted"
    assert (first["parquet_bytes"], first["dead_letter_bytes"]) == (100, 7)
    assert first["upload"] == {
        "attempts": 4, "last_error": "HTTP 403: the service account lacks permission",
        "last_attempt_at": "2026-11-18T11:06:35.000+00:00", "stuck": True}
    assert second["state"] == "converted"
    assert second["upload"] is None
    assert report["totals"]["stuck"] == 1
    assert report["totals"]["by_state"]["converted"] == 2
    assert "STUCK after 4 attempt(s): HTTP 403" in render(report)


def test_quarantined_segments_show_reason_ranges_and_readable_records(tmp_path: Path) -> None:
    """An open segment damaged in its middle is quarantined at start (no seal frame says what
    the damaged frame held); inspect shows what it held."""
    wal = open_wal(tmp_path, batch_size=300)
    for first in (0, 10, 20):
        wal.append(batch(2, first, 10))
    wal.close()
    path = tmp_path / "segments" / "0000000001.open"
    data = bytearray(path.read_bytes())
    frames = list(iter_frames(memoryview(bytes(data))))
    data[frames[1].offset + 20] ^= 0xFF  # inside the second records frame
    path.write_bytes(bytes(data))
    open_wal(tmp_path, batch_size=30).close()  # recovery quarantines it

    report = inspect_wal(tmp_path, now=NOW)

    assert report["segments"] == []
    (q,) = report["quarantined"]
    assert q["segment"] == 1
    assert q["file"] == "quarantine/0000000001.open"
    assert q["readable_records"] == 10
    assert q["ranges"] == [{"topic": "events", "partition": 2, "first_offset": 0,
                            "last_offset": 9, "records": 10}]
    assert "checksum" in q["reason"]
    assert report["totals"]["by_state"]["quarantined"] == 1
    assert report["partitions"][0]["quarantined_records"] == 10
    assert "replay --quarantined" in render(report)


def test_shipped_offsets_come_from_state_json(tmp_path: Path) -> None:
    """What was shipped per partition is read from state.json."""
    wal = open_wal(tmp_path)
    wal.append(batch(0, 0, 10))
    wal.mark_converted(1, _parquet_tmp(wal))
    wal.mark_shipped(1)
    wal.close()

    report = inspect_wal(tmp_path, now=NOW)

    assert report["shipped"] == [{"topic": "events", "partition": 0, "next_offset": 10}]
    assert report["last_shipped_segment"] == 1
    assert report["partitions"][0]["shipped_next_offset"] == 10
    assert "no segments" in render(report)


def _parquet_tmp(wal: Wal) -> Path:
    tmp = wal.layout.outbox / ".0000000001.parquet.tmp"
    tmp.write_bytes(b"PAR1")
    return tmp


def test_inspect_never_writes_and_never_creates_the_lock(tmp_path: Path) -> None:
    """Not one byte, mtime or file changes; a WAL without LOCK still has none afterwards."""
    wal = open_wal(tmp_path)
    wal.append(batch(0, 0, 15))
    wal.close()
    (tmp_path / "LOCK").unlink()
    before = tree(tmp_path)

    inspect_wal(tmp_path)
    result = CliRunner().invoke(main, ["inspect", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert tree(tmp_path) == before
    assert lock_holder(tmp_path) == {"locked": False, "pid": None}


def test_json_and_table_from_the_command_line(tmp_path: Path) -> None:
    """`inspect --json` prints the report; WAL_DIR works as a variable; the table aligns."""
    wal = open_wal(tmp_path)
    wal.append(batch(0, 0, 12))
    wal.close()

    as_json = CliRunner().invoke(main, ["inspect", "--json"], env={"WAL_DIR": str(tmp_path)})
    as_table = CliRunner().invoke(main, ["inspect", "--wal-dir", str(tmp_path)])

    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert [s["state"] for s in data["segments"]] == ["sealed", "open"]
    assert data["totals"]["records"] == 12
    lines = as_table.output.splitlines()
    header = next(line for line in lines if line.startswith("SEGMENT"))
    row = next(line for line in lines if line.startswith("0000000001"))
    assert row.index("sealed") == header.index("STATE")
    assert "raw/dt=" in row


def test_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    """Pointing inspect at nothing exits 2 with one line naming WAL_DIR."""
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "WAL_DIR" in result.output


@pytest.mark.parametrize("shape", ["shipped_while_listing", "sealed_while_listing"])
def test_files_moving_while_inspect_reads_them_are_not_errors(tmp_path: Path, shape: str,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """A segment sealed or shipped between listing and reading is shown as it now is."""
    wal = open_wal(tmp_path, batch_size=100)
    wal.append(batch(0, 0, 5))
    wal.close()
    module = importlib.import_module("wal_bridge.wal.layout")
    real_read = module._read

    def moving_read(path: Path) -> bytes | None:
        if path.name == "0000000001.open":
            data = path.read_bytes()
            if shape == "shipped_while_listing":
                path.unlink()
                return None
            path.rename(path.with_name("0000000001.sealed"))
            return None if data else data
        return real_read(path)

    monkeypatch.setattr(module, "_read", moving_read)
    segments = inspect_wal(tmp_path, now=NOW)["segments"]
    if shape == "shipped_while_listing":
        assert segments == []
    else:
        assert [s["state"] for s in segments] == ["sealed"]


def test_an_open_segment_without_its_header_yet_is_not_damage(tmp_path: Path) -> None:
    """A segment file created but not yet given its header holds nothing and is no damage."""
    open_wal(tmp_path).close()
    (tmp_path / "segments" / "0000000001.open").write_bytes(b"WALB")

    (seg,) = inspect_wal(tmp_path, now=NOW)["segments"]

    assert (seg["records"], seg["damage"]) == (0, None)
    assert seg["tail"] == {"status": "torn", "bytes": 4,
                           "reason": "segment header not written yet"}


def test_salvage_shows_damaged_files_refetches_and_unrecoverable_offsets(tmp_path: Path) -> None:
    """A sealed segment salvaged at start shows its kept and set-aside bytes and the offsets
    to re-fetch; once re-fetched with part of them gone from Kafka, the done re-fetch and the
    unrecoverable offsets show, exactly, in the JSON and the table."""
    wal = open_wal(tmp_path, batch_size=30)
    for first in (0, 10, 20):
        wal.append(batch(2, first, 10))
    wal.close()
    path = tmp_path / "segments" / "0000000001.sealed"
    data = bytearray(path.read_bytes())
    data[list(iter_frames(memoryview(bytes(data))))[1].offset + 20] ^= 0xFF
    path.write_bytes(bytes(data))
    wal = open_wal(tmp_path, batch_size=30)

    report = inspect_wal(tmp_path, now=NOW)
    (damaged,) = report["damaged"]
    assert damaged["file"] == "segments/0000000001.damaged"
    assert 0 < damaged["salvaged_bytes"] < damaged["bytes"]
    (pending,) = report["refetch"]
    assert (pending["of_segment"], pending["records"]) == (1, 10)
    assert [(r["partition"], r["first_offset"], r["last_offset"]) for r in pending["ranges"]] == [
        (2, 10, 19)]
    assert report["quarantined"] == []
    assert "Re-fetch from Kafka" in render(report)

    (job,) = wal.refetch_jobs()
    wal.complete_refetch(job, [batch(2, 15, 5)], [{
        "topic": "events", "partition": 2, "first_offset": 10, "last_offset": 14, "count": 5,
        "why": "deleted from Kafka (earliest offset is now 15)"}])
    wal.close()

    report = inspect_wal(tmp_path, now=NOW)
    assert report["refetch"] == []
    (done,) = report["refetched"]
    assert done["records"] == 5
    (lost,) = report["unrecoverable"]
    assert (lost["topic"], lost["partition"], lost["first_offset"], lost["last_offset"],
            lost["of_segment"]) == ("events", 2, 10, 14, 1)
    assert report["totals"]["unrecoverable_records"] == 5
    text = render(report)
    assert "UNRECOVERABLE" in text
    assert "10-14" in text
