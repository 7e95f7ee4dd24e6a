"""Durable file-system state changes: the one place that knows how to make a change stick.

Every state change of the WAL is one of these: write a temp file, fsync it, rename it over its
final name, fsync the directory. A crash leaves either the old state or the new one, and at
worst a ``*.tmp`` file, which :func:`remove_temp_files` clears at start.
"""

from __future__ import annotations

import contextlib
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


def temp_path(final: Path) -> Path:
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


def publish(tmp: Path, final: Path) -> None:
    """Durably rename an already fsynced ``tmp`` to ``final`` in the same directory."""
    os.replace(tmp, final)
    fsync_dir(final.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete leftovers of interrupted atomic writes in ``directory``; return what was removed."""
    removed = []
    for path in directory.glob(f"*{TEMP_SUFFIX}"):
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        fsync_dir(directory)
    return removed
