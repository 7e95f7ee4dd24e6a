"""The converter as the sealer's threads share it: each call's result is its segment's alone."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pyarrow as pa

from tests.unit.test_parquet import batch, seal_of
from wal_bridge.parquet import Converted, Converter
from wal_bridge.schema import Field, FieldType, PayloadSchema

SCHEMA = PayloadSchema((Field("id", FieldType.INT64), Field("name", FieldType.STRING)))
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
    alone = {first: converted(Converter(1024, SCHEMA), values, first)
             for first, values in ((0, READABLE), (10, UNREADABLE))}
    converter = Converter(1024, SCHEMA)
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
    alone = {first: converted(Converter(1024, SCHEMA), values, first)
             for first, values in segments.items()}
    shared = Converter(1024, SCHEMA)
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
        assert read_flat(SCHEMA, text) is None
