"""Screening and reasons: each kind of bad record is a dead letter with its reason, and values
that only look suspect stay rows."""

from __future__ import annotations

import pytest

from tests.unit.test_parquet import GOOD, SEALED_AT, convert

BAD = [
    (None, "tombstone", "no value"),
    (b"", "empty", "empty"),
    (b'{"name": "' + b"x" * 2000 + b'"}', "too_large", "exceed MAX_RECORD_BYTES=1024"),
    (b'{"name": "\xc3\x28"}', "invalid_utf8", "not valid UTF-8"),
    (b"hello", "not_json", "Expecting value"),
    (b'{"id": 1', "not_json", "Expecting ',' delimiter"),
    (b'{"id": 1} trailing', "not_json", "Extra data"),
    (b'{"id": 1}{"id": 2}', "not_json", "Extra data"),
    (b'{"id": 1,}', "not_json", "Expecting property name"),
    (b'{"ctx": [1, 2,]}', "not_json", "Expecting value"),
    (b'{"amount": NaN}', "not_json", "NaN is not a JSON number"),
    (b'{"ctx": {"x": -Infinity}}', "not_json", "-Infinity is not a JSON number"),
    (b'{"id": 1, "e": inf}', "not_json", "Expecting value"),
    (b'{"id": 01}', "not_json", "Expecting ',' delimiter"),
    (b'{"name": "\\ud800"}', "not_json", "rejected by the JSON parser"),
    (b"[1, 2]", "not_object", "an array"),
    (b'"text"', "not_object", "a string"),
    (b"42", "not_object", "a number"),
    (b"null", "not_object", "null"),
    (b'{"id": 1, "id": 2}', "duplicate_key", "key 'id' appears more than once"),
    (b'{"ctx": 1, "n": {}, "n": 2}', "duplicate_key", "key 'n'"),
]


@pytest.mark.parametrize(("value", "reason", "detail"), BAD, ids=[f"{r}:{v!r:.30}"
                                                                  for v, r, _ in BAD])
def test_each_kind_of_bad_record_goes_to_the_dead_letter_table(
    value: bytes | None, reason: str, detail: str
) -> None:
    """A bad record is neither dropped nor blocking: it lands in the dead-letter table with its
    raw bytes, reason, topic, partition, offset, key and headers; its neighbours are rows."""
    out = convert([GOOD[0], value, GOOD[1]], partition=4, first=100)
    assert out.data.column("_kafka_offset").to_pylist() == [100, 102]
    assert out.data.column("id").to_pylist() == [1, 2]
    dead = out.dead_letters.to_pylist()
    assert len(dead) == 1
    assert dead[0]["_reason"] == reason
    assert detail in dead[0]["_detail"]
    identity = (dead[0]["_kafka_topic"], dead[0]["_kafka_partition"], dead[0]["_kafka_offset"])
    assert identity == ("events", 4, 101)
    assert dead[0]["_value"] == value
    assert dead[0]["_kafka_key"] is None  # odd positions have no key in the fixture
    assert dead[0]["_kafka_timestamp"].timestamp() * 1000 == 1_714_564_700_001
    assert dead[0]["_ingested_at"].timestamp() * 1000 == SEALED_AT


def test_values_that_only_look_suspect_stay_rows() -> None:
    """Text mentioning NaN, info or a ',}' inside strings, whitespace around the object and
    pretty-printed JSON are fine records, not dead letters."""
    values = [
        b'{"name": "NaN and Infinity, info", "ctx": {"note": "nan,}"}}',
        b'  \n{"id": 3}\r\n ',
        b'{\n  "id": 4,\n  "ctx": [\n    1\n  ]\n}',
    ]
    out = convert(values)
    assert out.dead_letters.num_rows == 0
    assert out.data.column("name").to_pylist() == ["NaN and Infinity, info", None, None]
    assert out.data.column("ctx").to_pylist() == ['{"note":"nan,}"}', None, "[1]"]
    assert out.data.column("id").to_pylist() == [None, 3, 4]
