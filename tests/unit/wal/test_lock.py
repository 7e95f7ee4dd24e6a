"""The directory lock and the instance identity, without a Wal around them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wal_bridge.errors import ConfigError, WalLockedError
from wal_bridge.wal.lock import WalLock, describe_lock, ensure_identity, lock_holder


def test_one_holder_at_a_time_and_it_can_be_found(tmp_path: Path) -> None:
    """A second acquire is refused naming the pid; both lookups find the holder."""
    lock = WalLock.acquire(tmp_path)
    with pytest.raises(WalLockedError, match=rf"in use by pid {os.getpid()}"):
        WalLock.acquire(tmp_path)
    assert lock_holder(tmp_path) == {"locked": True, "pid": os.getpid()}
    lock.release()
    lock.release()  # idempotent
    assert lock_holder(tmp_path) == {"locked": False, "pid": None}
    assert describe_lock(tmp_path) == {"locked": False, "pid": None}
    WalLock.acquire(tmp_path).release()


def test_the_identity_is_fixed_at_first_start(tmp_path: Path) -> None:
    """First start stores it; later starts keep it; another one, or an unreadable file, stops."""
    assert ensure_identity(tmp_path, "bridge-a") == "bridge-a"
    assert ensure_identity(tmp_path, None) == "bridge-a"
    with pytest.raises(ConfigError, match="belongs to instance 'bridge-a'"):
        ensure_identity(tmp_path, "bridge-b")
    (tmp_path / "instance.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not readable"):
        ensure_identity(tmp_path, None)
    (tmp_path / "fresh").mkdir()
    assert ensure_identity(tmp_path / "fresh", None)  # generated from the host name
