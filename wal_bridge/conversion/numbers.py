"""Numbers kept as they came: where the fast parser's text of a number may differ from the
record's, and the record's own text instead.

DuckDB's parser (yyjson) reads every number into a double or an integer and prints it again:
``2.50`` becomes ``2.5``, ``1E-7`` ``1e-7``, ``1e2`` ``100.0``, ``-0`` ``0``, ``1e-400`` ``0.0``,
and a mantissa longer than a double holds comes back with other digits. Most numbers print back
exactly as they came; the records whose JSON text may not are found with Arrow over whole
columns (:func:`suspects`), and only those are read again in Python (:func:`exact_values`),
whose parser hands over each number's characters untouched. Their values are then written with
the same minified form as DuckDB's (:func:`dump`), numbers as they came.

What a double can carry (:func:`wal_bridge.schema.carried`): a number fits a float64 column
when the double nearest to it, printed in its shortest form (Python's ``repr``), is the same
number: ``0.1``, ``2.50``, ``1E-7`` and ``1e2`` are carried; ``0.30000000000000004441``,
``9007199254740993``, ``1e-400`` and ``1e400`` are not. A number of at most 15 significant
digits inside a double's normal range is always carried (IEEE 754 binary64 holds 15 decimal
digits: two such numbers never share a nearest double), so only numbers with 16 or more digits
in a row (:data:`LONG_DIGITS`), and doubles below the normal range (:data:`TINY`: zero, which
may have been ``-0`` or ``1e-400``, and subnormals), are checked one by one.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from wal_bridge.schema import carried

__all__ = ["LONG_DIGITS", "REPRINTED", "TINY", "carried", "dump", "exact_values",
           "long_digits", "long_member", "patch", "quote", "suspects"]

# A number of 16 or more digits, which a double may not carry (in a record's text, a string
# may match too: that only costs the record a look in Python).
LONG_DIGITS = r"[0-9.]{16}"
# In DuckDB's minified text: a number that may have been written otherwise in the record (any
# number with a fraction or an exponent, and 0, which may have been -0). Integers print back as
# they came; a number starts the text or follows a ":", "," or "[".
REPRINTED = r"(^|[:,\[])(-?[0-9]+[.eE]|0([,\]}]|$))"
# Below the smallest normal double: zero (which may have been -0, or 1e-400 in the record) and
# subnormals (fewer digits than 15): such a double may not be the record's number.
TINY = 2.2250738585072014e-308

class _Number(str):
    """A JSON number's text, exactly as the record wrote it."""


class _Object(list[tuple[str, Any]]):
    """A JSON object's members in order (repeated keys kept, as DuckDB keeps them)."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def exact_values(text: str) -> dict[str, str | None] | None:
    """Each top-level member of the JSON object ``text`` as minified JSON text with its numbers
    as they came (None for a JSON null); None when Python's strict reading refuses the record
    (the caller keeps what it had; such a record is a dead letter anyway)."""
    try:
        members = json.loads(text, parse_float=_Number, parse_int=_Number,
                             parse_constant=_no_constant, object_pairs_hook=_Object)
    except (ValueError, RecursionError):
        return None
    if not isinstance(members, _Object):
        return None
    out: dict[str, str | None] = {}
    for key, value in members:
        out[key] = None if value is None else dump(value)
    return out


def dump(value: Any) -> str:
    """``value`` (as :func:`exact_values` reads it) in DuckDB's minified JSON: no whitespace,
    strings escaped as yyjson escapes them, numbers as they came."""
    parts: list[str] = []
    _dump(value, parts)
    return "".join(parts)


def _dump(value: Any, out: list[str]) -> None:
    # One frame per level of nesting (records are at most MAX_DEPTH deep): no comprehensions.
    if isinstance(value, _Number):
        out.append(value)
    elif isinstance(value, str):
        out.append(quote(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, _Object):
        out.append("{")
        for k, (key, item) in enumerate(value):
            if k:
                out.append(",")
            out.append(quote(key))
            out.append(":")
            _dump(item, out)
        out.append("}")
    else:
        out.append("[")
        for k, item in enumerate(value):
            if k:
                out.append(",")
            _dump(item, out)
        out.append("]")


# yyjson's escapes: the quote, the backslash, and control characters (short forms where JSON
# has them, else \u00XX with upper-case hex); everything else as it is, in UTF-8.
_SHORT = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
_ESCAPES = {c: _SHORT.get(c, f"\\u{c:04X}") for c in range(0x20)}
_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})


def quote(text: str) -> str:
    """A string as DuckDB's JSON text writes it."""
    return '"' + text.translate(_ESCAPES) + '"'


def suspects(text: pa.StringArray, outputs: list[pa.Array],
             doubles: dict[str, pa.Array]) -> pa.Array | None:
    """Per record (``text``), whether its numbers may not be kept as they came: any of
    ``outputs`` (JSON text written from DuckDB's parse, one value per record) holds a number
    DuckDB may have printed otherwise (:data:`REPRINTED`); or, when there are float64 columns
    (``doubles``: their values by name), one of them is zero or subnormal, or its member's
    number has 16 or more digits in a row (:func:`long_member`). None: no record. Each check
    looks at whole buffers first, so the usual segment costs a few byte scans."""
    found: pa.Array | None = None
    for values in outputs:
        if _may_reprint(values):
            found = _or(found, pc.match_substring_regex(values, REPRINTED))
    if doubles:
        for values in doubles.values():
            smallest = pc.min(pc.abs(values)).as_py()
            if smallest is not None and smallest < TINY:
                found = _or(found, pc.less(pc.abs(values), _TINY))
        if long_digits(text):
            found = _or(found, pc.match_substring_regex(text, long_member(list(doubles))))
    return found if found is not None and pc.any(found).as_py() else None


def long_digits(text: pa.StringArray) -> bool:
    """Might any value of ``text`` hold 16 digits (or points) in a row? One pass of Arrow's
    regex engine (a false alarm costs one more regex pass), which, unlike a pass in Python,
    lets the other threads run meanwhile."""
    return bool(len(text)) and pc.any(pc.match_substring_regex(text, LONG_DIGITS)).as_py() is True


def long_member(names: list[str]) -> str:
    """A pattern for a record whose member named one of ``names`` (column names: letters,
    digits, underscores), or any member whose key holds an escape, starts with 16 or more
    digits (and points) in a row."""
    keys = "|".join([*(f'"{name}"' for name in names), r'"[^"\\]*\\[^"]*"'])
    return f"({keys})[ \\t\\n\\r]*:[ \\t\\n\\r]*-?[0-9.]{{16}}"


def _may_reprint(values: pa.Array) -> bool:
    """Might a value of ``values`` (minified JSON text) hold a number that is not an integer,
    or a 0? Cheap: a number after ":", "," or "[", or at the start of a value."""
    if values.null_count == len(values):
        return False
    data = values.buffers()[2]
    if data is None:
        return False
    raw = data.to_pybytes()
    if b":0" in raw.translate(_NUMBER_STARTS):
        return True
    firsts = pc.binary_slice(values.view(pa.binary()), 0, 1).buffers()[2]  # first bytes
    starts = firsts.to_pybytes() if firsts is not None else b""
    return len(starts.translate(None, b"-0123456789")) != len(starts)


def _or(found: pa.Array | None, more: pa.Array) -> pa.Array:
    more = pc.fill_null(more, _FALSE)
    return more if found is None else pc.or_(found, more)


_NUMBER_STARTS = bytes.maketrans(b"-0123456789:,[", b"00000000000:::")
_TINY = pa.scalar(TINY, pa.float64())


def patch(columns: dict[str, pa.Array], text: pa.StringArray,
          which: pa.Array) -> tuple[dict[str, pa.Array], list[dict[str, str | None] | None]]:
    """``columns`` (the JSON text of a member per record, by key) with the records ``which``
    marks written again from their own text (:func:`exact_values`); and those records' exact
    members, in order (None where Python refused the record: its values stay)."""
    exact = [exact_values(t) for t in text.filter(which).to_pylist()]
    out = {}
    for name, values in columns.items():
        old = values.filter(which).to_pylist()
        new = [old[k] if members is None else members.get(name)
               for k, members in enumerate(exact)]
        out[name] = pc.replace_with_mask(values.cast(pa.string()), which,
                                         pa.array(new, pa.string()))
    return out, exact


_FALSE = pa.scalar(False, pa.bool_())
