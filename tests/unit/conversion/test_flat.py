"""The fast path of conversion: it gives exactly what the general converter gives, or declines."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_parquet import batch, seal_of
from wal_bridge import conversion
from wal_bridge.conversion import Converted, Converter
from wal_bridge.conversion.flat import read_flat
from wal_bridge.schema import Field, FieldType, PayloadSchema

F = FieldType
FLAT = PayloadSchema((
    Field("id", F.INT64), Field("name", F.STRING), Field("amount", F.FLOAT64),
    Field("ok", F.BOOL), Field("at", F.TIMESTAMP),
))
GOOD = b'{"id":1,"name":"a","amount":1.5,"ok":true,"at":"2024-05-01T12:00:00Z"}'


def texts(values: Sequence[bytes]) -> pa.StringArray:
    return pa.array([v.decode() for v in values], pa.string())


def convert(values: Sequence[bytes], *, fast: bool, schema: PayloadSchema = FLAT) -> Converted:
    b = batch(values)
    converter = Converter(schema=schema)
    if fast:
        return converter.convert([b], seal_of(b))
    original = conversion.read_flat
    conversion.read_flat = lambda _schema, _text: None  # the general converter alone
    try:
        return converter.convert([b], seal_of(b))
    finally:
        conversion.read_flat = original


def test_flat_well_typed_records_take_the_fast_path() -> None:
    """Records that are exactly what a flat schema says are read by the fast path, typed."""
    values = [b'{"id":1,"name":"a","amount":1.5,"ok":true}',
              b'{"id":-2,"name":"\\u00e9\\"q","amount":3,"ok":false}', b"{}",
              b' {"name":"x","id":9223372036854775807} ']
    columns = read_flat(PayloadSchema(FLAT.fields[:4]), texts(values))
    assert columns is not None
    assert columns["id"].to_pylist() == [1, -2, None, 2**63 - 1]
    assert columns["name"].to_pylist() == ["a", 'é"q', None, "x"]
    assert columns["amount"].to_pylist() == [1.5, 3.0, None, None]
    assert columns["ok"].to_pylist() == [True, False, None, None]
    assert read_flat(FLAT, texts([GOOD])) is not None


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b'{"id":1,"extra":2}', "a key without a column"),
        (b'{"ID":1}', "a key spelled differently"),
        (b'{"id":1,"id":2}', "a repeated key"),
        (b'{"id":"1"}', "a string in an int64 column"),
        (b'{"id":1.0}', "a fraction in an int64 column"),
        (b'{"id":9223372036854775808}', "an integer beyond int64"),
        (b'{"name":5}', "a number in a string column"),
        (b'{"ok":1}', "a number in a bool column"),
        (b'{"amount":NaN}', "NaN"),
        (b'{"amount":-Infinity}', "Infinity"),
        (b'{"amount":1e400}', "a number beyond float64"),
        (b'{"at":"yesterday"}', "a string that is no timestamp"),
        (b'{"at":"2024-02-30T00:00:00Z"}', "an impossible date"),
        (b'{"id":1}{"id":2}', "two objects in one value"),
        (b'{"id":\n1}', "a line break"),
        (b'{"id":1,}', "a trailing comma"),
        (b'{"id":[1]}', "an array in an int64 column"),
    ],
)
def test_flat_declines_what_it_cannot_give_exactly(value: bytes, why: str) -> None:
    """Any surprise in a segment sends the whole segment to the general converter."""
    assert read_flat(FLAT, texts([GOOD, value])) is None, why


def test_flat_declines_a_schema_with_a_json_column() -> None:
    """json columns keep JSON text, which only the general converter writes."""
    schema = PayloadSchema((Field("id", F.INT64), Field("ctx", F.JSON)))
    assert read_flat(schema, texts([b'{"id":1,"ctx":null}'])) is None


# Segments of mostly well-typed records, some with one surprise: the fast path must either
# decline the segment or give what the general converter gives.
_FITTING = {
    "id": st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    "name": st.one_of(st.text(max_size=8).map(json.dumps),
                      st.text(max_size=8).map(lambda t: json.dumps(t, ensure_ascii=False))),
    "amount": st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                        st.integers(min_value=-(10**20), max_value=10**20).map(str)),
    "ok": st.sampled_from(["true", "false"]),
    "at": st.sampled_from(['"2024-05-01T12:00:00Z"', '"2024-05-01 12:00"',
                           '"2024-05-01T12:00:00.123456789+02:00"', '"0001-01-01T00:00:00Z"']),
}
_SURPRISES = [
    ("amount", "NaN"), ("amount", "Infinity"), ("amount", "-Infinity"), ("amount", "1e400"),
    ("amount", '"1.5"'), ("id", "1.0"), ("id", "1e2"), ("id", "9223372036854775808"),
    ("id", "01"), ("name", "5"), ("name", "null"), ("name", '"\\ud800"'), ("name", "{}"),
    ("ok", "1"), ("other", "1"), ("ID", "1"), ("", "1"), ("at", '"yesterday"'),
    ("at", '"2024-02-30T00:00:00Z"'), ("at", '"\\u0032024-05-01T12:00:00Z"'), ("at", "1"),
    ("id", "[1]"), ("name", '"a\tb"'),
]


def _encode(pairs: list[tuple[str, str]], trailer: str) -> bytes:
    return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in pairs) + "}" + trailer).encode()


@st.composite
def _records(draw: st.DrawFn, names: tuple[str, ...]) -> bytes:
    pairs = [(name, draw(st.one_of(st.just("null"), _FITTING[name])))
             for name in names if draw(st.booleans())]
    surprise = draw(st.one_of(st.none(), st.none(), st.sampled_from(_SURPRISES),
                              st.sampled_from(["repeat", "comma", "two", "newline"])))
    trailer = ""
    if surprise == "repeat" and pairs:
        pairs.append(pairs[0])
    elif surprise == "comma":
        pairs.append(("id", "1,"))
    elif surprise == "two":
        trailer = "{}"
    elif surprise == "newline":
        pairs.append(("name", '\n"x"'))
    elif isinstance(surprise, tuple) and (surprise[0] in names or surprise[0] not in FLAT.names):
        pairs.insert(draw(st.integers(0, len(pairs))), surprise)
    return _encode(pairs, trailer)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([FLAT, PayloadSchema(FLAT.fields[:4])]))
def test_flat_output_equals_the_general_converter(data: st.DataObject,
                                                   schema: PayloadSchema) -> None:
    """Whatever the fast path decides, the data and dead-letter tables are the general
    converter's, byte for byte."""
    values = data.draw(st.lists(_records(schema.names), min_size=1, max_size=6))
    fast = convert(values, fast=True, schema=schema)
    general = convert(values, fast=False, schema=schema)
    assert fast.data.equals(general.data, check_metadata=True)
    assert fast.dead_letters.equals(general.dead_letters, check_metadata=True)
    assert fast.cast_failures == general.cast_failures
