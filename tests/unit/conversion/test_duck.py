"""The DuckDB queries: keys and each field's JSON text per record, what fails, and the rest of
an object for _extra; field names are quoted, whatever they hold."""

from __future__ import annotations

import pyarrow as pa
import pytest

from wal_bridge.conversion.duck import (
    Duck,
    QueryFailed,
    extra_query,
    parse_query,
    values_query,
)
from wal_bridge.schema import Field, FieldType


def src(*values: str) -> pa.Table:
    return pa.table({"i": pa.array(range(10, 10 + len(values)), pa.int64()),
                     "v": pa.array(values, pa.string())})


def test_the_parse_query_gives_each_record_its_keys_and_each_field_as_json_text() -> None:
    """Keys in the record's order (repeats kept), values minified, a missing field NULL."""
    result = Duck(1).query(parse_query(["a", "it's"], validate=False), src(
        '{"b": [1, 2], "a": {"x" : null}}', '{"it\'s": "q", "a": 1, "a": 2}', "{}"))
    assert result.column("i").to_pylist() == [10, 11, 12]
    assert result.column("k").to_pylist() == [["b", "a"], ["it's", "a", "a"], []]
    fields = result.column("s").to_pylist()
    assert fields[0] == {"a": '{"x":null}', "it's": None}
    assert fields[1]["it's"] == '"q"'
    assert fields[2] == {"a": None, "it's": None}


def test_a_record_that_is_not_json_fails_the_query_unless_it_validates() -> None:
    """Without validation one bad record fails the whole query (QueryFailed); with it, only
    the JSON records come back, in order."""
    duck = Duck(1)
    table = src('{"a": 1}', "not json", '{"a": 3}')
    with pytest.raises(QueryFailed):
        duck.query(parse_query(["a"], validate=False), table)
    result = duck.query(parse_query(["a"], validate=True), table)
    assert result.column("i").to_pylist() == [10, 12]
    assert [s["a"] for s in result.column("s").to_pylist()] == ["1", "3"]


def test_the_values_query_reads_only_the_keys_asked_for() -> None:
    """Per record, the JSON text of each named key (NULL where it is absent)."""
    result = Duck(1).query(values_query(["x"]), src('{"x": [1,{"y":2}]}', '{"z": 1}'))
    assert result.column("s").to_pylist() == [{"x": '[1,{"y":2}]'}, {"x": None}]


def test_the_extra_query_keeps_the_rest_of_the_object_in_order() -> None:
    """The schema's fields are removed; every other key stays, in the record's order, nested
    nulls included."""
    fields = [Field("id", FieldType.INT64), Field("o'k", FieldType.STRING)]
    result = Duck(1).query(extra_query(fields), src(
        '{"z": 1, "id": 2, "o\'k": "x", "a": {"n": null}}', '{"id": 1}'))
    assert result.column("m").to_pylist() == ['{"z":1,"a":{"n":null}}', "{}"]
