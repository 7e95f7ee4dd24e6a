"""Numbers keep their characters: in ``_extra`` and in json columns each number is written as
the record wrote it, and a typed column takes a number only when it holds it exactly."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_parquet import batch, seal_of
from wal_bridge.conversion import Converted, Converter
from wal_bridge.conversion.flat import read_flat
from wal_bridge.schema import Field, FieldType, PayloadSchema, carried, infer_texts

TRADE = PayloadSchema((Field("trade_id", FieldType.STRING), Field("delta", FieldType.INT64),
                       Field("legs", FieldType.JSON)))
FLOATS = PayloadSchema((Field("id", FieldType.INT64), Field("x", FieldType.FLOAT64)))
NESTED = PayloadSchema((Field("id", FieldType.INT64), Field("j", FieldType.JSON)))


def convert(schema: PayloadSchema, values: Sequence[bytes]) -> Converted:
    b = batch(values)
    return Converter(1 << 20, schema).convert([b], seal_of(b))


def test_the_issue_record_keeps_every_digit() -> None:
    """The trade of the report: the fraction in the int64 column and the new field keep their
    text in _extra, the json column keeps every digit of its numbers."""
    record = (b'{"trade_id":"t-1","delta":169299987.35345112,"legs":[{"qty":'
              b'0.1000000000000000055511151231257827,"px":12345678901234567.89}],"fee":1E-7}')
    row = convert(TRADE, [record]).data.to_pylist()[0]
    assert row["delta"] is None
    assert row["_extra"] == '{"fee":1E-7,"delta":169299987.35345112}'
    assert row["legs"] == \
        '[{"qty":0.1000000000000000055511151231257827,"px":12345678901234567.89}]'


def test_a_float64_column_takes_only_what_a_double_carries() -> None:
    """0.1, 2.50, 1E-7, 1e2 and -0 are carried; 0.30000000000000004441, 9007199254740993,
    1e-400 and 1e400 are NULL in the column and kept as written in _extra."""
    texts = ["0.1", "2.50", "1E-7", "1e2", "-0", "0.30000000000000004441",
             "9007199254740993", "1e-400", "1e400"]
    rows = convert(FLOATS, [f'{{"id":{k},"x":{t}}}'.encode() for k, t in enumerate(texts)]
                   ).data.to_pylist()
    assert [r["x"] for r in rows[:5]] == [0.1, 2.5, 1e-7, 100.0, -0.0]
    assert all(r["_extra"] is None for r in rows[:5])
    assert [r["x"] for r in rows[5:]] == [None] * 4
    assert [r["_extra"] for r in rows[5:]] == [f'{{"x":{t}}}' for t in texts[5:]]


def test_inference_gives_a_json_column_to_numbers_a_double_does_not_carry() -> None:
    """The first data's schema: a number no double carries makes a json column (it takes the
    value exactly), an integer beyond 2^53 among integers stays int64."""
    schema = infer_texts({"a": ["1.5", "0.30000000000000004441"], "b": ["9007199254740993", "1"],
                          "c": ["1.5", "9007199254740993"]})
    assert [f.type for f in schema.fields] == [FieldType.JSON, FieldType.INT64, FieldType.JSON]


# ----------------------------------------------------------------------------- property tests

_DIGITS = st.text("0123456789", min_size=1, max_size=30)


@st.composite
def numbers(draw: Any) -> str:
    """A JSON number (RFC 8259 grammar): long mantissas, trailing zeros, exponents in both cases
    with or without a sign, -0, huge and tiny."""
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(st.one_of(st.just("0"), _DIGITS.map(lambda d: "1" + d if d[0] == "0" else d)))
    fraction = draw(st.one_of(st.just(""), _DIGITS.map(lambda d: "." + d)))
    exponent = draw(st.one_of(
        st.just(""),
        st.tuples(st.sampled_from("eE"), st.sampled_from(["", "+", "-"]),
                  st.integers(0, 500).map(str)).map("".join)))
    return sign + whole + fraction + exponent


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(numbers(), min_size=1, max_size=6), st.sampled_from(["", " ", "\n  "]))
def test_numbers_survive_byte_for_byte_in_extra_and_json_columns(
        found: list[str], space: str) -> None:
    """Random numbers in a json column (nested), as a new field (_extra) and as a value that
    does not fit its int64 column (_extra): every one comes out with its characters, whatever
    whitespace the record had between tokens."""
    values = []
    for k, n in enumerate(found):
        nested = f"[{space}{n},{space}{{{space}\"k\":{space}{n}}}]"
        values.append(f'{{"id":{space}{n},{space}"j":{nested},"n{k}":{space}{n}}}'.encode())
    rows = convert(NESTED, values).data.to_pylist()
    assert len(rows) == len(found)
    for k, (n, row) in enumerate(zip(found, rows, strict=True)):
        assert row["j"] == f'[{n},{{"k":{n}}}]'
        extra = json.loads(row["_extra"], parse_float=str, parse_int=str)
        assert extra[f"n{k}"] == n
        assert row["_extra"].startswith(f'{{"n{k}":{n}')
        if row["id"] is None:  # not an integer within int64: kept as written
            assert row["_extra"].endswith(f',"id":{n}}}')
        else:
            assert str(row["id"]) == str(int(n))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(numbers(), min_size=1, max_size=6))
def test_a_float64_column_holds_a_number_or_keeps_it_in_extra_on_both_paths(
        found: list[str]) -> None:
    """Each number is in the float64 column when a double carries it (and is then that
    double), else NULL there and byte for byte in _extra; the fast path gives the same column
    when it answers at all."""
    values = [f'{{"id":{k},"x":{n}}}'.encode() for k, n in enumerate(found)]
    data = convert(FLOATS, values).data
    for n, row in zip(found, data.to_pylist(), strict=True):
        if carried(n):
            assert row["x"] == float(n)
            assert row["_extra"] is None
            assert str(row["x"]).startswith("-") == str(float(n)).startswith("-")  # -0 too
        else:
            assert row["x"] is None
            assert row["_extra"] == f'{{"x":{n}}}'
    flat = read_flat(FLOATS, pa.array([v.decode() for v in values], pa.string()))
    if flat is not None:
        assert flat["x"].to_pylist() == data.column("x").to_pylist()
