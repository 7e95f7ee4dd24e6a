"""A full disk under the WAL: the consumer pauses, nothing is lost, and it resumes with room."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.scenario import Scenario, held_records
from tests.support import committed_offsets, wait_for

TMPFS_SIZE = "8m"


@pytest.fixture
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tmpfs of 8 MiB, mounted for the test and unmounted after it (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the WAL needs root")
    mountpoint = tmp_path_factory.mktemp("small-disk")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mountpoint)],
        capture_output=True, text=True, check=False,
    )
    if mounted.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the file system is full; return how many bytes fit."""
    written = 0
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                written += os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    return written
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)


def test_a_full_disk_pauses_the_consumer_and_loses_nothing(
    small_disk: Path, scenario: Scenario
) -> None:
    """With the WAL's file system full the consumer pauses (consumer_paused) and commits
    nothing it could not write; once space is freed it resumes and every record lands once."""
    bridge = scenario.bridge(wal_dir=small_disk / "wal")
    bridge.start()
    scenario.wait_assigned(bridge)
    scenario.workload.produce(500)
    wait_for(lambda: bridge.events("segment_shipped"), 60, "a first segment shipped",
             on_timeout=bridge.tail)
    filler = small_disk / "filler"
    filled = fill(filler)
    scenario.workload.produce(2_000)
    paused = wait_for(lambda: bridge.events("consumer_paused"), 60, "consumer_paused",
                      on_timeout=bridge.tail)
    assert "full" in paused[0]["reason"], paused
    # While paused the bridge stays up, and no commit passes what is durable: shipped, or
    # held in the WAL.
    assert bridge.alive(), bridge.tail()
    landed_while_full = len(scenario.landed.refresh().identities())
    held = held_records(small_disk / "wal")
    committed = committed_offsets(scenario.kafka.bootstrap, scenario.group, scenario.topic)
    assert sum(max(0, o) for o in committed.values()) <= landed_while_full + held, committed
    filler.unlink()
    wait_for(lambda: bridge.events("consumer_resumed"), 60, "consumer_resumed",
             on_timeout=bridge.tail)
    scenario.finish(filler_bytes=filled, landed_while_full=landed_while_full,
                    pauses=len(bridge.events("consumer_paused")))
