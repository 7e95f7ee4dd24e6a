"""The sealer: with several conversion threads each segment is converted once, by one thread;
conversion waits for the destination or the schema registry, and says when consuming should
pause for the registry."""

from __future__ import annotations

import io
import json
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.fakes import FailingSink, FakeRegistry
from wal_bridge.config import Destination
from wal_bridge.conversion import Converted, Converter
from wal_bridge.schema import SchemaStore, SharedSchema
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


@pytest.mark.parametrize("transient", [True, False], ids=["transient", "permanent"])
def test_a_destination_that_cannot_store_the_schema_holds_conversion_back(
        tmp_path: Path, transient: bool) -> None:
    """Until the schema is stored, nothing converts (the segment stays sealed in the WAL), the
    attempts wait a doubling delay instead of spinning, and only a permanent refusal makes the
    bridge unready; once the destination takes it, the segment converts."""
    sink = FailingSink(tmp_path / "bucket", 1, transient=transient)
    root = tmp_path / "wal"
    wal = Wal.open(root, keys=sink.destination, batch_size=5)
    wal.append(batch(0, 5))
    shared = SharedSchema(sink, sink.destination.schema_key, root)
    sealer = Sealer(wal, Converter.open(1024, root, None, shared))
    for _ in range(20):
        sealer.step()
    assert sink.calls == 1  # the next attempt waits a second
    assert [s.converted for s in wal.to_convert()] == [False]
    assert (sealer.schema_blocked is None) is transient
    if not transient:
        assert "HTTP 403" in str(sealer.schema_blocked)
    sealer._schema_retry_at = 0.0  # the delay has passed; the sink takes the next put
    sealer.step()
    assert sealer.schema_blocked is None
    assert wal.to_convert() == []
    assert wal.to_ship()[0].converted


def test_a_segment_without_columns_waits_for_one_that_decides_the_schema(
        tmp_path: Path) -> None:
    """With no schema yet, a first segment of ``{}`` records is passed over (it decides
    nothing), the next segment fixes the schema, and then the first converts with it."""
    root = tmp_path / "wal"
    wal = Wal.open(root, keys=Destination("gs", "bucket", "raw"), batch_size=3)
    empty = RecordColumns(["events"] * 3, [0] * 3, [0, 1, 2], [1_700_000_000_000] * 3,
                          [None] * 3, [b"{}"] * 3, [None] * 3).to_arrow()
    wal.append(empty)
    wal.append(batch(3, 3))
    converter = CountingConverter(SchemaStore.open(root))
    sealer = Sealer(wal, converter)
    while sealer.step():
        pass
    assert wal.to_convert() == []
    assert dict(converter.converted) == {1: 2, 2: 1}  # the first: passed over, then converted
    assert json.loads((root / "schema.json").read_text()) == [
        {"name": "n", "type": "int64"}, {"name": "name", "type": "string"}]
    first = pq.read_table(wal.parquet_path(1))
    assert first.column_names[:3] == ["n", "name", "_extra"]
    assert first.column("_kafka_offset").to_pylist() == [0, 1, 2]


def test_a_registry_that_does_not_answer_holds_consuming_until_it_does(tmp_path: Path) -> None:
    """A segment whose schema cannot be fetched waits (no Parquet, no dead letter) and the
    sealer's registry_hold names the registry as unreachable, the consumer's pause reason;
    once the registry answers the segment converts and the hold lifts."""
    import fastavro
    from confluent_kafka.schema_registry import Schema

    from wal_bridge.conversion.decode import Decoding

    schema = {"type": "record", "name": "E", "fields": [{"name": "id", "type": "long"}]}
    values = []
    for i in range(5):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, fastavro.parse_schema(schema), {"id": i})
        values.append(b"\x00\x00\x00\x00\x01" + out.getvalue())
    root = tmp_path / "wal"
    wal = Wal.open(root, keys=Destination("gs", "bucket", "raw"), batch_size=5)
    wal.append(RecordColumns(["events"] * 5, [0] * 5, list(range(5)), [1_700_000_000_000] * 5,
                             [None] * 5, values, [None] * 5).to_arrow())
    registry = FakeRegistry({1: Schema(json.dumps(schema), "AVRO")})
    registry.down = True
    converter = Converter(schema=SchemaStore.open(root),
                          decoding=Decoding(registry, "avro"))  # type: ignore[arg-type]
    sealer = Sealer(wal, converter)
    assert sealer.registry_hold() is None
    sealer.step()
    assert str(sealer.registry_hold()).startswith("schema registry unreachable: ")
    assert "ConnectError" in str(sealer.registry_hold())
    assert sealer.schema_blocked is None  # transient: the bridge stays ready for it
    assert [s.converted for s in wal.to_convert()] == [False]
    registry.down = False
    sealer._schema_retry_at = 0.0  # the delay has passed
    sealer.step()
    assert sealer.registry_hold() is None
    assert wal.to_convert() == []
    assert pq.read_table(wal.parquet_path(1)).column("id").to_pylist() == list(range(5))
    wal.close()


def test_the_registry_hold_ends_when_nothing_waits_for_conversion(tmp_path: Path) -> None:
    """A registry failure remembered while no sealed segment waits (the one that failed was set
    aside, say) holds nothing back: the consumer is never paused for work that is gone."""
    wal = Wal.open(tmp_path / "wal", keys=Destination("gs", "bucket", "raw"), batch_size=5)
    sealer = Sealer(wal, Converter(schema=SchemaStore.open(tmp_path / "wal")))
    sealer.registry_down = "schema registry unreachable: schema id 1: ConnectError"
    assert sealer.registry_hold() is None
    wal.append(batch(0, 5))
    assert sealer.registry_hold() == sealer.registry_down
    wal.close()


@pytest.mark.parametrize(("transient", "expected"), [
    (True, "schema registry unreachable: schema id 7: ConnectError: refused"),
    (False, "schema registry refused the bridge: schema id 7: ConnectError: refused"),
], ids=["transient", "credentials"])
def test_the_pause_reason_says_whether_the_registry_was_away_or_refused(
        transient: bool, expected: str) -> None:
    """The consumer's pause reason names the registry once, then what failed."""
    from wal_bridge.errors import RegistryError
    from wal_bridge.sealer import registry_pause_reason

    error = RegistryError("schema registry: schema id 7: ConnectError: refused",
                          transient=transient)
    assert registry_pause_reason(error) == expected
