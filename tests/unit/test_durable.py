"""Directory fsyncs: every change to a directory's entries is followed by an fsync of it.

The power-loss tests on LazyFS (tests/chaos/test_power_loss.py) drop unsynced file data, but
LazyFS always keeps directory operations, so a missing *directory* fsync passes there. These
tests check that one by tracing the real system calls (each is made, and recorded on the way):
a creation, rename, removal or new subdirectory marks its directory dirty, an fsync of the
directory makes it clean, and after each durable step no directory is left dirty.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wal_bridge import durable
from wal_bridge.config import Destination
from wal_bridge.sink.local import LocalSink
from wal_bridge.wal.codec import RecordColumns
from wal_bridge.wal.log import Wal

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="descriptors are named through /proc/self/fd")

# LOCK holds only the pid of the running process, for people: it need not survive a power cut.
NOT_DURABLE = {"LOCK"}


class DirTrace:
    """Directories whose entries changed since their last fsync, under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.dirty: dict[Path, str] = {}  # directory -> the first unsynced change

    def changed(self, path: str | os.PathLike[str], what: str) -> None:
        entry = Path(os.path.abspath(path))
        if entry.name in NOT_DURABLE or not entry.is_relative_to(self.root.parent):
            return
        self.dirty.setdefault(entry.parent, f"{what} {entry.name}")

    def synced(self, fd: int) -> None:
        with_path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        self.dirty.pop(with_path, None)

    def assert_clean(self, step: str) -> None:
        left = {str(d.relative_to(self.root.parent)): why for d, why in self.dirty.items()}
        assert not left, f"{step}: directories changed and never fsynced: {left}"


@pytest.fixture
def trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DirTrace:
    """Record creations, renames, links, removals, mkdirs and fsyncs under ``tmp_path``."""
    tracer = DirTrace(tmp_path / "wal")
    real: dict[str, Callable[..., Any]] = {
        name: getattr(os, name) for name in ("open", "replace", "rename", "link", "unlink",
                                             "mkdir", "fsync")}

    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        existed = os.path.exists(path)
        fd: int = real["open"](path, flags, *args, **kwargs)
        if flags & os.O_CREAT and not existed:
            tracer.changed(path, "created")
        return fd

    def replace(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        real["replace"](source, target, *args, **kwargs)
        tracer.changed(source, "renamed away")
        tracer.changed(target, "renamed to")

    def link(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        real["link"](source, target, *args, **kwargs)
        tracer.changed(target, "linked")

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        real["unlink"](path, *args, **kwargs)
        tracer.changed(path, "removed")

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        real["mkdir"](path, *args, **kwargs)
        tracer.changed(path, "made directory")

    def fsync(fd: int) -> None:
        real["fsync"](fd)
        tracer.synced(fd)

    for name, spy in (("open", os_open), ("replace", replace), ("rename", replace),
                      ("link", link), ("unlink", unlink), ("mkdir", mkdir), ("fsync", fsync)):
        monkeypatch.setattr(os, name, spy)
    return tracer


def _created(path: Path, data: bytes) -> None:
    """A new file through os.open, so that the trace sees it created."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_the_durable_helpers_fsync_every_directory_they_change(
        tmp_path: Path, trace: DirTrace) -> None:
    """write_atomic, publish, move and remove_temp_files leave no directory unsynced."""
    root = tmp_path / "wal"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    durable.fsync_dir(root / "a")
    durable.fsync_dir(root / "b")
    durable.fsync_dir(root)
    durable.fsync_dir(tmp_path)
    trace.assert_clean("set-up")
    durable.write_atomic(root / "a" / "state.json", b"{}")
    trace.assert_clean("write_atomic")
    tmp = durable.temp_path(root / "a" / "x")
    _created(tmp, b"x")
    durable.publish(tmp, root / "a" / "x")
    trace.assert_clean("publish")
    durable.move(root / "a" / "x", root / "b" / "x")
    trace.assert_clean("move")
    _created(root / "a" / "left.tmp", b"")
    durable.fsync_dir(root / "a")
    durable.remove_temp_files(root / "a")
    trace.assert_clean("remove_temp_files")


def _batch(first: int, count: int) -> Any:
    offsets = list(range(first, first + count))
    return RecordColumns(
        ["events"] * count, [0] * count, offsets, [1_700_000_000_000 + o for o in offsets],
        [None] * count, [json.dumps({"n": o}).encode() for o in offsets], [None] * count,
    ).to_arrow()


def test_a_segment_s_life_leaves_no_directory_unsynced(tmp_path: Path, trace: DirTrace) -> None:
    """Opening a new WAL, appending, sealing, converting, shipping and reopening: after each
    step every directory whose entries changed has been fsynced."""
    root = tmp_path / "wal"
    wal = Wal.open(root, keys=Destination("gs", "bucket", "raw"), batch_size=5)
    trace.assert_clean("first open (directories made, identity written)")
    wal.append(_batch(0, 7))  # one segment sealed, the next one open
    trace.assert_clean("append and seal")
    tmp = durable.temp_path(wal.parquet_path(1))
    _created(tmp, b"parquet")
    wal.mark_converted(1, tmp)
    trace.assert_clean("convert")
    wal.record_upload_failure(1, "HTTP 503", permanent=False)
    trace.assert_clean("upload failure recorded")
    wal.mark_shipped(1)
    trace.assert_clean("ship")
    wal.close()
    wal = Wal.open(root, keys=Destination("gs", "bucket", "raw"), batch_size=5)
    trace.assert_clean("reopen (the open segment sealed)")
    wal.close()


def test_the_local_sink_fsyncs_the_folders_it_makes(tmp_path: Path, trace: DirTrace) -> None:
    """A put into a date folder not made yet leaves the folder's entry, and the object's,
    durable: the WAL deletes its copy once the put returns."""
    (tmp_path / "wal").mkdir()  # only to anchor the trace; the lake is beside it
    durable.fsync_dir(tmp_path)
    source = tmp_path / "wal" / "segment.parquet"
    source.write_bytes(b"parquet")
    sink = LocalSink(Destination("file", str(tmp_path / "lake"), "raw"))
    sink.check()
    trace.assert_clean("check (the root made)")
    sink.put("raw/dt=2026-11-29/a.parquet", source)
    trace.assert_clean("put into a new date folder")
