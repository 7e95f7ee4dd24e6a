"""The general path of conversion: any segment, record by record exactly, without per-record
Python on the way of a good record.

1. One DuckDB query parses every record twice (yyjson, in C): its keys, and the JSON text of
   each schema field's value. A record that is not JSON fails the query; only then is it asked
   again with a validity filter (a third parse).
2. Arrow casts each field's JSON text to its column type (:mod:`wal_bridge.conversion.casting`);
   per distinct key list (a segment has few), Python checks for repeated and unknown keys;
   unknown keys go through one more DuckDB query, for the records that have them, into
   ``_extra`` (JSON text of the fields without a column, and of values that did not fit theirs).
3. NaN and Infinity, which the fast parser takes for numbers, can only land in JSON text (json
   columns, ``_extra``): a record with "nan" or "inf" there, ignoring case, gets Python's
   strict look.

Everything a segment's run needs is local to one :func:`convert` call (the :class:`Parsed`
records, the caller's Rejects); the only state shared between calls is the :class:`KeyHint`,
which never changes what lands.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from wal_bridge.conversion import numbers
from wal_bridge.conversion.casting import cast_fragments
from wal_bridge.conversion.duck import Duck, QueryFailed, extra_query, parse_query, values_query
from wal_bridge.conversion.screen import Reason, Rejects, strict_verdict
from wal_bridge.schema import EXTRA_COLUMN, FieldType, PayloadSchema

# NaN or Infinity, in any case: the fast parser writes them back as they came (see the module's
# docstring, step 3).
NONSTANDARD_NUMBER = r"(?i)nan|inf"
# Unknown keys are read like the schema's fields (JSON text per key) when they are few and
# DuckDB can hold them as struct fields: not empty, and distinct from each other and from the
# schema's names even ignoring case (DuckDB's struct fields ignore case; JSON keys do not).
MAX_UNKNOWN_KEYS = 32


class KeyHint:
    """The unknown keys of the last segment converted, for the next one to expect.

    A producer that added a field keeps sending it, so the next segment's main query reads
    those keys at once instead of asking again. It is a hint, shared by the conversion threads
    under a lock: each convert call reads it once and writes it once; it decides only which
    keys the first query reads, never what lands (the keys it misses are read by one more
    query), so threads converting at once may race on it without changing any file.
    """

    def __init__(self) -> None:
        self._keys: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def get(self) -> tuple[str, ...]:
        with self._lock:
            return self._keys

    def put(self, keys: tuple[str, ...]) -> None:
        with self._lock:
            self._keys = keys


# ----------------------------------------------------------------------------- key shapes


def _repeated(keys: list[str]) -> str | None:
    if len(set(keys)) == len(keys):
        return None
    return next(k for k in keys if keys.count(k) > 1)


@dataclass(frozen=True)
class Shapes:
    """The key lists of a column of objects, by distinct shape: ``keys[ids[row]]``.

    A segment's records have few shapes, so per-shape Python stays off the per-record path.
    """

    ids: pa.Array  # int32, one per row
    keys: list[list[str]]

    @classmethod
    def of(cls, column: pa.Array) -> Shapes:
        """The shapes of ``column`` (a list<string> array: each record's keys, in order)."""
        # Key lists joined with NUL and dictionary-encoded. The join is ambiguous only when a
        # key holds a NUL or is empty, and then splitting gives a row more keys than it has.
        encoded = pc.binary_join(column, _NUL).dictionary_encode()
        keys = [s.split("\x00") if s else [] for s in encoded.dictionary.to_pylist()]
        ids = encoded.indices.cast(pa.int32())
        counts = pa.array([len(k) for k in keys], pa.int32())
        if len(ids) and not counts.take(ids).equals(pc.list_value_length(column).cast(pa.int32())):
            seen: dict[tuple[str, ...], int] = {}  # number the shapes in Python (rare)
            numbers = [seen.setdefault(tuple(k), len(seen)) for k in column.to_pylist()]
            return cls(pa.array(numbers, pa.int32()), [list(k) for k in seen])
        return cls(ids, keys)

    def filter(self, mask: pa.Array) -> Shapes:
        return Shapes(self.ids.filter(mask), self.keys)


def _extractable(keys: Sequence[str], known: Sequence[str]) -> bool:
    folded = [k.lower() for k in (*known, *keys)]
    return len(keys) <= MAX_UNKNOWN_KEYS and all(keys) and len(set(folded)) == len(folded)


@dataclass
class Parsed:
    """One segment's records as the main query read them (one per :func:`parse` call)."""

    rows: pa.Array  # int64 row numbers in the segment
    text: pa.StringArray
    shapes: Shapes
    names: tuple[str, ...]  # what ``fragments`` holds: the schema's fields, then unknown keys
    fragments: pa.StructArray | None  # one string child (JSON text) per name
    dropped: pa.Array | None = None  # rows already rejected (repeated keys), still in place

    def fragment(self, name: str) -> pa.Array:
        assert self.fragments is not None
        return self.fragments.field(self.names.index(name)).cast(pa.string())

    def with_fragments(self, columns: dict[str, pa.Array]) -> Parsed:
        """The same records with the JSON text of ``names`` replaced."""
        fragments = pa.StructArray.from_arrays([columns[n] for n in self.names],
                                               names=list(self.names))
        return Parsed(self.rows, self.text, self.shapes, self.names, fragments, self.dropped)

    def kept(self) -> Parsed:
        """The records without those already rejected."""
        if self.dropped is None:
            return self
        keep = pc.invert(self.dropped)
        frags = self.fragments.filter(keep) if self.fragments is not None else None
        return Parsed(self.rows.filter(keep), self.text.filter(keep), self.shapes.filter(keep),
                      self.names, frags)


# ----------------------------------------------------------------------------- the path


def convert(schema: PayloadSchema, rows: pa.Array, text: pa.StringArray, rejects: Rejects, *,
            duck: Duck, hint: KeyHint) -> tuple[dict[str, pa.Array], pa.Array, int]:
    """Stages 2 and 3 for any segment (its ``rows`` and their ``text``): the payload columns
    with ``_extra``, the rows they belong to, and how many values did not fit their column.
    Rejected records go to ``rejects``; ``duck`` and ``hint`` are the converter's, shared."""
    expected = hint.get()  # read once: this call's own copy
    parsed = parse(duck, rows, text, (*schema.names, *expected), rejects)
    payload, failed, unknown = _columns(duck, schema, parsed)
    texts = [payload[f.name] for f in schema.fields if f.type is FieldType.JSON]
    doubles = {f.name: payload[f.name] for f in schema.fields if f.type is FieldType.FLOAT64}
    which = numbers.suspects(parsed.text, [*texts, payload[EXTRA_COLUMN]], doubles)
    if which is not None:  # numbers the parser may have printed otherwise: as they came
        exact: list[dict[str, str | None] | None] = []
        if parsed.names:
            columns, exact = numbers.patch(
                {name: parsed.fragment(name) for name in parsed.names}, parsed.text, which)
            parsed = parsed.with_fragments(columns)
            payload, failed, unknown = _columns(duck, schema, parsed)
        else:
            exact = [numbers.exact_values(t) for t in parsed.text.filter(which).to_pylist()]
        payload[EXTRA_COLUMN] = _exact_extra(payload[EXTRA_COLUMN], which, exact)
    hint.put(unknown)
    drop = _standard(schema, parsed, payload, rejects)
    rows = parsed.rows
    if drop is not None:  # rows rejected on the way: repeated keys, NaN
        keep = pc.invert(drop)
        payload = {name: values.filter(keep) for name, values in payload.items()}
        failed = [mask.filter(keep) for mask in failed]
        rows = rows.filter(keep)
    return payload, rows, sum(pc.sum(mask).as_py() or 0 for mask in failed)


def parse(duck: Duck, rows: pa.Array, text: pa.StringArray, names: Sequence[str],
          rejects: Rejects) -> Parsed:
    """Parse the candidates, reading the JSON text of ``names``: reject what is not JSON now,
    and mark (not yet remove) the objects with a repeated key."""
    src = pa.table({"i": rows, "v": text})
    try:
        result = duck.query(parse_query(names, validate=False), src)
    except QueryFailed:
        result = duck.query(parse_query(names, validate=True), src)
    valid = result.column("i").combine_chunks()
    if len(valid) != len(rows):
        keep = pc.is_in(rows, value_set=valid)
        invalid = pc.invert(keep)
        for row, value in zip(rows.filter(invalid).to_pylist(),
                              text.filter(invalid).to_pylist(), strict=True):
            rejects.add(row, *(strict_verdict(value) or (
                Reason.NOT_JSON, "rejected by the JSON parser (invalid escape or number)")))
        rows, text = rows.filter(keep), text.filter(keep)
    if not valid.equals(rows):
        raise AssertionError("DuckDB returned the rows out of order")  # never expected
    fragments = result.column("s").combine_chunks() if names else None
    parsed = Parsed(rows, text, Shapes.of(result.column("k").combine_chunks()),
                    tuple(names), fragments)
    repeated = {n: dup for n, keys in enumerate(parsed.shapes.keys)
                if (dup := _repeated(keys)) is not None}
    if repeated:
        dup = pc.is_in(parsed.shapes.ids, value_set=pa.array(list(repeated), pa.int32()))
        for row, shape in zip(rows.filter(dup).to_pylist(),
                              parsed.shapes.ids.filter(dup).to_pylist(), strict=True):
            rejects.add(row, Reason.DUPLICATE_KEY,
                        f"key {repeated[shape]!r} appears more than once in the object")
        parsed.dropped = dup
    return parsed


def _columns(duck: Duck, schema: PayloadSchema, parsed: Parsed
             ) -> tuple[dict[str, pa.Array], list[pa.Array], tuple[str, ...]]:
    """The payload columns and ``_extra``; per field that had any, where its value did not fit
    (and went to ``_extra``); and the unknown keys a next segment may expect."""
    n = len(parsed.rows)
    columns: dict[str, pa.Array] = {}
    parts: list[pa.Array] = []  # pieces of _extra: '"name":value' or the unknown keys
    failures = []
    for f in schema.fields:
        frags = parsed.fragment(f.name)
        values = cast_fragments(f.type, frags)
        columns[f.name] = values
        failed = pc.and_(pc.is_valid(frags), pc.is_null(values))
        if pc.any(failed).as_py():
            failures.append(failed)
            label = pa.scalar(json.dumps(f.name) + ":", pa.string())
            parts.append(pc.if_else(failed, pc.binary_join_element_wise(label, frags, _EMPTY),
                                    _NO_TEXT))
    unknown, expect = _unknown(duck, schema, parsed)
    if unknown is not None:
        parts.insert(0, unknown)
    joined = _join_pieces(parts, n)
    columns[EXTRA_COLUMN] = pc.binary_join_element_wise(_OPEN, joined, _CLOSE, _EMPTY)
    return columns, failures, expect


def _exact_extra(extra: pa.Array, which: pa.Array,
                 exact: list[dict[str, str | None] | None]) -> pa.Array:
    """``_extra`` with the records ``which`` marks written from their exact members (see
    :func:`wal_bridge.conversion.numbers.patch`), in the same key order."""
    new = []
    for text, members in zip(extra.filter(which).to_pylist(), exact, strict=True):
        if text is None or members is None:
            new.append(text)
            continue
        keys = [key for key, _ in json.loads(text, object_pairs_hook=list)]
        if not all(key in members for key in keys):
            new.append(text)  # never expected: every key of _extra is one of the record's
            continue
        new.append("{" + ",".join(json.dumps(key) + ":" + (members[key] or "null")
                                  for key in keys) + "}")
    return pc.replace_with_mask(extra, which, pa.array(new, pa.string()))


def _unknown(duck: Duck, schema: PayloadSchema,
             parsed: Parsed) -> tuple[pa.Array | None, tuple[str, ...]]:
    """The ``_extra`` piece of keys without a column, per row ("k":v,...), or None; and those
    keys when they can be read like the schema's fields (else ``()``).

    Their values are read like the schema's fields: from the main query for the keys it was
    asked for (``parsed.names``), from one more query over the rows that have them for the
    rest; keys come in the order the segment first shows them. Keys DuckDB cannot hold as
    struct fields fall back to a merge patch of the whole object.
    """
    n = len(parsed.rows)
    known = set(schema.names)
    per_shape = [[k for k in keys if k not in known] for keys in parsed.shapes.keys]
    union = list(dict.fromkeys(k for keys in per_shape for k in keys))
    extractable = tuple(union) if _extractable(union, schema.names) else ()
    if not union:
        return None, extractable
    has = pa.array([bool(keys) for keys in per_shape], pa.bool_()).take(parsed.shapes.ids)
    src = pa.table({"i": parsed.rows.filter(has), "v": parsed.text.filter(has)})
    if not extractable:
        merged = duck.query(extra_query(schema.fields), src).column("m")
        inner = pc.utf8_slice_codeunits(merged.combine_chunks().cast(pa.string()), 1, -1)
        inner = pc.if_else(pc.equal(inner, _EMPTY), _NO_TEXT, inner)
        return pc.replace_with_mask(pa.nulls(n, pa.string()), has, inner), extractable
    values: dict[str, pa.Array] = {k: parsed.fragment(k) for k in union if k in parsed.names}
    missing = [k for k in union if k not in values]
    if missing:
        result = duck.query(values_query(missing), src).column("s").combine_chunks()
        for j, key in enumerate(missing):
            values[key] = pc.replace_with_mask(pa.nulls(n, pa.string()), has,
                                               result.field(j).cast(pa.string()))
    pieces = []
    for key in union:
        present = pa.array([key in keys for keys in per_shape], pa.bool_())
        label = pa.scalar(json.dumps(key) + ":", pa.string())
        text = pc.binary_join_element_wise(label, pc.coalesce(values[key], _NULL_JSON), _EMPTY)
        pieces.append(pc.if_else(present.take(parsed.shapes.ids), text, _NO_TEXT))
    return _join_pieces(pieces, n), extractable


def _standard(schema: PayloadSchema, parsed: Parsed, columns: dict[str, pa.Array],
              rejects: Rejects) -> pa.Array | None:
    """Rows to drop: those marked in ``parsed`` (repeated keys), and records with NaN or
    Infinity, which the fast parser took for numbers; those can only have landed in JSON text
    (json columns, ``_extra``). None: nothing to drop."""
    dropped = parsed.dropped
    texts = [columns[f.name] for f in schema.fields if f.type is FieldType.JSON]
    texts.append(columns[EXTRA_COLUMN])
    # One look at the raw bytes first: most columns have neither "nan" nor "inf" at all.
    texts = [values for values in texts if _has_nonstandard_letters(values)]
    if not texts:
        return dropped
    n = len(parsed.rows)
    found = pc.fill_null(
        pc.match_substring_regex(pa.concat_arrays(texts), NONSTANDARD_NUMBER), _FALSE)
    suspect = found.slice(0, n)
    for k in range(1, len(texts)):
        suspect = pc.or_(suspect, found.slice(k * n, n))
    if dropped is not None:
        suspect = pc.and_(suspect, pc.invert(dropped))
    bad = []
    for row, value in zip(parsed.rows.filter(suspect).to_pylist(),
                          parsed.text.filter(suspect).to_pylist(), strict=True):
        if (verdict := strict_verdict(value)) is not None:
            rejects.add(row, *verdict)
            bad.append(row)
    if not bad:
        return dropped
    drop = pc.is_in(parsed.rows, value_set=pa.array(bad, pa.int64()))
    return drop if dropped is None else pc.or_(drop, dropped)


def _has_nonstandard_letters(values: pa.Array) -> bool:
    """Might any value hold "nan" or "inf" (any case)? One pass over the bytes, no regex."""
    if values.null_count == len(values):
        return False
    data = values.buffers()[2]
    raw = data.to_pybytes().lower() if data is not None else b""
    return b"nan" in raw or b"inf" in raw


def _join_pieces(pieces: Sequence[pa.Array], n: int) -> pa.Array:
    """Row by row, the non-null pieces joined with commas (NULL when all are)."""
    joined = pa.nulls(n, pa.string())
    for piece in pieces:
        both = pc.binary_join_element_wise(joined, piece, _COMMA)
        joined = pc.coalesce(both, joined, piece)
    return joined


# Arrow scalars made once: a Python literal in a compute call costs a slow conversion each time.
_FALSE = pa.scalar(False, pa.bool_())
_EMPTY, _COMMA, _NUL = (pa.scalar(t, pa.string()) for t in ("", ",", "\x00"))
_OPEN, _CLOSE = pa.scalar("{", pa.string()), pa.scalar("}", pa.string())
_NO_TEXT = pa.scalar(None, pa.string())
_NULL_JSON = pa.scalar("null", pa.string())
