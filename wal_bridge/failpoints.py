"""Failpoints: named steps at which a test can make the process die as abruptly as ``kill -9``.

The chaos tests set ``WAL_BRIDGE_FAILPOINT`` to one of :data:`FAILPOINTS`. At a crash point
(:data:`CRASH_POINTS`) the process exits at once with :data:`EXIT_CODE`, without flushing, closing
or unwinding anything. At an error point (:data:`ERROR_POINTS`) the step's system call fails as
the disk would make it fail, and the process handles that as it would handle the real error.
Unset (the default), a failpoint costs one string comparison.
"""

from __future__ import annotations

import errno
import os
import sys

EXIT_CODE = 86

CRASH_POINTS = frozenset(
    {
        "after_segment_create",  # new segment's header written, its entry fsynced, no frame yet
        "after_append_before_fsync",  # frame written to the segment, not yet fsynced
        "after_fsync_before_commit",  # batch durable in the WAL, offsets not committed
        "after_seal_trailer",  # seal frame written and fsynced, segment not yet renamed
        "after_seal_rename",  # segment renamed to .sealed, directory not yet fsynced
        "after_parquet_write",  # Parquet temp file written, not yet renamed into the outbox
        "after_convert_rename",  # Parquet renamed into the outbox
        "after_upload",  # object confirmed in the destination, nothing deleted yet
        "after_shipped_record",  # shipped offsets recorded, segment files not yet deleted
        "after_delete",  # segment and Parquet deleted, directory not yet fsynced
    }
)
ERROR_POINTS = frozenset(
    {
        "fsync_error",  # the next fsync of the active segment fails with EIO
    }
)
FAILPOINTS = CRASH_POINTS | ERROR_POINTS


class Failpoints:
    """The one armed failpoint of this process, if any."""

    def __init__(self, armed: str = "") -> None:
        if armed and armed not in FAILPOINTS:
            raise ValueError(f"unknown failpoint {armed!r}")
        self.armed = armed

    def hit(self, name: str) -> None:
        """Exit the process at once if ``name`` is the armed failpoint."""
        if name == self.armed:
            sys.stderr.write(f"failpoint {name}: exiting abruptly\n")
            sys.stderr.flush()
            os._exit(EXIT_CODE)

    def fail(self, name: str) -> None:
        """Raise the I/O error of a failing disk if ``name`` is the armed error point."""
        if name == self.armed:
            raise OSError(errno.EIO, f"failpoint {name}: injected I/O error")


DISARMED = Failpoints()
