"""``wal_bridge query "SQL"``: SQL over what landed, the BigQuery ``SELECT`` without the cloud.

The Parquet files under the destination's prefix are the table ``events``; the dead-letter
files, when there are any, the table ``dead_letters``. DuckDB reads them with
``union_by_name`` (files of different days may have gained columns) and without hive
partitioning (the ``dt=`` folders are for BigQuery's pruning, not a column of the rows).

A local destination is read in place. For ``gs://`` the objects are first downloaded to a
temporary directory with google-cloud-storage (so ``STORAGE_EMULATOR_HOST`` and the usual
credentials apply): DuckDB's own GCS access needs its httpfs extension, which DuckDB downloads
at run time and which speaks neither to the emulator nor through our credential settings.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from wal_bridge import durable
from wal_bridge.commands.common import (
    LOGGING,
    STORAGE,
    build_settings,
    settings_options,
    specs,
    table,
)
from wal_bridge.config import Destination, Settings
from wal_bridge.errors import WalBridgeError


class QueryError(WalBridgeError):
    """The SQL did not run (syntax, unknown column, nothing landed yet)."""


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def _parquet_files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*.parquet")
                  if not p.name.startswith(".") and not p.name.endswith(durable.TEMP_SUFFIX))


@contextmanager
def landed_files(settings: Settings) -> Iterator[tuple[list[Path], list[Path]]]:
    """The data and dead-letter Parquet files of the destination, local paths (downloaded for
    gs://, and removed again afterwards)."""
    destination = settings.require_destination()
    if destination.scheme == "file":
        root = Path(destination.bucket)
        yield (_parquet_files(root / destination.prefix),
               _parquet_files(root / destination.dead_letter_prefix))
        return
    tmp = Path(tempfile.mkdtemp(prefix="wal-bridge-query-"))
    try:
        _download(settings, destination, tmp)
        yield (_parquet_files(tmp / destination.prefix),
               _parquet_files(tmp / destination.dead_letter_prefix))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download(settings: Settings, destination: Destination, into: Path) -> None:
    from wal_bridge.sink import open_sink

    sink = open_sink(settings)
    keys = [o.key for prefix in (destination.prefix, destination.dead_letter_prefix)
            for o in sink.list(prefix.rstrip("/") + "/") if o.key.endswith(".parquet")]

    def fetch(key: str) -> None:
        target = into / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(sink.read(key))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fetch, keys))


def run_query(sql: str, data: Sequence[Path], dead: Sequence[Path] = ()) -> Result:
    """Run ``sql`` with ``events`` (and ``dead_letters``) defined over the given files."""
    import duckdb

    if not data and not dead:
        raise QueryError("nothing has landed yet: no Parquet files under the destination")
    con = duckdb.connect(":memory:")
    try:
        for name, files in (("events", data), ("dead_letters", dead)):
            if files:
                listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in files)
                # Both parts are ours: a fixed view name and quoted file paths.
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet([{listed}], "  # noqa: S608
                            "hive_partitioning = false, union_by_name = true)")
        try:
            cursor = con.execute(sql)
        except duckdb.Error as exc:
            message = str(exc).strip().splitlines()[0]
            if not data and "events" in message:
                message += " (no data files have landed; only dead letters)"
            raise QueryError(f"query failed: {message}") from exc
        if cursor.description is None:
            return Result([], [])
        columns = [d[0] for d in cursor.description]
        return Result(columns, [tuple(r) for r in cursor.fetchall()])
    finally:
        con.close()


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.6g}"
    if isinstance(value, bytes):
        return repr(value)[:60]
    return str(value)


def format_result(result: Result, fmt: str = "table") -> str:
    if fmt == "json":
        rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
        return json.dumps(rows, indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        return buf.getvalue().rstrip("\n")
    numeric = [i for i, _ in enumerate(result.columns)
               if result.rows and all(isinstance(r[i], int | float) and not isinstance(r[i], bool)
                                      for r in result.rows if r[i] is not None)]
    body = table(result.columns, [[_cell(v) for v in row] for row in result.rows], right=numeric)
    plural = "" if len(result.rows) == 1 else "s"
    return f"{body}\n({len(result.rows)} row{plural})"


def query_destination(settings: Settings, sql: str) -> Result:
    with landed_files(settings) as (data, dead):
        return run_query(sql, data, dead)


@click.command()
@click.argument("sql")
@settings_options(specs("destination", *STORAGE, *LOGGING))
@click.option("--json", "fmt", flag_value="json", help="Rows as a JSON list of objects.")
@click.option("--csv", "fmt", flag_value="csv", help="Rows as CSV with a header line.")
def query(sql: str, fmt: str | None, **values: Any) -> None:
    """Run SQL over what landed: table `events` (and `dead_letters`).

    \b
    Example:
      wal_bridge query --destination file://$PWD/landed \\
        "SELECT event_type, count(*) AS n FROM events GROUP BY 1 ORDER BY n DESC"
    """
    settings = build_settings(values)
    click.echo(format_result(query_destination(settings, sql), fmt or "table"))
