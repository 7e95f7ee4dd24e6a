"""What is the local sink's own: its root is made when needed, a root not made yet is an empty
destination, and a put in progress is never an object. The contract it shares with GCS is in
tests/contract/test_sink.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from wal_bridge.cli import main
from wal_bridge.config import Destination
from wal_bridge.durable import TEMP_SUFFIX
from wal_bridge.errors import DestinationNotFoundError, ObjectNotFoundError, SinkError
from wal_bridge.sink import ObjectInfo, PutResult
from wal_bridge.sink.local import LocalSink


def _sink(root: Path) -> LocalSink:
    return LocalSink(Destination("file", str(root), "raw"))


def test_a_root_not_made_yet_is_an_empty_destination(tmp_path: Path) -> None:
    """Before the first put nothing is listed and every key is not found (not a missing
    destination): `audit`, `query` and `schema` say "nothing landed yet"."""
    sink = _sink(tmp_path / "not-yet" / "lake")
    assert list(sink.list("raw/")) == []
    with pytest.raises(ObjectNotFoundError) as caught:
        sink.read_range("raw/a.parquet", 0, 8)
    assert not isinstance(caught.value, DestinationNotFoundError)
    assert not (tmp_path / "not-yet").exists()  # reading made nothing


def test_the_first_put_makes_the_root(tmp_path: Path) -> None:
    """A put without check() creates every directory down to the key."""
    source = tmp_path / "a.parquet"
    source.write_bytes(b"PAR1")
    sink = _sink(tmp_path / "lake")
    assert sink.put("raw/2026-01-01/a.parquet", source) is PutResult.CREATED
    assert (tmp_path / "lake" / "raw" / "2026-01-01" / "a.parquet").read_bytes() == b"PAR1"


def test_a_file_in_the_root_s_way_is_a_missing_destination(tmp_path: Path) -> None:
    """A regular file at or above the root cannot become a directory: DestinationNotFoundError
    names it."""
    (tmp_path / "file").write_text("a file")
    for root in (tmp_path / "file", tmp_path / "file" / "lake"):
        with pytest.raises(DestinationNotFoundError, match=f"{tmp_path}/file is a file"):
            list(_sink(root).list(""))


def test_a_put_in_progress_is_not_listed(tmp_path: Path) -> None:
    """The temp file a put stages beside the final name is not an object."""
    sink = _sink(tmp_path)
    folder = tmp_path / "raw" / "2026-01-01"
    folder.mkdir(parents=True)
    (folder / "a.parquet").write_bytes(b"done")
    (folder / f".b.parquet.123{TEMP_SUFFIX}").write_bytes(b"half")
    assert list(sink.list("raw/")) == [ObjectInfo("raw/2026-01-01/a.parquet", 4)]


def test_a_put_that_cannot_write_is_a_transient_sink_error(tmp_path: Path) -> None:
    """An OSError of a put (here, a file where a folder of the key should be) is a SinkError
    naming the path; transient, as a full or read-only disk may pass."""
    source = tmp_path / "a.parquet"
    source.write_bytes(b"PAR1")
    sink = _sink(tmp_path / "lake")
    sink.put("raw/x", source)
    with pytest.raises(SinkError, match=f"cannot write {tmp_path}/lake/raw/x/a.parquet") as caught:
        sink.put("raw/x/a.parquet", source)
    assert caught.value.transient is True


def test_an_unwritable_local_destination_is_reported_at_start(tmp_path: Path) -> None:
    """A file:// destination that cannot be created stops `run` before it consumes anything."""
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    result = CliRunner().invoke(main, ["run"], env={
        "DESTINATION": f"file://{blocker}/landed", "WAL_DIR": str(tmp_path / "wal"),
        "METRICS_PORT": "0", "LOG_FORMAT": "json",
    })
    assert result.exit_code == 1
    assert f"cannot create destination {blocker}/landed" in result.output
