"""The write-ahead log, one role per module.

codec (frames: bytes in, records out), segment (segment files: names, scan, ranges, seal info,
salvage), layout (the directory: every path, read-only readers), lock (flock and identity),
recovery (scan results in, index and report out), salvage (a damaged segment's verified
frames and the offsets to re-fetch, pure), quarantine (what cannot be healed, set aside and
released), outbox (converted and shipped bookkeeping, ``state.json``), log (:class:`Wal`:
append, seal, index, offsets; composes the others).
"""
