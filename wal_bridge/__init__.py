"""wal-bridge: a durable bridge from a Kafka topic to Parquet files in Google Cloud Storage."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("wal-bridge")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
