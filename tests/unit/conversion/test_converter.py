"""The converter: the two tables it assembles, and, shared by the sealer's threads, each call's
result its segment's alone."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pyarrow as pa

from tests.unit.test_parquet import GOOD, METADATA_NAMES, SCHEMA, batch, convert, seal_of
from wal_bridge.conversion import Converted, Converter
from wal_bridge.schema import Field, FieldType, PayloadSchema, SchemaStore
from wal_bridge.wal.codec import RecordColumns

ID_NAME = PayloadSchema((Field("id", FieldType.INT64), Field("name", FieldType.STRING)))
# Unknown keys a later query can read like columns, in two orders (``_extra`` follows the order
# the segment first shows them) ...
READABLE = [b'{"id": 1, "x": 1, "y": {"a": 2}}', b'{"id": 2, "y": [3], "x": "4"}',
            b'{"id": 3, "name": "c"}']
# ... and unknown keys it cannot (an empty key), which take the merge-patch way; the key order
# of each record is kept there.
UNREADABLE = [b'{"id": 4, "": 1, "z": 2}', b'{"z": 3, "id": 5, "": null}', b'{"id": "six"}']


def converted(converter: Converter, values: Sequence[bytes], first: int) -> Converted:
    b = batch(values, first=first)
    return converter.convert([b], seal_of(b, segment=first))


def same(a: Converted, b: Converted) -> bool:
    return (a.data.equals(b.data, check_metadata=True)
            and a.dead_letters.equals(b.dead_letters, check_metadata=True)
            and a.cast_failures == b.cast_failures)


def test_what_a_segment_gives_does_not_depend_on_the_segment_before() -> None:
    """A converter that just converted a segment with other unknown keys gives, for the next
    one, exactly what a fresh converter gives."""
    alone = {first: converted(Converter(1024, ID_NAME), values, first)
             for first, values in ((0, READABLE), (10, UNREADABLE))}
    converter = Converter(1024, ID_NAME)
    for first, values in ((0, READABLE), (10, UNREADABLE), (0, READABLE), (0, READABLE),
                          (10, UNREADABLE), (10, UNREADABLE), (0, READABLE)):
        assert same(converted(converter, values, first), alone[first])
    extra = alone[0].data.column("_extra").to_pylist()
    assert extra == ['{"x":1,"y":{"a":2}}', '{"x":"4","y":[3]}', None]
    assert alone[10].data.column("_extra").to_pylist() == [
        '{"":1,"z":2}', '{"z":3,"":null}', '{"id":"six"}']


def test_two_threads_converting_at_once_give_what_each_gives_alone() -> None:
    """Two threads sharing one converter (as the sealer's do), converting segments with
    different unknown keys at the same time, each get exactly what their segment gives when
    converted alone, every time."""
    segments = {0: READABLE, 10: UNREADABLE}
    alone = {first: converted(Converter(1024, ID_NAME), values, first)
             for first, values in segments.items()}
    shared = Converter(1024, ID_NAME)
    start = threading.Barrier(len(segments))
    differed: list[tuple[int, int]] = []
    failed: list[BaseException] = []

    def work(first: int) -> None:
        start.wait()
        try:
            for attempt in range(300):
                if not same(converted(shared, segments[first], first), alone[first]):
                    differed.append((first, attempt))
        except Exception as exc:  # noqa: BLE001 - any failure of a thread fails the test
            failed.append(exc)

    threads = [threading.Thread(target=work, args=(first,)) for first in segments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failed == []
    assert differed == []


def test_both_segments_need_the_general_converter() -> None:
    """Both segments need the general converter (unknown keys): the fast path declines them,
    so the tests above exercise the state they are about."""
    from wal_bridge.conversion.flat import read_flat

    for values in (READABLE, UNREADABLE):
        text = pa.array([v.decode() for v in values], pa.string())
        assert read_flat(ID_NAME, text) is None


def test_a_segment_of_only_bad_records_has_an_empty_data_table() -> None:
    """When nothing decodes, the data table is empty (with the schema's columns) and every
    record is a dead letter, in offset order."""
    out = convert([None, b"x", b"[]"])
    assert out.data.num_rows == 0
    assert out.data.schema.names[:6] == list(SCHEMA.names)
    assert out.dead_letters.column("_kafka_offset").to_pylist() == [0, 1, 2]
    assert out.dead_letters.column("_reason").to_pylist() == ["tombstone", "not_json",
                                                              "not_object"]


def test_rows_keep_identity_and_timestamps_in_utc_milliseconds() -> None:
    """_kafka_timestamp is the broker's time in ms (NULL when it gave none), _ingested_at the
    seal time, _key and _headers the record's own."""
    b = RecordColumns(["t"] * 2, [1, 1], [5, 6], [1_714_564_700_123, -1], [b"key", None],
                      [GOOD[0], GOOD[1]], [[("a", b"1"), ("b", None)], None]).to_arrow()
    out = Converter(1024, SCHEMA).convert([b], seal_of(b))
    rows = out.data.select(METADATA_NAMES).to_pylist()
    assert rows[0]["_kafka_timestamp"].isoformat() == "2024-05-01T11:58:20.123000+00:00"
    assert rows[1]["_kafka_timestamp"] is None
    assert {r["_ingested_at"].isoformat() for r in rows} == {"2024-05-01T12:00:00.123000+00:00"}
    assert rows[0]["_kafka_key"] == b"key"
    assert rows[0]["_kafka_headers"] == [{"key": "a", "value": b"1"},
                                         {"key": "b", "value": None}]
    assert (rows[1]["_kafka_key"], rows[1]["_kafka_headers"]) == (None, None)


def test_an_empty_segment_converts_to_empty_tables() -> None:
    """No records: both tables are empty and carry their full schemas."""
    store = SchemaStore(SCHEMA)
    out = Converter(1024, store).convert([], seal_of())
    assert out.data.num_rows == 0
    assert out.dead_letters.num_rows == 0
    assert out.data.schema.names == [*SCHEMA.names, "_extra", *METADATA_NAMES]
