"""What landing events costs: BigQuery streaming ingestion against Parquet objects on GCS.

Pure arithmetic on counts the benchmark measured (rows, their BigQuery size, objects, bytes),
at list prices in USD. The prices, where they were read and when, are kept together in
:data:`PRICES` so that the report can print them beside the figures.

BigQuery bills ingestion by its own *logical* row size (per column: 8 bytes for INT64, FLOAT64
and TIMESTAMP, 1 for BOOL, 2 + UTF-8 length for STRING, 2 + length for BYTES, 0 for NULL), not
by the JSON or Parquet bytes; :func:`bigquery_row_bytes` computes it for a table's columns.
Units: the BigQuery and Cloud Storage price lists use binary units (MiB, GiB, TiB).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

MIB = 1024**2
GIB = 1024**3
TIB = 1024**4
HOURS_PER_MONTH = 730  # Cloud Storage bills storage per GiB-hour; a month is 730 hours


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    source: str
    read_on: str
    note: str = ""


PRICES: dict[str, Price] = {
    "streaming_insert": Price(
        0.01, "per 200 MiB, each row counted as at least 1 KiB",
        "https://cloud.google.com/bigquery/pricing (Streaming inserts, tabledata.insertAll)",
        "2026-11-27", "the legacy API; $0.05 per GiB",
    ),
    "storage_write_api": Price(
        0.025, "per GiB ingested (BigQuery logical bytes)",
        "https://cloud.google.com/bigquery/pricing (BigQuery Storage Write API); "
        "https://cloud.google.com/bigquery/docs/write-api ('up to 2 TB per month for free')",
        "2026-11-27", "the first 2 TiB per month per billing account are free",
    ),
    "gcs_class_a": Price(
        0.005, "per 1,000 Class A operations (object insert), Standard, single region",
        "https://cloud.google.com/storage/pricing", "2026-11-27",
        "one upload of an object up to the resumable threshold is one Class A operation",
    ),
    "gcs_storage": Price(
        0.000027397 * HOURS_PER_MONTH, "per GiB-month, Standard, single region (us-central1)",
        "https://cloud.google.com/storage/pricing ($0.000027397 per GiB-hour)", "2026-11-27",
    ),
}
STORAGE_WRITE_FREE_BYTES = 2 * TIB
STREAMING_MIN_ROW_BYTES = 1024


def streaming_insert_usd(row_bytes: Iterable[int] | int, rows: int | None = None) -> float:
    """Legacy streaming inserts for rows of these logical sizes (or ``rows`` rows of one size).

    Each row counts as at least 1 KiB; the price is $0.01 per 200 MiB.
    """
    if isinstance(row_bytes, int):
        if rows is None:
            raise ValueError("give rows with a single row size")
        billed = max(row_bytes, STREAMING_MIN_ROW_BYTES) * rows
    else:
        billed = sum(max(size, STREAMING_MIN_ROW_BYTES) for size in row_bytes)
    return billed / (200 * MIB) * PRICES["streaming_insert"].usd


def storage_write_api_usd(logical_bytes: int, *, free_bytes_left: int = 0) -> float:
    """The Storage Write API for ``logical_bytes``, after ``free_bytes_left`` of the month's
    free 2 TiB (0: the free tier is used up, the marginal price)."""
    billed = max(0, logical_bytes - free_bytes_left)
    return billed / GIB * PRICES["storage_write_api"].usd


def gcs_usd(objects: int, stored_bytes: int, months: float = 1.0) -> dict[str, float]:
    """Class A operations for ``objects`` uploads, and storage of ``stored_bytes`` for
    ``months`` months (Standard class)."""
    operations = objects / 1000 * PRICES["gcs_class_a"].usd
    storage = stored_bytes / GIB * PRICES["gcs_storage"].usd * months
    return {"class_a_usd": operations, "storage_usd_per_month": storage / months if months else 0,
            "total_usd": operations + storage}


@dataclass(frozen=True)
class CostPerMillion:
    """USD per million events landed, by each way of getting them into BigQuery."""

    events: int
    streaming_insert: float
    storage_write_api: float
    gcs_class_a: float
    gcs_storage_per_month: float
    objects_per_million: float
    bytes_per_million: float
    logical_bytes_per_row: float

    @property
    def gcs_first_month(self) -> float:
        return self.gcs_class_a + self.gcs_storage_per_month

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "gcs_first_month": self.gcs_first_month}


def per_million(*, events: int, objects: int, object_bytes: int,
                logical_row_bytes: Iterable[int] | float) -> CostPerMillion:
    """Scale what ``events`` events cost to one million events.

    ``logical_row_bytes`` is each row's BigQuery size, or their mean when every row has the
    same shape (the streaming minimum of 1 KiB then applies to the mean as to each row).
    """
    if events <= 0:
        raise ValueError("events must be positive")
    scale = 1_000_000 / events
    if isinstance(logical_row_bytes, int | float):
        mean = float(logical_row_bytes)
        total_logical = mean * events
        streaming = streaming_insert_usd(round(mean), rows=events)
    else:
        sizes = list(logical_row_bytes)
        total_logical = float(sum(sizes))
        mean = total_logical / len(sizes) if sizes else 0.0
        streaming = streaming_insert_usd(sizes)
    gcs = gcs_usd(objects, object_bytes)
    return CostPerMillion(
        events=events,
        streaming_insert=streaming * scale,
        storage_write_api=storage_write_api_usd(round(total_logical)) * scale,
        gcs_class_a=gcs["class_a_usd"] * scale,
        gcs_storage_per_month=gcs["storage_usd_per_month"] * scale,
        objects_per_million=objects * scale,
        bytes_per_million=object_bytes * scale,
        logical_bytes_per_row=mean,
    )


# BigQuery's data size per value, by the Parquet/Arrow type of the landed column.
FIXED_SIZE = {"int8": 8, "int16": 8, "int32": 8, "int64": 8, "uint8": 8, "uint16": 8,
              "uint32": 8, "uint64": 8, "float": 8, "double": 8, "bool": 1, "date32": 8,
              "timestamp": 8}


def column_bytes(type_name: str, non_null: int, payload_bytes: int = 0) -> int:
    """BigQuery logical bytes of one column: ``non_null`` values of ``type_name`` (an Arrow
    type name such as ``int64``, ``string``, ``timestamp[ms, tz=UTC]``) holding
    ``payload_bytes`` bytes of string or binary data in all."""
    base = type_name.split("[", maxsplit=1)[0]
    if base in ("string", "large_string", "binary", "large_binary"):
        return 2 * non_null + payload_bytes
    if base in FIXED_SIZE:
        return FIXED_SIZE[base] * non_null
    raise ValueError(f"no BigQuery size rule for Arrow type {type_name!r}")


def bigquery_row_bytes(columns: Mapping[str, tuple[str, int, int]], rows: int) -> float:
    """Mean BigQuery logical bytes per row, from per-column ``(type, non_null, payload_bytes)``."""
    if rows <= 0:
        return 0.0
    return sum(column_bytes(t, n, b) for t, n, b in columns.values()) / rows
