"""A local directory with the same layout as the bucket: for the demo, tests and air-gapped use."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from wal_bridge.config import Destination
from wal_bridge.errors import ObjectConflictError, SinkError
from wal_bridge.sink import ObjectInfo, PutResult, file_crc32c
from wal_bridge.wal import fs


class LocalSink:
    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.root = Path(destination.bucket)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"cannot create destination {self.root}: {exc}", transient=False) \
                from exc
        if not os.access(self.root, os.W_OK):
            raise SinkError(f"destination {self.root} is not writable", transient=False)

    def put(self, key: str, path: Path) -> PutResult:
        final = self.root / key
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = fs.temp_path(final)
            shutil.copyfile(path, tmp)
            fs.fsync_file(tmp)
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
            fs.fsync_dir(final.parent)
        except OSError as exc:
            raise SinkError(f"cannot write {final}: {exc}", transient=True) from exc
        return PutResult.CREATED

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.root
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.endswith(fs.TEMP_SUFFIX):
                key = path.relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield ObjectInfo(key, path.stat().st_size)

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()
