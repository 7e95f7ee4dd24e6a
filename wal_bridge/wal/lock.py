"""The WAL directory's lock (one process at a time) and the instance identity it keeps.

The lock is an ``flock`` on ``LOCK``, held from :meth:`WalLock.acquire` until
:meth:`WalLock.release` (or the process's death: the kernel drops it, so a ``kill -9`` never
leaves a stale lock). The holder's pid is written inside for people and for
:func:`lock_holder`, which finds the holder without taking the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from wal_bridge import durable
from wal_bridge.errors import ConfigError, WalLockedError
from wal_bridge.wal.layout import WalLayout


class WalLock:
    """The held lock of one WAL directory."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def acquire(cls, root: Path) -> WalLock:
        """Take ``root``'s lock or raise WalLockedError naming the holder."""
        path = WalLayout(root).lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise WalLockedError(
                f"WAL directory {root} is in use by pid {holder}: stop that bridge first, or "
                "give this one its own WAL_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return cls(fd)

    def release(self) -> None:
        """Let go of the lock (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def lock_holder(root: Path) -> dict[str, Any]:
    """Who holds ``root``'s lock, found without taking it.

    On Linux the kernel lists every flock in ``/proc/locks`` by inode; failing that, the pid
    written in LOCK is checked for an open descriptor on the file. Elsewhere, fall back to
    :func:`describe_lock` (which takes a shared lock for an instant).
    """
    path = WalLayout(root).lock
    try:
        st = path.stat()
    except FileNotFoundError:
        return {"locked": False, "pid": None}
    try:
        table_text = Path("/proc/locks").read_text()
    except OSError:
        return describe_lock(root)
    matches: list[tuple[bool, int]] = []
    for line in table_text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->" or parts[1] != "FLOCK":
            continue
        dev_major, dev_minor, inode = parts[5].split(":")
        if int(inode) != st.st_ino:
            continue
        same_dev = (int(dev_major, 16), int(dev_minor, 16)) == (os.major(st.st_dev),
                                                                 os.minor(st.st_dev))
        matches.append((same_dev, int(parts[4])))
    if matches:
        matches.sort(reverse=True)
        return {"locked": True, "pid": matches[0][1] or _pid_in_file(path)}
    pid = _pid_in_file(path)
    if pid is not None and _has_open(pid, path):
        return {"locked": True, "pid": pid}
    return {"locked": False, "pid": None}


def _pid_in_file(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def _has_open(pid: int, path: Path) -> bool:
    """Does process ``pid`` have ``path`` open (it holds the lock while it does)?"""
    target = path.resolve()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if Path(os.readlink(fd)) == target:
                return True
    return False


def describe_lock(root: Path) -> dict[str, Any]:
    """Whether a process holds ``root``'s lock, found by taking a shared lock for an instant."""
    path = WalLayout(root).lock
    if not path.exists():
        return {"locked": False, "pid": None}
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 64, 0).decode(errors="replace").strip()
            return {"locked": True, "pid": int(pid) if pid.isdigit() else None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return {"locked": False, "pid": None}
    finally:
        os.close(fd)


def ensure_identity(wal_dir: Path, wanted: str | None) -> str:
    """This WAL's instance id: the one stored at its first start, else ``wanted``, else the
    host name with a random suffix (then stored). Raises ConfigError when ``wanted`` differs
    from the stored one: two instances must never share a WAL, nor one an object-key name."""
    layout = WalLayout(wal_dir)
    stored = layout.read_identity()
    if stored is None and layout.identity.exists():
        raise ConfigError(f"{layout.identity} is not readable: restore it, or move it away to "
                          "give this WAL a new identity")
    if stored is not None:
        if wanted is not None and wanted != stored:
            raise ConfigError(
                f"INSTANCE_ID={wanted!r} but {wal_dir} belongs to instance {stored!r}: "
                "unset INSTANCE_ID or point WAL_DIR at that instance's own directory"
            )
        return stored
    if wanted is None:
        host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
        wanted = f"{host.strip('-.')[:40] or 'bridge'}-{secrets.token_hex(3)}"
    durable.write_atomic(
        layout.identity,
        json.dumps({"instance_id": wanted, "created_ms": time.time_ns() // 1_000_000}).encode(),
    )
    return wanted
