"""Stage 1 of conversion: what Arrow can tell about a whole column of values, and why a record
is a dead letter.

Arrow checks the column at once: null (a tombstone), length (empty, over MAX_RECORD_BYTES),
UTF-8, and the first and last byte (an object starts with "{" and ends with "}"). Only the
values those checks single out meet Python, whose strict reading (:func:`strict_verdict`, the
standard library's ``json``: RFC 8259, no NaN or Infinity) says what is wrong with them. The
:class:`Reason` codes are the dead-letter table's ``_reason`` column, which docs/schema.md lists
for users.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


class Reason(enum.StrEnum):
    """Why a record went to the dead-letter table: the ``_reason`` column."""

    TOMBSTONE = "tombstone"
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    INVALID_UTF8 = "invalid_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    DUPLICATE_KEY = "duplicate_key"
    TOO_DEEP = "too_deep"
    # Schema registry formats (VALUE_FORMAT avro, protobuf, json_schema, auto):
    NO_MAGIC_BYTE = "no_magic_byte"  # not the wire format: no magic byte 0 and schema id
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"  # the registry has no schema of that id
    FORMAT_MISMATCH = "format_mismatch"  # the id's schema is of another type than VALUE_FORMAT
    NOT_DECODABLE = "not_decodable"  # does not decode with (or validate against) its schema


# Deepest nesting of arrays and objects a record may have (the object itself is level 1). DuckDB
# parses any depth, Python's json stops near its recursion limit (1,000 frames): records deeper
# than this are dead letters (``too_deep``) before either parser sees them, so both read exactly
# the same records.
MAX_DEPTH = 500


@dataclass
class Rejects:
    """Rows of one segment that cannot become data rows, with why; filled stage by stage (one
    per convert call, never shared)."""

    rows: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def add(self, row: int, reason: Reason, detail: str) -> None:
        self.rows.append(row)
        self.reasons.append(reason.value)
        self.details.append(detail)


# The fast parser (DuckDB's yyjson) forgives a trailing comma, which standard JSON (RFC 8259)
# forbids: it is looked for in the raw text, and matching records get a strict look in Python
# (the rest never pay for it). NaN and Infinity, which it forgives too, are looked for after it
# (:mod:`wal_bridge.conversion.general`).
TRAILING_COMMA = r",[ \t\n\r]*[\]}]"
_BRACED = r"^[ \t\n\r]*\{[\s\S]*\}[ \t\n\r]*$"  # an object, give or take whitespace

_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}  # what a JSON value that is no object is


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def strict_verdict(text: str) -> tuple[Reason, str] | None:
    """Python's strict reading of one record: None for a JSON object, else why not (slow path)."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return Reason.NOT_JSON, "nested too deeply"
    except ValueError as exc:
        return Reason.NOT_JSON, str(exc)
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), "a value")
        return Reason.NOT_OBJECT, f"the value is JSON but {kind}, not an object"
    return None


def depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest (0 for a scalar, 1 for ``{}``),
    counted without recursion, brackets inside strings aside."""
    brackets = _BRACKET.findall(_STRING.sub("", text))
    return max(accumulate(1 if b in "[{" else -1 for b in brackets), default=0)


def _too_deep(rows: pa.Array, text: pa.StringArray, lengths: pa.Array,
              rejects: Rejects) -> tuple[pa.Array, pa.StringArray]:
    """Reject the records nested deeper than MAX_DEPTH. Only a value longer than 2 x MAX_DEPTH
    bytes can be (each level takes an opening and a closing bracket), and only those are
    looked at, in Python."""
    long = pc.greater(lengths, _DEEP_BYTES)
    if pc.any(long).as_py():  # and holds that many opening brackets
        opening = pc.add(pc.count_substring(text, "["), pc.count_substring(text, "{"))
        long = pc.and_(long, pc.greater(opening, _MAX_DEPTH))
    if not pc.any(long).as_py():
        return rows, text
    bad = []
    for row, value in zip(rows.filter(long).to_pylist(), text.filter(long).to_pylist(),
                          strict=True):
        if (levels := depth(value)) > MAX_DEPTH:
            rejects.add(row, Reason.TOO_DEEP,
                        f"arrays and objects nest {levels} levels deep; at most {MAX_DEPTH} are "
                        "read")
            bad.append(row)
    if bad:
        keep = pc.invert(pc.is_in(rows, value_set=pa.array(bad, pa.int64())))
        rows, text = rows.filter(keep), text.filter(keep)
    return rows, text


def screen(values: pa.ChunkedArray, max_record_bytes: int,
           rejects: Rejects) -> tuple[pa.Array, pa.StringArray]:
    """Rows whose value may be a JSON object (as int64 row numbers and text); reject the rest
    (tombstones, empty, over ``max_record_bytes``, invalid UTF-8, nested deeper than
    MAX_DEPTH, no object)."""
    raw = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    n = len(raw)
    lengths = pc.binary_length(raw)
    if n and (raw.null_count or pc.min(lengths).as_py() == 0
              or pc.max(lengths).as_py() > max_record_bytes):
        limit = pa.scalar(max_record_bytes, pa.int32() if max_record_bytes < 2**31
                          else pa.int64())
        for row in _indices(raw.is_null()).to_pylist():
            rejects.add(row, Reason.TOMBSTONE, "the record has no value (a tombstone)")
        for row in _indices(pc.equal(lengths, _ZERO)).to_pylist():
            rejects.add(row, Reason.EMPTY, "the value is empty")
        big = pc.greater(lengths, limit)
        for row, size in zip(_indices(big).to_pylist(), lengths.filter(big).to_pylist(),
                             strict=True):
            rejects.add(row, Reason.TOO_LARGE,
                        f"{size} bytes exceed MAX_RECORD_BYTES={max_record_bytes}")
        keep = pc.fill_null(pc.and_(pc.greater(lengths, _ZERO),
                                    pc.less_equal(lengths, limit)), _FALSE)
        rows, raw = _indices(keep), raw.filter(keep)
    else:
        rows = _arange(n)
    try:
        text = raw.cast(pa.string())
    except pa.ArrowInvalid:
        rows, text = _utf8(rows, raw, rejects)
    if len(text) and pc.max(lengths).as_py() > 2 * MAX_DEPTH:
        rows, text = _too_deep(rows, text, pc.binary_length(text), rejects)
    # A JSON object starts with "{" and ends with "}", give or take whitespace. Anything else
    # gets a strict look in Python, which also says what is wrong: rare, and mostly bad, so
    # it may be slow.
    odd = pc.or_(pc.invert(pc.starts_with(text, "{")), pc.invert(pc.ends_with(text, "}")))
    if pc.any(odd).as_py():  # whitespace around an object is fine: spare those Python
        padded = pc.match_substring_regex(text.filter(odd), _BRACED)
        odd = pc.replace_with_mask(odd, odd, pc.invert(padded))
    return strict_look(rows, text, odd, rejects)


def forgiven(rows: pa.Array, text: pa.StringArray,
             rejects: Rejects) -> tuple[pa.Array, pa.StringArray]:
    """Before DuckDB parses: a trailing comma, which it forgives (Arrow's reader does not),
    gets a strict look in Python; the records without one never pay for it."""
    return strict_look(rows, text, pc.match_substring_regex(text, TRAILING_COMMA), rejects)


def strict_look(rows: pa.Array, text: pa.StringArray, suspect: pa.Array,
                rejects: Rejects) -> tuple[pa.Array, pa.StringArray]:
    """Python's strict reading of the ``suspect`` records: reject those that are no JSON
    object, and return the rest."""
    if not pc.any(suspect).as_py():
        return rows, text
    bad = []
    for row, value in zip(rows.filter(suspect).to_pylist(), text.filter(suspect).to_pylist(),
                          strict=True):
        if (verdict := strict_verdict(value)) is not None:
            rejects.add(row, *verdict)
            bad.append(row)
    if bad:
        keep = pc.invert(pc.is_in(rows, value_set=pa.array(bad, pa.int64())))
        rows, text = rows.filter(keep), text.filter(keep)
    return rows, text


def _utf8(rows: pa.Array, raw: pa.Array, rejects: Rejects) -> tuple[pa.Array, pa.StringArray]:
    """Find the values that are not UTF-8: only values with a byte over 0x7F can be, and
    Python decodes just those (Arrow's check says no more than "somewhere")."""
    ascii_only = pc.string_is_ascii(raw.view(pa.string()))  # byte by byte, any bytes
    suspect = pc.invert(ascii_only)
    bad = []
    for row, value in zip(rows.filter(suspect).to_pylist(), raw.filter(suspect).to_pylist(),
                          strict=True):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            rejects.add(row, Reason.INVALID_UTF8,
                        f"not valid UTF-8: {exc.reason} at byte {exc.start}")
            bad.append(row)
    keep = pc.invert(pc.is_in(rows, value_set=pa.array(bad, pa.int64())))
    return rows.filter(keep), raw.filter(keep).cast(pa.string())


def _indices(mask: pa.Array) -> pa.Array:
    return pc.indices_nonzero(mask).cast(pa.int64())


def _arange(n: int) -> pa.Array:
    """0 .. n-1 as int64, without a Python loop."""
    return pc.subtract(pc.cumulative_sum(pa.repeat(_ONE, n)), _ONE)


# Arrow scalars made once: a Python literal in a compute call costs a slow conversion each time.
_ZERO, _ONE = pa.scalar(0, pa.int64()), pa.scalar(1, pa.int64())
_FALSE = pa.scalar(False, pa.bool_())
_DEEP_BYTES = pa.scalar(2 * MAX_DEPTH, pa.int32())
_MAX_DEPTH = pa.scalar(MAX_DEPTH, pa.int32())
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')  # a JSON string, escapes included
_BRACKET = re.compile(r"[\[\]{}]")
