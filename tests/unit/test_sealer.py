"""The sealer with several conversion threads: each segment is converted once, by one thread."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from wal_bridge.config import Destination
from wal_bridge.conversion import Converted, Converter
from wal_bridge.schema import SchemaStore
from wal_bridge.sealer import Sealer
from wal_bridge.wal.codec import RecordColumns
from wal_bridge.wal.log import Wal
from wal_bridge.wal.segment import SealInfo


class CountingConverter(Converter):
    """The real converter, counting how often it converted each segment."""

    def __init__(self, store: SchemaStore) -> None:
        super().__init__(1024, store)
        self.converted: Counter[int] = Counter()
        self._count = threading.Lock()

    def convert(self, batches: Sequence[pa.RecordBatch], seal: SealInfo) -> Converted:
        with self._count:
            self.converted[seal.segment] += 1
        return super().convert(batches, seal)


def batch(first: int, count: int) -> pa.RecordBatch:
    offsets = list(range(first, first + count))
    values = [json.dumps({"n": o, "name": f"e{o}"}).encode() for o in offsets]
    return RecordColumns(["events"] * count, [0] * count, offsets, [1_700_000_000_000] * count,
                         [None] * count, values, [None] * count).to_arrow()


def test_two_threads_convert_every_segment_exactly_once(tmp_path: Path) -> None:
    """Threads stepping the same sealer claim different segments: 12 segments, 12 conversions,
    each Parquet file holds its segment, and both threads pinned one schema between them."""
    root = tmp_path / "wal"
    wal = Wal.open(root, keys=Destination("gs", "bucket", "raw"), batch_size=5)
    for first in range(0, 60, 5):
        wal.append(batch(first, 5))
    store = SchemaStore.open(root)
    converter = CountingConverter(store)
    sealer = Sealer(wal, converter)
    start = threading.Barrier(2)

    def work() -> None:
        start.wait()
        while sealer.step():
            pass

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert dict(converter.converted) == dict.fromkeys(range(1, 13), 1)
    assert wal.to_convert() == []
    offsets = sorted(
        offset for seq in range(1, 13)
        for offset in pq.read_table(wal.parquet_path(seq)).column("_kafka_offset").to_pylist()
    )
    assert offsets == list(range(60))
    assert [f.name for f in (store.schema.fields if store.schema else ())] == ["n", "name"]
    wal.close()
