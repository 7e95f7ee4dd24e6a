"""The general path: typed columns, JSON text for nested values, and _extra for what has no
column or does not fit its own."""

from __future__ import annotations

import json

from tests.unit.test_parquet import convert


def test_values_are_typed_and_nested_values_are_json_text() -> None:
    """Each column holds its type; a json column keeps the value's JSON text (minified, order
    and nested nulls kept), strings are unescaped."""
    out = convert([b'{"id": -7, "name": "q\\"\\u00e9\\n", "amount": 1e2, "ok": true,'
                   b' "ctx": {"b": null, "a": [1.50, "x"]}}'])
    row = out.data.to_pylist()[0]
    assert (row["id"], row["name"], row["amount"], row["ok"]) == (-7, 'q"é\n', 100.0, True)
    assert json.loads(row["ctx"]) == {"b": None, "a": [1.5, "x"]}
    assert list(json.loads(row["ctx"])) == ["b", "a"]
    assert row["_extra"] is None


def test_a_new_field_goes_to_extra_with_its_json_value() -> None:
    """A field the schema does not have lands in _extra (a JSON object), with nested values,
    nulls and its order kept; rows without such fields have NULL there."""
    out = convert([b'{"id": 1, "new": {"x": null}, "other": [1, "a"], "none": null}',
                   b'{"id": 2}'])
    extra = out.data.column("_extra").to_pylist()
    assert extra[1] is None
    assert json.loads(extra[0]) == {"new": {"x": None}, "other": [1, "a"], "none": None}
    assert list(json.loads(extra[0])) == ["new", "other", "none"]
    assert out.data.column("id").to_pylist() == [1, 2]


def test_a_value_of_the_wrong_type_moves_to_extra_and_its_row_stays() -> None:
    """Type drift mid-stream (a string or 1.5 in an int64 column, a number in a string column,
    1 then 1.5 in float64 is fine) keeps the row: the column is NULL and the value sits in
    _extra under its own name; cast_failures counts such values."""
    out = convert([b'{"id": 1, "amount": 1}', b'{"id": 1.5, "amount": 1.5, "new": true}',
                   b'{"id": "3", "name": 3, "ok": "yes", "at": 1714564800}'])
    assert out.dead_letters.num_rows == 0
    assert out.data.column("id").to_pylist() == [1, None, None]
    assert out.data.column("amount").to_pylist() == [1.0, 1.5, None]
    assert [json.loads(e) if e else None for e in out.data.column("_extra").to_pylist()] == [
        None, {"new": True, "id": 1.5}, {"id": "3", "name": 3, "ok": "yes", "at": 1714564800}]
    assert out.cast_failures == 5


def test_reserved_and_unusable_field_names_are_kept_in_extra() -> None:
    """Payload fields named like the bridge's columns, the partition key or not usable as
    BigQuery columns never become columns, and never overwrite the identity."""
    out = convert([b'{"id": 1, "_kafka_offset": 99, "_extra": "mine", "dt": "x", "a-b": 2}'],
                  schema=None)
    row = out.data.to_pylist()[0]
    assert row["_kafka_offset"] == 0
    assert out.data.schema.names[:2] == ["id", "_extra"]
    assert json.loads(row["_extra"]) == {"_kafka_offset": 99, "_extra": "mine", "dt": "x",
                                         "a-b": 2}
