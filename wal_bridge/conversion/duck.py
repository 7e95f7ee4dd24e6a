"""The converter's private DuckDB connection and the three queries it asks.

DuckDB (yyjson, in C) parses; Arrow does everything per value (casts, string work), which is
much faster than the same expressions in SQL. Every query reads a table ``src(i, v)``: ``i`` the
record's row number in its segment (int64), ``v`` its JSON text.

DuckDB is imported on first use, so a process whose segments all take the fast path
(:mod:`wal_bridge.conversion.flat`) never loads it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from wal_bridge.schema import Field


class QueryFailed(Exception):
    """DuckDB refused the query: some record is not JSON after all."""


class Duck:
    """A private in-memory DuckDB connection, made on first use (one thread by default), one
    query at a time (conversion threads share it; it holds no segment's state).

    ``threads`` is DuckDB's own thread count for a query (the service uses 1).
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._con: Any = None
        self._lock = threading.Lock()

    def query(self, sql: str, src: pa.Table) -> pa.Table:
        """The result of ``sql`` over ``src`` (registered as ``src`` for this query only), as
        one chunk per column. Raises QueryFailed when DuckDB refuses it."""
        import duckdb  # local: only the general converter needs it

        with self._lock:
            if self._con is None:
                self._con = duckdb.connect(":memory:", config={"threads": self.threads})
            self._con.register("src", src)
            try:
                result: pa.Table = self._con.sql(sql).to_arrow_table()
            except duckdb.Error as exc:
                raise QueryFailed(str(exc)) from exc
            except UnicodeDecodeError as exc:  # its error message quoted the input cut mid-UTF-8
                raise QueryFailed("refused (unreadable error message)") from exc
            finally:
                self._con.unregister("src")
        return result.combine_chunks()


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def parse_query(names: Sequence[str], *, validate: bool) -> str:
    """Per record of ``src(i, v)``: its keys, and the JSON text of the value of each of
    ``names`` (the schema's fields, then unknown keys expected from the last segment).

    Without ``validate`` a record that is not JSON fails the whole query (the caller then asks
    again with it); checking every record costs a third parse, which most segments never need.
    """
    # Not an injection vector: the only literal goes through _sql_text.
    columns = "i, json_keys(v) AS k"
    if names:
        columns += f", json_transform(v, {_structure(names)}) AS s"
    return f"SELECT {columns} FROM src" + (" WHERE json_valid(v)" if validate else "")  # noqa: S608


def values_query(names: Sequence[str]) -> str:
    """Per record of ``src(i, v)``: the JSON text of the value of each of ``names``."""
    return f"SELECT i, json_transform(v, {_structure(names)}) AS s FROM src"  # noqa: S608


def extra_query(fields: Sequence[Field]) -> str:
    """Per record of ``src(i, v)``: the object without the schema's fields (merge patch with
    them set to null: the rest keeps its order, nested nulls included)."""
    patch = json.dumps({f.name: None for f in fields}, separators=(",", ":"))
    return f"SELECT i, json_merge_patch(v, {_sql_text(patch)})::VARCHAR AS m FROM src"  # noqa: S608


def _structure(names: Sequence[str]) -> str:
    return _sql_text(json.dumps(dict.fromkeys(names, "JSON"), separators=(",", ":")))
