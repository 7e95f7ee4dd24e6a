"""The uploader over the local sink: shipping, idempotence, stuck segments and empty data."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.fakes import FailingSink
from wal_bridge.config import Destination
from wal_bridge.conversion import Converter
from wal_bridge.sealer import Sealer
from wal_bridge.sink import PutResult
from wal_bridge.sink.local import LocalSink
from wal_bridge.uploader import Uploader
from wal_bridge.wal.codec import RecordColumns
from wal_bridge.wal.log import Wal


def values_batch(values: list[bytes | None], first: int = 0):  # type: ignore[no-untyped-def]
    n = len(values)
    offsets = list(range(first, first + n))
    return RecordColumns(["events"] * n, [0] * n, offsets, [1_700_000_000_000] * n,
                         [None] * n, values, [None] * n).to_arrow()


def pipeline(tmp_path: Path, sink: LocalSink, batch_size: int = 4):  # type: ignore[no-untyped-def]
    wal = Wal.open(tmp_path / "wal", keys=Destination("gs", "bucket", "raw"), batch_size=batch_size)
    sealer = Sealer(wal, Converter.open(1024, tmp_path / "wal", None))
    halt = threading.Event()
    uploader = Uploader(wal, sink, halt, initial_backoff=0.01, max_backoff=0.02, stuck_retry=0.0)
    return wal, sealer, uploader


def good(i: int) -> bytes:
    return json.dumps({"n": i, "kind": "x"}).encode()


def test_a_segment_ships_its_data_and_dead_letters_then_leaves_the_wal(tmp_path: Path) -> None:
    """Data and dead-letter files land under their keys; the WAL keeps nothing afterwards."""
    sink = FailingSink(tmp_path / "bucket", 0, transient=True)
    wal, sealer, uploader = pipeline(tmp_path, sink)
    wal.append(values_batch([good(0), b"not json", good(2), good(3)]))
    assert sealer.step()
    assert uploader.step()
    files = sorted(p.relative_to(tmp_path / "bucket").as_posix()
                   for p in (tmp_path / "bucket").rglob("*.parquet"))
    assert [f.split("/")[0] for f in files] == ["dead-letter", "raw"]
    landed = pq.read_table(tmp_path / "bucket" / files[1])
    assert landed.column("_kafka_offset").to_pylist() == [0, 2, 3]
    assert wal.snapshot() == []
    assert wal.shipped_offsets() == {("events", 0): 4}
    wal.close()


def test_transient_failures_are_retried_until_the_upload_lands(tmp_path: Path) -> None:
    """Three 503s in a row delay the upload; they never drop or reorder it."""
    sink = FailingSink(tmp_path / "bucket", 3, transient=True)
    wal, sealer, uploader = pipeline(tmp_path, sink)
    wal.append(values_batch([good(i) for i in range(4)]))
    sealer.step()
    assert uploader.step()
    assert sink.calls == 4
    assert uploader.retries == 3
    assert wal.snapshot() == []
    wal.close()


def test_a_permanent_failure_marks_the_segment_stuck_and_keeps_it(tmp_path: Path) -> None:
    """A 403 keeps the segment with its attempt count and error, and a later try ships it."""
    sink = FailingSink(tmp_path / "bucket", 1, transient=False)
    wal, sealer, uploader = pipeline(tmp_path, sink)
    wal.append(values_batch([good(i) for i in range(4)]))
    sealer.step()
    assert not uploader.step()
    assert uploader.stuck == {1}
    status = json.loads(wal.status_path(1).read_text())
    assert status["attempts"] == 1
    assert status["stuck"] is True
    assert "403" in status["last_error"]
    assert uploader.step()  # stuck_retry=0: due again at once, and the sink now accepts it
    assert uploader.stuck == set()
    assert wal.snapshot() == []
    wal.close()


def test_shipping_again_after_a_crash_counts_the_existing_object(tmp_path: Path) -> None:
    """An object already there with the same bytes (a crash before deletion) is shipped."""
    sink = FailingSink(tmp_path / "bucket", 0, transient=True)
    wal, sealer, _ = pipeline(tmp_path, sink)
    wal.append(values_batch([good(i) for i in range(4)]))
    sealer.step()
    segment = wal.to_ship()[0]
    assert segment.seal is not None
    assert sink.put(segment.seal.key, wal.parquet_path(1)) is PutResult.CREATED
    assert sink.put(segment.seal.key, wal.parquet_path(1)) is PutResult.ALREADY_PRESENT
    wal.close()


def test_a_segment_of_dead_letters_only_uploads_no_empty_data_file(tmp_path: Path) -> None:
    """When no record of a segment is a row, only its dead-letter file lands."""
    sink = FailingSink(tmp_path / "bucket", 0, transient=True)
    wal, sealer, uploader = pipeline(tmp_path, sink)
    wal.append(values_batch([b"", None, b"[1]", b"nope"]))
    sealer.step()
    assert uploader.step()
    landed = [p.relative_to(tmp_path / "bucket").parts[0]
              for p in (tmp_path / "bucket").rglob("*.parquet")]
    assert landed == ["dead-letter"]
    assert wal.snapshot() == []
    wal.close()


def test_a_conflicting_object_is_never_overwritten(tmp_path: Path) -> None:
    """Other bytes under the segment's key are an anomaly: the segment stays, stuck."""
    sink = FailingSink(tmp_path / "bucket", 0, transient=True)
    wal, sealer, uploader = pipeline(tmp_path, sink)
    wal.append(values_batch([good(i) for i in range(4)]))
    sealer.step()
    key = wal.to_ship()[0].seal.key  # type: ignore[union-attr]
    squatter = tmp_path / "bucket" / key
    squatter.parent.mkdir(parents=True)
    squatter.write_bytes(b"someone else's object")
    assert not uploader.step()
    assert uploader.stuck == {1}
    assert squatter.read_bytes() == b"someone else's object"
    assert "already exists" in json.loads(wal.status_path(1).read_text())["last_error"]
    wal.close()


@pytest.mark.parametrize("transient", [True, False])
def test_a_halted_uploader_leaves_the_segment_for_the_next_start(
    tmp_path: Path, transient: bool
) -> None:
    """Shutdown during retries keeps the segment in the WAL rather than losing it."""
    sink = FailingSink(tmp_path / "bucket", 100, transient=transient)
    wal, sealer, uploader = pipeline(tmp_path, sink)
    wal.append(values_batch([good(i) for i in range(4)]))
    sealer.step()
    uploader.halt.set()
    assert not uploader.step()
    assert [s.seq for s in wal.snapshot()] == [1]
    wal.close()
