"""The fast path of conversion: a segment of flat, well-typed records read in one parse.

Most segments hold records that are exactly what the schema says: every key is a column, every
value has its column's type, no field holds nested JSON. For those, Arrow's JSON reader (C++,
one pass, no Python per record) gives the typed columns directly, and ``_extra`` is NULL in
every row. :func:`read_flat` reads a segment that way, or returns None as soon as anything is
not that simple, and the caller runs the general converter
(:mod:`wal_bridge.conversion.general`), which also says, row by row, what went where and why.

It never guesses: it answers only when its result is, row for row, what the general converter
gives, and tests/unit/conversion/test_flat.py checks exactly that over generated segments. What
makes it give up (each one costs the segment one extra attempt, a few milliseconds):

- the schema has a ``json`` column (its values are kept as JSON text, which only the general
  converter writes);
- a value holds a line break outside a string (records are joined one per line);
- any key that is not a column, spelled differently, or repeated (Arrow's reader refuses these
  records, and the general converter sends them to ``_extra`` or the dead-letter table);
- any value of the wrong JSON type for its column, an integer beyond int64, or a number in a
  float64 column that is not finite (NaN, Infinity, or beyond float64);
- a float64 member of 16 or more digits in a row, or a float64 value that is zero or
  subnormal in a segment with an exponent of three digits or more: a number a double may not
  carry (``1e-400`` reads as 0), which the general converter checks one by one
  (:mod:`wal_bridge.conversion.numbers`). Zero itself is common (``0``, ``0.0``, ``-0``) and
  exact: a number under the smallest normal double needs such an exponent, or a run of 16
  digits, which the previous check already refuses;
- a record that is more than one JSON value, or that is not JSON at all;
- a timestamp column whose values are not all timestamps.

Records the screening stage already rejected (tombstones, empty, too large, invalid UTF-8, not
an object) never reach it.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from wal_bridge.conversion.casting import cast_fragments
from wal_bridge.conversion.numbers import TINY, long_member
from wal_bridge.schema import Field, FieldType, PayloadSchema, column_names

_TINY = pa.scalar(TINY, pa.float64())
_NEWLINE, _EMPTY, _QUOTE = (pa.scalar(t, pa.string()) for t in ("\n", "", '"'))
# A number with an exponent of three digits or more (leading zeros count): the only way, short
# of a run of 16 digits, for a JSON number's text to read as a double under the normal range.
# A number follows ":", "," or "["; inside a string this only costs a false alarm (not a hex
# id such as "827e761a", which follows a quote). Arrow's regex engine (RE2) runs it without
# holding the GIL, and 7x faster than Python's re.
BIG_EXPONENT = r"[:,\[][ \t]*-?[0-9.]+[eE][-+]?[0-9]{3}"

# What Arrow's reader is asked for per column type; timestamps are read as strings and parsed
# by the same code as the general converter's, so both accept exactly the same texts.
# What Arrow's own inference of a member's type says of its column, strings aside.
_ARROW_KINDS: dict[pa.DataType, FieldType] = {
    pa.int64(): FieldType.INT64,
    pa.float64(): FieldType.FLOAT64,
    pa.bool_(): FieldType.BOOL,
}
# A schema with one column that is not json: _may_be_flat's look at the bytes only.
_ANY_FLAT = PayloadSchema((Field("_", FieldType.STRING),))

_READ_AS: dict[FieldType, pa.DataType] = {
    FieldType.STRING: pa.string(),
    FieldType.INT64: pa.int64(),
    FieldType.FLOAT64: pa.float64(),
    FieldType.BOOL: pa.bool_(),
    FieldType.TIMESTAMP: pa.string(),
}


def read_flat(schema: PayloadSchema, text: pa.StringArray) -> dict[str, pa.Array] | None:
    """The payload columns of ``text`` (one JSON object per value), in schema order, or None
    when the segment needs the general converter."""
    if not _may_be_flat(schema, text):
        return None
    table = _read(schema, text)
    if table is None:
        return None
    columns: dict[str, pa.Array] = {}
    for f in schema.fields:
        values = _column(f.type, table.column(f.name).combine_chunks(), text)
        if values is None:
            return None
        columns[f.name] = values
    return columns


def _may_be_flat(schema: PayloadSchema, text: pa.StringArray) -> bool:
    """False when a look at the bytes of ``text``'s values already rules the fast path out."""
    if len(text) == 0 or not schema.fields:
        return False
    if any(f.type is FieldType.JSON for f in schema.fields):
        return False
    # One look at the bytes (the whole buffer: a false alarm only costs the fast path).
    data = text.buffers()[2]
    raw = data.to_pybytes() if data is not None else b""
    if b"\n" in raw or b"\r" in raw:
        return False
    # A number a double may not carry: only the general converter checks it, number by number.
    # One regex pass (RE2, without the GIL): a prefilter for any long run of digits costs as
    # much, and ids of 16 digits are common enough to make it pass.
    floats = [f.name for f in schema.fields if f.type is FieldType.FLOAT64]
    if not floats:
        return True
    return not pc.any(pc.match_substring_regex(text, long_member(floats))).as_py()


def infer_flat(text: pa.StringArray) -> PayloadSchema | None:
    """A candidate schema for a segment of flat records, from Arrow's own type inference
    (one parse, no Python per record), or None when the records are not that simple (a
    nested or null-only member, a member of two JSON types, a key that cannot be a column).

    Each column gets the type :func:`wal_bridge.schema.infer_texts` would give the same values
    (integers int64, other numbers float64, booleans bool, strings timestamp when every one is
    a timestamp by the converter's rule, else string), but this is a candidate only: the
    caller keeps it when :func:`read_flat` then reads the whole segment under it, which makes
    the schema the one the general converter's reading decides (tests/unit/conversion/
    test_one_verdict.py compares the two over generated segments).
    """
    if not len(text) or not _may_be_flat(_ANY_FLAT, text):
        return None
    table = _parse(text, pajson.ParseOptions(newlines_in_values=False))
    if table is None or table.num_columns == 0:
        return None
    names = column_names(table.column_names)
    if names != table.column_names:
        return None
    fields: list[Field] = []
    for name, kind in zip(names, table.schema.types, strict=True):
        if pa.types.is_string(kind) or pa.types.is_timestamp(kind):
            fields.append(Field(name, FieldType.STRING))  # which of the two: decided below
        elif (guess := _ARROW_KINDS.get(kind)) is not None:
            fields.append(Field(name, guess))
        else:
            return None
    candidate = PayloadSchema(tuple(fields))
    if any(f.type is FieldType.STRING for f in fields):
        strings = _read(candidate, text)
        if strings is None:
            return None
        fields = [_string_or_timestamp(f, strings.column(f.name).combine_chunks())
                  if f.type is FieldType.STRING else f for f in fields]
    return PayloadSchema(tuple(fields))


def _string_or_timestamp(field: Field, values: pa.Array) -> Field:
    """TIMESTAMP when every value of the string column is one by the converter's rule."""
    if values.null_count == len(values):
        return field
    quoted = pc.binary_join_element_wise(_QUOTE, values, _QUOTE, _EMPTY)
    parsed = cast_fragments(FieldType.TIMESTAMP, quoted)
    return Field(field.name, FieldType.TIMESTAMP) if parsed.null_count == values.null_count \
        else field


def _read(schema: PayloadSchema, text: pa.StringArray) -> pa.Table | None:
    """Arrow's JSON reader over the values joined one per line, or None if it refuses any or
    finds other than one object per line."""
    return _parse(text, pajson.ParseOptions(
        explicit_schema=pa.schema([(f.name, _READ_AS[f.type]) for f in schema.fields]),
        unexpected_field_behavior="error",
    ))


def _parse(text: pa.StringArray, options: pajson.ParseOptions) -> pa.Table | None:
    n = len(text)
    lines = pc.binary_join_element_wise(text, _NEWLINE, _EMPTY)
    offsets = memoryview(lines.buffers()[1]).cast("i")  # int32: the lines one after another
    body = lines.buffers()[2][offsets[lines.offset]:offsets[lines.offset + n]]
    try:
        table = pajson.read_json(
            pa.BufferReader(body),
            read_options=pajson.ReadOptions(use_threads=False, block_size=_block_size(len(body))),
            parse_options=options,
        )
    except pa.ArrowInvalid:
        return None
    return table if table.num_rows == n else None  # more rows: a value held several objects


def _column(kind: FieldType, values: pa.Array, text: pa.StringArray) -> pa.Array | None:
    """The column as the general converter makes it, or None where it would differ. ``text``
    is the segment's records, looked at only when a zero or subnormal double needs it."""
    if kind is FieldType.FLOAT64 and values.null_count != len(values):
        # NaN and Infinity are read as numbers here; the general converter rejects them.
        if not pc.all(pc.is_finite(values)).as_py():
            return None
        # Zero and subnormals may not be the record's number (1e-400), when some number of
        # the segment has an exponent that could make it one: the general converter checks.
        tiny = pc.any(pc.less(pc.abs(values), _TINY)).as_py()
        if tiny and pc.any(pc.match_substring_regex(text, BIG_EXPONENT)).as_py():
            return None
        return values
    if kind is FieldType.TIMESTAMP:
        quoted = pc.binary_join_element_wise(_QUOTE, values, _QUOTE, _EMPTY)
        parsed = cast_fragments(FieldType.TIMESTAMP, quoted)
        # A string that is not a timestamp would go to _extra there.
        return parsed if parsed.null_count == values.null_count else None
    return values


def _block_size(size: int) -> int:
    """One block for a whole segment (the usual few MB); bounded for giant records."""
    return min(max(size, 1), 1 << 28)
