"""The outbox: converted and shipped bookkeeping of sealed segments.

A sealed segment is *converted* once its Parquet file (and its dead-letter file, when it has
dead letters) is published in ``outbox/``; the data file's presence is the mark. A failed upload
leaves ``N.status.json`` beside it (attempts, last error, stuck or not) for ``inspect`` and
``replay``. Once its object is confirmed in the destination, the segment is *shipped*: its
offsets move forward in ``state.json`` first, then its files are deleted, so a crash in between
only leaves files that the next start ships again (the upload is idempotent).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from wal_bridge import durable
from wal_bridge.failpoints import Failpoints
from wal_bridge.wal.layout import ShippedState, WalLayout
from wal_bridge.wal.segment import Ranges, TopicPartition


class Outbox:
    """The outbox's files and ``state.json``, with what was shipped kept in memory.

    Not thread-safe on its own: the :class:`~wal_bridge.wal.log.Wal` calls the methods that
    change :attr:`shipped_next` under its index lock, and one :meth:`Wal.mark_shipped` at a
    time, so ``state.json`` only moves forward.
    """

    def __init__(self, layout: WalLayout, failpoints: Failpoints,
                 now_ms: Callable[[], int]) -> None:
        self.layout = layout
        self.failpoints = failpoints
        self._now_ms = now_ms
        self.shipped_next: dict[TopicPartition, int] = {}  # per partition, after what shipped
        self.last_shipped_seq = 0

    def load(self) -> int:
        """Read ``state.json``; return the highest segment number shipped (0: none)."""
        shipped = self.layout.read_shipped()
        self.shipped_next = dict(shipped.next_offsets)
        self.last_shipped_seq = shipped.last_segment
        return self.last_shipped_seq

    # ----------------------------------------------------------------------------- converted

    def publish(self, seq: int, tmp: Path, dead_tmp: Path | None) -> int:
        """Publish fsynced Parquet temp files as the converted form of segment ``seq``; return
        their bytes.

        The dead-letter file goes first: the data file's presence is what marks the segment
        converted, so a crash in between leaves a segment that is simply converted again.
        """
        self.failpoints.hit("after_parquet_write")
        if dead_tmp is not None:
            durable.rename(dead_tmp, self.layout.dead_letters(seq))
        durable.publish(tmp, self.layout.parquet(seq))  # one directory fsync covers both
        self.failpoints.hit("after_convert_rename")
        return self.bytes(seq)

    def bytes(self, seq: int) -> int:
        """Bytes of segment ``seq``'s Parquet and dead-letter files."""
        return sum(p.stat().st_size for p in (self.layout.parquet(seq),
                                              self.layout.dead_letters(seq)) if p.exists())

    def record_upload_failure(self, seq: int, error: str, *, permanent: bool) -> int:
        """Keep the attempt count and last error beside the Parquet file (for inspect); return
        the number of attempts so far."""
        status = self.layout.read_upload_status(seq) or {"attempts": 0}
        status.update(
            attempts=int(status.get("attempts", 0)) + 1, last_error=error,
            last_attempt_ms=self._now_ms(), stuck=permanent,
        )
        durable.write_atomic(self.layout.upload_status(seq), json.dumps(status).encode())
        return int(status["attempts"])

    # ----------------------------------------------------------------------------- shipped

    def record_shipped(self, seq: int, ranges: Ranges) -> ShippedState:
        """Move the shipped offsets past segment ``seq``'s ranges (in memory); return the state
        to write with :meth:`write_state`."""
        for tp, rng in ranges.items():
            self.shipped_next[tp] = max(self.shipped_next.get(tp, 0), rng.last + 1)
        self.last_shipped_seq = max(self.last_shipped_seq, seq)
        return ShippedState(self.last_shipped_seq, dict(self.shipped_next))

    def write_state(self, state: ShippedState) -> None:
        """Make ``state`` durable in ``state.json``."""
        durable.write_atomic(self.layout.state, state.to_json())

    def remove(self, seq: int) -> None:
        """Delete segment ``seq``'s outbox files (the caller fsyncs the directory)."""
        for path in self.layout.outbox_files(seq):
            path.unlink(missing_ok=True)
