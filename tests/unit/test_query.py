"""`wal_bridge query`: SQL over landed Parquet files as the tables `events` and `dead_letters`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from wal_bridge.cli import main
from wal_bridge.commands.query import QueryError, format_result, run_query


def land(root: Path, key: str, table: pa.Table) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")
    return path


@pytest.fixture
def landed(tmp_path: Path) -> Path:
    land(tmp_path, "raw/dt=2026-01-01/a.parquet",
         pa.table({"event_type": ["click", "purchase"], "amount": [0.0, 12.5],
                   "_offset": [0, 1]}))
    # A later file gained a column: union_by_name fills it with NULL for older rows.
    land(tmp_path, "raw/dt=2026-01-02/b.parquet",
         pa.table({"event_type": ["purchase"], "amount": [7.5], "coupon": ["X1"],
                   "_offset": [2]}))
    land(tmp_path, "dead-letter/dt=2026-01-02/b.parquet",
         pa.table({"_offset": [3], "_reason": ["not_json: Expecting value"]}))
    (tmp_path / "raw" / "dt=2026-01-02" / ".b.parquet.123.tmp").write_bytes(b"partial")
    return tmp_path


def test_events_span_every_file_by_column_name_without_a_hive_column(landed: Path) -> None:
    """Files with different columns are one table; the dt= folder adds no column."""
    files = sorted((landed / "raw").rglob("*.parquet"))
    result = run_query("SELECT * FROM events ORDER BY _offset", files)
    assert result.columns == ["event_type", "amount", "_offset", "coupon"]
    assert result.rows == [("click", 0.0, 0, None), ("purchase", 12.5, 1, None),
                           ("purchase", 7.5, 2, "X1")]


def test_the_command_reads_a_local_destination_and_prints_a_table(landed: Path) -> None:
    """Aggregates come back as an aligned table with a row count."""
    result = CliRunner().invoke(main, [
        "query", "--destination", f"file://{landed}",
        "SELECT event_type, sum(amount) AS amount FROM events GROUP BY 1 ORDER BY 1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "event_type  amount", "click         0.00", "purchase     20.00", "(2 rows)"]


def test_dead_letters_are_a_table_too_and_json_and_csv_work(landed: Path) -> None:
    """--json prints objects, --csv a header and rows; dead_letters is queryable."""
    as_json = CliRunner().invoke(main, ["query", "--destination", f"file://{landed}", "--json",
                                        "SELECT _reason FROM dead_letters"])
    assert json.loads(as_json.output) == [{"_reason": "not_json: Expecting value"}]
    as_csv = CliRunner().invoke(main, ["query", "--destination", f"file://{landed}", "--csv",
                                       "SELECT count(*) AS n FROM events"])
    assert as_csv.output.splitlines() == ["n", "3"]


def test_bad_sql_and_an_empty_destination_are_one_line_errors(tmp_path: Path,
                                                              landed: Path) -> None:
    """A SQL error and 'nothing landed' both exit 1 with a single line."""
    bad = CliRunner().invoke(main, ["query", "--destination", f"file://{landed}",
                                    "SELECT nope FROM events"])
    assert bad.exit_code == 1
    assert bad.output.startswith("wal_bridge: error: query failed: Binder Error")
    assert len(bad.output.strip().splitlines()) == 1
    with pytest.raises(QueryError, match="nothing has landed"):
        run_query("SELECT 1", [], [])


def test_format_result_right_aligns_numbers() -> None:
    """Numeric columns are right-aligned so that digits line up."""
    from wal_bridge.commands.query import Result

    text = format_result(Result(["name", "n"], [("a", 5), ("bb", 1234)]))
    assert text.splitlines()[:3] == ["name     n", "a        5", "bb    1234"]
