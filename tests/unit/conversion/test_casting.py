"""Casting a field's JSON text to its column: strict by JSON type, timestamps as RFC 3339."""

from __future__ import annotations

import pyarrow as pa
import pytest

from wal_bridge.conversion.casting import cast_fragments
from wal_bridge.schema import FieldType

F = FieldType


CASTS = [
    (F.STRING, ['"x"', '"a\\"b\\n\\u00e9"', "5", "true", '{"a":1}', None],
     ["x", 'a"b\né', None, None, None, None]),
    (F.INT64, ["5", "-0", "9223372036854775807", "9223372036854775808", "1.5", '"5"', None],
     [5, 0, 2**63 - 1, None, None, None, None]),
    (F.FLOAT64, ["1", "1.5", "-2e3", "1e400", '"1.5"', "true", None],
     [1.0, 1.5, -2000.0, None, None, None, None]),
    (F.BOOL, ["true", "false", '"true"', "1", None], [True, False, None, None, None]),
    (F.JSON, ['{"a":[1,null]}', '"x"', None], ['{"a":[1,null]}', '"x"', None]),
]


@pytest.mark.parametrize(("kind", "fragments", "expected"), CASTS,
                         ids=[k.value for k, _, _ in CASTS])
def test_a_value_fits_its_column_only_with_the_matching_json_type(
    kind: FieldType, fragments: list[str | None], expected: list[object]
) -> None:
    """Casting is strict by JSON type: no number in a string column, no 1.5 or "5" in an int64
    column, nothing beyond int64 or float64 range; what does not fit is NULL (and kept in
    _extra by the converter)."""
    assert cast_fragments(kind, pa.array(fragments, pa.string())).to_pylist() == expected


def test_timestamps_take_rfc3339_with_or_without_offset_in_microseconds() -> None:
    """Offsets are applied, no offset means UTC, digits finer than microseconds are cut, and
    impossible dates or other shapes do not fit."""
    values = cast_fragments(F.TIMESTAMP, pa.array([
        '"2024-05-01T12:00:00Z"', '"2024-05-01 12:00:00.1234567+02:00"', '"2024-05-01T12:00"',
        '"2024-02-30T00:00:00Z"', '"2024-05-01"', "1714564800", '"0000-01-01T00:00:00Z"', None,
    ], pa.string()))
    assert values.type == pa.timestamp("us", tz="UTC")
    assert [v.isoformat() if v else None for v in values.to_pylist()] == [
        "2024-05-01T12:00:00+00:00", "2024-05-01T10:00:00.123456+00:00",
        "2024-05-01T12:00:00+00:00", None, None, None, None, None,
    ]
