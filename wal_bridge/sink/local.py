"""A local directory with the same layout as the bucket: for the demo, tests and air-gapped use.

The destination ``file:///srv/lake/raw`` has the root ``/srv/lake``; the key ``raw/a.parquet``
is the file ``/srv/lake/raw/a.parquet``. Puts stage a temp file beside the final name (skipped
by :meth:`LocalSink.list`) and link it into place, so a reader never sees half a file.

Where it differs from a bucket: the root need not exist. :meth:`LocalSink.check` and
:meth:`LocalSink.put` create it (a directory costs nothing; a bucket is infrastructure), so a
root not made yet is an empty destination: nothing listed, every key not found. The local
counterpart of a missing bucket is a root that cannot be a directory (a file stands at it or
above it): ``list`` and the reads raise :class:`~wal_bridge.errors.DestinationNotFoundError`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from wal_bridge import durable
from wal_bridge.config import Destination
from wal_bridge.errors import (
    DestinationNotFoundError,
    ObjectConflictError,
    ObjectNotFoundError,
    SinkError,
)
from wal_bridge.sink import ObjectInfo, PutResult, check_range, file_crc32c


class LocalSink:
    """A ``file://`` destination: the directory ``destination.bucket`` behind the Sink
    interface (see :class:`wal_bridge.sink.Sink` for the contract)."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.root = Path(destination.bucket)

    def check(self) -> None:
        """Create the root if needed; a permanent SinkError when it cannot be made or written."""
        try:
            durable.make_dirs(self.root)
        except OSError as exc:
            raise SinkError(f"cannot create destination {self.root}: {exc}", transient=False) \
                from exc
        if not os.access(self.root, os.W_OK):
            raise SinkError(f"destination {self.root} is not writable", transient=False)

    def put(self, key: str, path: Path) -> PutResult:
        """Copy ``path`` to ``key`` create-only (a hard link of an fsynced temp file, which fails
        if the name exists); every OSError is a transient SinkError (a full or read-only disk
        may pass)."""
        final = self.root / key
        try:
            durable.make_dirs(final.parent)  # a new date folder survives a power cut
            tmp = durable.temp_path(final)
            shutil.copyfile(path, tmp)
            durable.fsync_file(tmp)
            try:
                # link() fails if the name exists: create-only, like if_generation_match=0.
                os.link(tmp, final)
            except FileExistsError:
                local, remote = file_crc32c(path), file_crc32c(final)
                if local != remote:
                    raise ObjectConflictError(key, local, remote) from None
                return PutResult.ALREADY_PRESENT
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            durable.fsync_dir(final.parent)
        except OSError as exc:
            raise SinkError(f"cannot write {final}: {exc}", transient=True) from exc
        return PutResult.CREATED

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Files under the root whose key starts with ``prefix``, in key order; temp files of
        puts in progress are not objects. Walks only the folder the prefix names."""
        self._require_usable_root()
        folder = self.root / prefix.rpartition("/")[0]
        found = []
        try:
            for path in folder.rglob("*"):
                if path.is_file() and not path.name.endswith(durable.TEMP_SUFFIX):
                    key = path.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        found.append(ObjectInfo(key, path.stat().st_size))
        except OSError as exc:
            raise SinkError(f"cannot list {folder}: {exc}", transient=True) from exc
        yield from sorted(found, key=lambda info: info.key)

    def read(self, key: str) -> bytes:
        """The content of the file ``key``."""
        return self._read(key, 0, None)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes of ``key`` from byte ``start`` (see :meth:`Sink.read_range`)."""
        check_range(start, length)
        return self._read(key, start, length)

    def _read(self, key: str, start: int, length: int | None) -> bytes:
        path = self.root / key
        try:
            with open(path, "rb") as handle:
                handle.seek(start)
                return handle.read() if length is None else handle.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            self._require_usable_root()
            raise ObjectNotFoundError(key, f"no such object: {path}") from exc
        except PermissionError as exc:
            raise SinkError(f"cannot read {path}: {exc}", transient=False) from exc
        except OSError as exc:
            raise SinkError(f"cannot read {path}: {exc}", transient=True) from exc

    def _require_usable_root(self) -> None:
        """Raise DestinationNotFoundError when the root is, or lies under, something that is
        not a directory; a root that is merely absent is fine (made at the first put)."""
        path = self.root
        while not path.exists():  # False under a regular file too (ENOTDIR)
            path = path.parent
        if not path.is_dir():
            raise DestinationNotFoundError(
                f"destination {self.root} cannot be a directory: {path} is a file; fix "
                "DESTINATION")
