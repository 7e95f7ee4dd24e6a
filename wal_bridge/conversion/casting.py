"""Casting: a field's JSON text in every record (a "fragment") to its column's Arrow type.

Each column is made from the JSON text of its field's value in every record (a "fragment",
minified by the parser: numbers, strings with their quotes, objects...). A value fits its
column only if its JSON type is the column's: a string column takes strings (not numbers), an
int64 column integers (not 1.5 or "1"), a float64 column any number a double carries exactly
(:func:`wal_bridge.conversion.numbers.carried`), a bool column true or
false, a timestamp column a string matching TIMESTAMP_PATTERN, a json column anything. A value
that does not fit gives NULL here, and the caller keeps it in _extra.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from wal_bridge.conversion import numbers
from wal_bridge.schema import (
    INT64_MAX,
    INT64_MIN,
    TIMESTAMP_PATTERN,
    TIMESTAMP_RANGE_US,
    FieldType,
)

_INT18 = r"^-?(0|[1-9][0-9]{0,17})$"  # at most 18 digits: always inside int64
_INT19 = r"^-?[1-9][0-9]{18}$"  # 19 digits: inside int64 or not, Python decides
_NUMBER = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
_QUOTED_TIMESTAMP = f'^"{TIMESTAMP_PATTERN}"$'
_PLAIN_TIMESTAMP = (r'^"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?'
                    r'(Z|[+-][0-9]{2}(:?[0-9]{2})?)"$')
_NO_OFFSET = r"[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?$"  # no offset given: UTC is meant


def cast_fragments(kind: FieldType, frags: pa.Array) -> pa.Array:
    """Column values from JSON fragments (a string array, NULL for a missing or null field)."""
    if kind is FieldType.JSON:
        return frags
    if kind is FieldType.STRING:
        return _strings(frags)
    if kind is FieldType.BOOL:
        return pc.if_else(pc.equal(frags, _TRUE_TEXT), _TRUE,
                          pc.if_else(pc.equal(frags, _FALSE_TEXT), _FALSE, _none(pa.bool_())))
    if kind is FieldType.INT64:
        return _ints(frags)
    if kind is FieldType.FLOAT64:
        try:  # the usual case, every value a number: Arrow's parser alone
            values = _optimistic(frags, pa.float64())
        except pa.ArrowInvalid:
            ok = pc.match_substring_regex(frags, _NUMBER)
            values = pc.if_else(ok, frags, _none(pa.string())).cast(pa.float64())
        values = pc.if_else(pc.is_finite(values), values, _none(pa.float64()))
        return _carried(frags, values)
    return _timestamps(frags)


def _none(kind: pa.DataType) -> pa.Scalar:
    return pa.scalar(None, kind)


def _text(value: str) -> pa.Scalar:
    # Typed scalars: a bare Python literal in a compute call costs a slow conversion each time.
    return pa.scalar(value, pa.string())


_TRUE, _FALSE = pa.scalar(True, pa.bool_()), pa.scalar(False, pa.bool_())
_TRUE_TEXT, _FALSE_TEXT = _text("true"), _text("false")
_FIRST_US, _LAST_US = (pa.scalar(v, pa.int64()) for v in TIMESTAMP_RANGE_US)


def within_bigquery_range(values: pa.Array) -> pa.Array:
    """``values`` (a timestamp[us] array) with every instant outside BigQuery's TIMESTAMP range
    (:data:`TIMESTAMP_RANGE_US`, both ends included) made NULL."""
    micros = values.view(pa.int64())
    inside = pc.and_(pc.greater_equal(micros, _FIRST_US), pc.less_equal(micros, _LAST_US))
    return pc.if_else(inside, values, pa.scalar(None, values.type))


def _strings(frags: pa.Array) -> pa.Array:
    quoted = pc.starts_with(frags, '"')
    out = pc.if_else(quoted, pc.utf8_slice_codeunits(frags, 1, -1), _none(pa.string()))
    data = frags.buffers()[2]
    if data is None or b"\\" not in data.to_pybytes():
        return out  # no escapes anywhere: one look at the bytes instead of one per value
    escaped = pc.fill_null(pc.and_(quoted, pc.match_substring(frags, "\\")), _FALSE)
    # Strings with escapes: Arrow's JSON reader decodes them all at once.
    lines = pc.binary_join_element_wise(_text('{"v":'), frags.filter(escaped), _text("}"),
                                        _text(""))
    decoded = pajson.read_json(
        pa.BufferReader("\n".join(lines.to_pylist()).encode()),
        parse_options=pajson.ParseOptions(explicit_schema=pa.schema([("v", pa.string())])),
    ).column("v").combine_chunks()
    return pc.replace_with_mask(out, escaped, decoded)


def _optimistic(frags: pa.Array, kind: pa.DataType) -> pa.Array:
    """Arrow's cast, which fails on any value that is not a number. The parser writes numbers
    in JSON's own grammar (no "+", no leading zeros, strings keep their quotes), so whatever
    this cast reads is a JSON number; a quoted "5" or a true makes it fail, and the caller
    checks value by value."""
    return frags.cast(kind)


def _carried(frags: pa.Array, values: pa.Array) -> pa.Array:
    """``values`` (the doubles read from ``frags``) NULL where the double does not carry the
    number exactly (:func:`wal_bridge.schema.carried`). Only numbers of 16 or more digits, and
    zero or subnormal doubles, can fail, and only those are checked in Python."""
    smallest = pc.min(pc.abs(values)).as_py()
    tiny = smallest is not None and smallest < numbers.TINY
    long = numbers.long_digits(frags)
    if not (tiny or long):
        return values
    check = pc.less(pc.abs(values), _TINY)
    if long:
        check = pc.or_(check, pc.match_substring_regex(frags, numbers.LONG_DIGITS))
    check = pc.fill_null(check, _FALSE)
    if not pc.any(check).as_py():
        return values
    lost = [not numbers.carried(t) for t in frags.filter(check).to_pylist()]
    if not any(lost):
        return values
    return pc.replace_with_mask(values, check, pc.if_else(pa.array(lost, pa.bool_()),
                                                          _none(pa.float64()),
                                                          values.filter(check)))


_TINY = pa.scalar(numbers.TINY, pa.float64())


def _ints(frags: pa.Array) -> pa.Array:
    try:  # the usual case, every value an integer within int64
        return _optimistic(frags, pa.int64())
    except pa.ArrowInvalid:
        pass
    ok = pc.match_substring_regex(frags, _INT18)
    out = pc.if_else(ok, frags, _none(pa.string())).cast(pa.int64())
    long = pc.fill_null(pc.match_substring_regex(frags, _INT19), _FALSE)
    if pc.any(long).as_py():
        values = [int(v) for v in frags.filter(long).to_pylist()]
        fits = [v if INT64_MIN <= v <= INT64_MAX else None for v in values]
        out = pc.replace_with_mask(out, long, pa.array(fits, pa.int64()))
    return out


def _timestamps(frags: pa.Array) -> pa.Array:
    kind = FieldType.TIMESTAMP.arrow
    # Most values have an offset and at most microseconds: Arrow parses those as they are.
    plain = pc.fill_null(pc.match_substring_regex(frags, _PLAIN_TIMESTAMP), _FALSE)
    other = pc.and_(pc.is_valid(frags), pc.invert(plain))
    ok = plain
    if pc.any(other).as_py():
        ok = pc.fill_null(pc.match_substring_regex(frags, _QUOTED_TIMESTAMP), _FALSE)
    text = pc.utf8_slice_codeunits(frags.filter(ok), 1, -1)
    if not plain.equals(ok):
        # Cut digits finer than microseconds (the column keeps microseconds); no offset is UTC.
        text = pc.replace_substring_regex(text, r"(\.[0-9]{6})[0-9]+", r"\1")
        text = pc.if_else(pc.match_substring_regex(text, _NO_OFFSET),
                          pc.binary_join_element_wise(text, _text("Z"), _text("")), text)
    try:
        parsed = text.cast(kind)
    except pa.ArrowInvalid:  # an impossible date (February 30): sort them out one by one
        parsed = pa.array([_one_timestamp(t) for t in text.to_pylist()], kind)
    # An instant BigQuery cannot hold (before year 1, or past 9999-12-31T23:59:59.999999Z once
    # its offset is applied) does not fit either.
    parsed = within_bigquery_range(parsed)
    return pc.replace_with_mask(pa.nulls(len(frags), kind), ok, parsed)


def _one_timestamp(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
