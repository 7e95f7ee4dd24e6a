"""The benchmark's cost arithmetic (scripts/bench_cost.py): list prices applied to counts."""

from __future__ import annotations

import pytest

from scripts import bench_cost
from scripts.bench_cost import GIB, MIB


def test_streaming_inserts_bill_each_row_as_at_least_one_kib() -> None:
    """A 157-byte row costs what a 1 KiB row costs: 200 MiB of them for one cent."""
    rows = 200 * MIB // 1024
    assert bench_cost.streaming_insert_usd(157, rows=rows) == pytest.approx(0.01)
    assert bench_cost.streaming_insert_usd([157] * 10) == bench_cost.streaming_insert_usd(
        1024, rows=10)


def test_streaming_inserts_bill_large_rows_by_their_size() -> None:
    """Rows over 1 KiB count with their own size."""
    assert bench_cost.streaming_insert_usd([4096]) == pytest.approx(4 * 0.01 / (200 * 1024))


def test_streaming_inserts_need_a_row_count_for_a_single_size() -> None:
    """One size without a row count is a mistake, not zero rows."""
    with pytest.raises(ValueError, match="rows"):
        bench_cost.streaming_insert_usd(100)


def test_storage_write_api_is_priced_per_gib_after_the_free_tier() -> None:
    """One GiB costs $0.025; what the month's free allowance covers costs nothing."""
    assert bench_cost.storage_write_api_usd(GIB) == pytest.approx(0.025)
    assert bench_cost.storage_write_api_usd(GIB, free_bytes_left=2 * GIB) == 0
    assert bench_cost.storage_write_api_usd(3 * GIB, free_bytes_left=GIB) == pytest.approx(0.05)


def test_gcs_costs_one_class_a_operation_per_object_and_storage_per_gib_month() -> None:
    """A thousand uploads cost half a cent; a GiB kept a month costs about two cents."""
    cost = bench_cost.gcs_usd(objects=1000, stored_bytes=GIB)
    assert cost["class_a_usd"] == pytest.approx(0.005)
    assert cost["storage_usd_per_month"] == pytest.approx(0.02, abs=1e-4)
    assert cost["total_usd"] == pytest.approx(cost["class_a_usd"] + 0.02, abs=1e-4)


def test_per_million_scales_what_the_run_measured() -> None:
    """Half a million events in 100 objects are 200 objects per million."""
    cost = bench_cost.per_million(events=500_000, objects=100, object_bytes=30 * MIB,
                                  logical_row_bytes=157.0)
    assert cost.objects_per_million == 200
    assert cost.bytes_per_million == 60 * MIB
    assert cost.gcs_class_a == pytest.approx(0.001)
    assert cost.streaming_insert == pytest.approx(1_000_000 * 1024 / (200 * MIB) * 0.01)
    assert cost.storage_write_api == pytest.approx(1_000_000 * 157 / GIB * 0.025)
    assert cost.as_dict()["gcs_first_month"] == pytest.approx(cost.gcs_class_a
                                                              + cost.gcs_storage_per_month)


def test_per_million_refuses_an_empty_run() -> None:
    """No events, no rate: dividing by zero is reported, not returned."""
    with pytest.raises(ValueError, match="positive"):
        bench_cost.per_million(events=0, objects=0, object_bytes=0, logical_row_bytes=1.0)


@pytest.mark.parametrize(
    ("type_name", "non_null", "payload", "expected"),
    [
        ("int64", 10, 0, 80),
        ("double", 3, 0, 24),
        ("bool", 4, 0, 4),
        ("timestamp[ms, tz=UTC]", 2, 0, 16),
        ("string", 5, 40, 50),
        ("binary", 1, 7, 9),
    ],
)
def test_bigquery_logical_size_follows_its_data_size_rules(
    type_name: str, non_null: int, payload: int, expected: int
) -> None:
    """8 bytes per number or timestamp, 1 per bool, 2 plus the bytes of a string."""
    assert bench_cost.column_bytes(type_name, non_null, payload) == expected


def test_bigquery_logical_size_rejects_an_unknown_type() -> None:
    """A type without a rule is an error rather than a silent zero."""
    with pytest.raises(ValueError, match="no BigQuery size rule"):
        bench_cost.column_bytes("decimal128(10, 2)", 1)


def test_bigquery_row_bytes_is_the_mean_over_rows() -> None:
    """Two rows of an int64 and a 3-byte string weigh 13 bytes each."""
    columns = {"n": ("int64", 2, 0), "s": ("string", 2, 6)}
    assert bench_cost.bigquery_row_bytes(columns, rows=2) == 13


def test_every_price_says_where_and_when_it_was_read() -> None:
    """A price without a source and a date cannot be checked again."""
    for price in bench_cost.PRICES.values():
        assert price.usd > 0
        assert price.source.startswith("https://")
        assert len(price.read_on) == 10
