"""Durable file-system state changes: the one place that knows how to make a change stick.

Every state change of a file the bridge keeps (a WAL segment sealed, a Parquet file published,
``state.json`` rewritten, a segment quarantined, the schema pinned, an object written by the
local sink) is one of these: write a temp file, fsync it, rename it over its final name, fsync
the directory. A crash leaves either the old state or the new one, and at worst a ``*.tmp``
file, which :func:`remove_temp_files` clears at start.

This is the only module that calls ``os.replace``.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """Make the directory entries of ``path`` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """Create the directory ``path`` and its missing parents durably: after each directory is
    made, its parent is fsynced, so that a power cut cannot take away a directory (and every
    file in it) that was reported made. Existing directories are left as they are. Raises
    FileExistsError when ``path`` exists and is not a directory, OSError as mkdir does."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another thread
            directory.mkdir()
        fsync_dir(directory.parent)
    if not path.is_dir():
        raise FileExistsError(errno.EEXIST, "exists and is not a directory", str(path))


def fsync_file(path: Path) -> None:
    """Make the content of the file at ``path`` durable (not its directory entry)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(final: Path) -> Path:
    """The temp file beside ``final`` that an atomic write of it goes through: hidden, named
    after this process, ending in :data:`TEMP_SUFFIX` so that a start clears it."""
    return final.with_name(f".{final.name}.{os.getpid()}{TEMP_SUFFIX}")


def write_atomic(final: Path, data: bytes) -> None:
    """Replace ``final`` with ``data`` durably: temp file, fsync, rename, fsync directory."""
    tmp = temp_path(final)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(final.parent)


def rename(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` atomically, WITHOUT making it durable yet.

    For a caller that renames several files, or must run a step in between, and then calls
    :func:`fsync_dir` on every directory involved; anyone else uses :func:`publish`.
    """
    os.replace(source, target)


def publish(tmp: Path, final: Path) -> None:
    """Durably rename an already fsynced ``tmp`` to ``final`` in the same directory."""
    os.replace(tmp, final)
    fsync_dir(final.parent)


def move(source: Path, target: Path) -> None:
    """Durably move ``source`` to ``target`` (same file system): rename, then fsync the
    target's directory and, when it differs, the source's."""
    os.replace(source, target)
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)


def truncate(path: Path, size: int) -> None:
    """Cut the file at ``path`` to ``size`` bytes and make the cut durable."""
    with open(path, "r+b") as handle:
        handle.truncate(size)
        handle.flush()
        os.fsync(handle.fileno())


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete leftovers of interrupted atomic writes in ``directory``; return what was removed."""
    removed = []
    for path in directory.glob(f"*{TEMP_SUFFIX}"):
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        fsync_dir(directory)
    return removed
