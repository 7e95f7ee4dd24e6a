"""Schema inference and conversion read a record the same way: the schema of the first data is
decided from what conversion itself parses, an empty schema is never pinned, and records nested
deeper than MAX_DEPTH are dead letters for both."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from tests.unit.test_parquet import batch, seal_of
from wal_bridge import conversion
from wal_bridge.conversion import Converted, Converter, SchemaUndecided
from wal_bridge.conversion.screen import MAX_DEPTH
from wal_bridge.schema import FieldType, SchemaStore

DEEP = b'{"user":"u1","tree":' + b"[" * 1200 + b"]" * 1200 + b"}"
U2 = b'{"user":"u2","score":5}'


def convert(converter: Converter, values: Sequence[bytes | None], first: int) -> Converted:
    b = batch(values, first=first)
    return converter.convert([b], seal_of(b, segment=first))


def pinned_store(tmp_path: Path) -> SchemaStore:
    return SchemaStore.open(tmp_path)  # no SCHEMA_FILE: the first data decides


def test_a_deep_first_record_is_a_dead_letter_and_the_next_data_decides(tmp_path: Path) -> None:
    """The deep first record goes to the dead-letter table as too_deep and pins nothing; the
    later segment's record decides the schema, and u2's fields land as columns."""
    converter = Converter(1 << 20, pinned_store(tmp_path))
    first = convert(converter, [DEEP], 0)
    assert first.data.num_rows == 0
    assert first.dead_letters.column("_reason").to_pylist() == ["too_deep"]
    assert "1201 levels" in first.dead_letters.column("_detail")[0].as_py()
    assert not (tmp_path / "schema.json").exists()

    second = convert(converter, [U2], 10)
    assert json.loads((tmp_path / "schema.json").read_text()) == [
        {"name": "user", "type": "string"}, {"name": "score", "type": "int64"}]
    row = second.data.to_pylist()[0]
    assert (row["user"], row["score"], row["_extra"]) == ("u2", 5, None)


def test_nesting_up_to_the_limit_is_read_by_both_stages(tmp_path: Path) -> None:
    """A record exactly MAX_DEPTH levels deep (the object included) is a row with its nested
    value as JSON text; one level more is a dead letter."""
    inner = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    ok = ('{"user":"u1","tree":' + inner + "}").encode()
    over = ('{"user":"u1","tree":[' + inner + "]}").encode()
    converted = convert(Converter(1 << 20, pinned_store(tmp_path)), [ok, over], 0)
    assert converted.data.column("tree").to_pylist() == [inner]
    assert converted.dead_letters.column("_reason").to_pylist() == ["too_deep"]


def test_an_empty_first_record_waits_for_data_with_fields(tmp_path: Path) -> None:
    """A first segment of ``{}`` decides nothing (a warning says so, nothing is pinned); once a
    later segment decides the schema, the ``{}`` segment converts with it, its row all NULL."""
    converter = Converter(1 << 20, pinned_store(tmp_path))
    with capture_logs() as logs, pytest.raises(SchemaUndecided):
        convert(converter, [b"{}", b'{"1bad": 2}'], 0)
    assert [(e["event"], e["log_level"]) for e in logs] == [("schema_undecided", "warning")]
    assert converter.store.schema is None
    assert not (tmp_path / "schema.json").exists()

    convert(converter, [U2], 10)
    assert [f.name for f in converter.store.schema.fields] == ["user", "score"]  # type: ignore[union-attr]
    rows = convert(converter, [b"{}", b'{"1bad": 2}'], 0).data.to_pylist()
    assert [(r["user"], r["score"], r["_extra"]) for r in rows] == [
        (None, None, None), (None, None, '{"1bad":2}')]


def test_an_empty_schema_is_never_pinned(tmp_path: Path) -> None:
    """The store refuses to fix a schema without columns."""
    from wal_bridge.schema import PayloadSchema
    store = pinned_store(tmp_path)
    with pytest.raises(ValueError, match="never pinned"):
        store.pin(PayloadSchema(()))
    assert not (tmp_path / "schema.json").exists()


# ----------------------------------------------------------------------------- the fuzz test

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5),
    st.sampled_from(["2026-05-01T12:00:00Z", "2026-02-30 10:00"]),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=8)
_KEYS = st.sampled_from(["a", "A", "b", "ts", "1x", "", "_extra", "n"])


def _record(draw: Any) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:  # JSON, but not an object
        return json.dumps(draw(_VALUES)).encode()
    if kind == 1:  # broken or non-standard text
        return draw(st.sampled_from([b"{", b'{"a":1,}', b'{"a":NaN}', b'{"a":1}x', b"nope",
                                     b'{"a":1,"a":2}', b'{"a":"\\x"}', b"[" * 600 + b"]" * 600,
                                     b'{"a":' + b"[" * 600 + b"]" * 600 + b"}"]))
    pairs = draw(st.lists(st.tuples(_KEYS, _VALUES), max_size=4, unique_by=lambda p: p[0]))
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"
    return text.encode()


@st.composite
def segments(draw: Any) -> list[bytes]:
    return [_record(draw) for _ in range(draw(st.integers(1, 8)))]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segments())
def test_inference_and_conversion_agree_on_what_a_record_is(values: list[bytes]) -> None:
    """The same random records, with no schema yet (the first data decides) and again with
    that schema fixed: each record is a row or a dead letter, the same one with the same reason
    both times, and a record that shaped a column is a row."""
    first = Converter(1 << 20)
    try:
        inferred = convert(first, values, 0)
    except SchemaUndecided:
        assert first.store.schema is None
        return
    schema = first.store.schema
    if schema is None:  # no record is a row: nothing decided, nothing pinned
        assert inferred.data.num_rows == 0
        assert inferred.dead_letters.num_rows == len(values)
        return
    assert schema.fields
    fixed = convert(Converter(1 << 20, schema), values, 0)
    assert inferred.data.column("_kafka_offset").to_pylist() == \
        fixed.data.column("_kafka_offset").to_pylist()
    assert inferred.dead_letters.select(["_kafka_offset", "_reason"]).to_pylist() == \
        fixed.dead_letters.select(["_kafka_offset", "_reason"]).to_pylist()
    # Every column was shaped by some row's field, and every row's typed values fit the type
    # inference chose: the first data lands in its columns, not in _extra, when its key has one.
    rows = inferred.data.to_pylist()
    for f in schema.fields:
        assert any(row[f.name] is not None or _extra_has(row, f.name) or _null_field(
            values, row, f.name) for row in rows)
        if f.type is not FieldType.JSON:
            assert not any(_extra_has(row, f.name) for row in rows), (f, rows)


def _extra_has(row: dict[str, Any], name: str) -> bool:
    return row["_extra"] is not None and name in json.loads(row["_extra"])


def _null_field(values: list[bytes], row: dict[str, Any], name: str) -> bool:
    record = json.loads(values[row["_kafka_offset"]])
    return name in record and record[name] is None


# ------------------------------------------------------- the first schema without DuckDB

_FLAT_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(allow_nan=False), st.text(max_size=4),
    st.sampled_from(["2026-05-01T12:00:00Z", "2026-02-30 10:00", "1e5", 0.0, -0.0, 1e-320]),
)


@st.composite
def flat_segments(draw: Any) -> list[bytes]:
    keys = st.sampled_from(["a", "b", "ts", "A", "1x"])
    records = draw(st.lists(st.dictionaries(keys, _FLAT_SCALARS, max_size=4), min_size=1,
                            max_size=6))
    return [json.dumps(r).encode() for r in records]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flat_segments())
def test_the_fast_first_schema_is_the_one_duckdb_reading_decides(values: list[bytes]) -> None:
    """Where the first segment is decided without DuckDB, deciding it with DuckDB's reading
    gives the same schema, and converting the segment gives the same rows."""
    fast = Converter(1 << 20)
    try:
        fast_rows = convert(fast, values, 0)
    except SchemaUndecided:
        return
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(conversion, "flat_first_schema", lambda _text: None)
        slow = Converter(1 << 20)
        slow_rows = convert(slow, values, 0)
    assert fast.store.schema == slow.store.schema
    assert fast_rows.data.equals(slow_rows.data)
    assert fast_rows.dead_letters.equals(slow_rows.dead_letters)


def test_a_flat_first_segment_never_loads_duckdb() -> None:
    """The usual first segment (flat records of strings, numbers, zero among them, booleans
    and timestamps) decides the schema and converts with DuckDB unimportable: it is never
    loaded, which saves ~50 MiB resident."""
    script = (
        "import sys, json\n"
        "from tests.unit.test_parquet import batch, seal_of\n"
        "sys.modules['duckdb'] = None  # any import of it now fails\n"
        "from wal_bridge.conversion import Converter\n"
        "values = [json.dumps({'id': i, 'user': f'u{i}', 'amount': i * 1.25, 'ok': i % 2 == 0,"
        " 'ts': '2026-05-01T12:00:00Z'}).encode() for i in range(100)]\n"
        "b = batch(values, first=0)\n"
        "out = Converter(1 << 20).convert([b], seal_of(b, segment=0))\n"
        "print(out.data.num_rows, out.data.column('_extra').null_count)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=False, cwd=Path(__file__).resolve().parents[3])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["100", "100"]
