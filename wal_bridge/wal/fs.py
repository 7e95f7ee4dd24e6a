"""Moved to :mod:`wal_bridge.durable`; this alias goes once no module imports it."""

from wal_bridge.durable import (  # noqa: F401 - re-exported for importers not yet moved
    TEMP_SUFFIX,
    fsync_dir,
    fsync_file,
    publish,
    remove_temp_files,
    temp_path,
    write_atomic,
)
