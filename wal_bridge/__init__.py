"""wal-bridge: a durable bridge from a Kafka topic to Parquet files in Google Cloud Storage."""

from typing import Any


def __getattr__(name: str) -> Any:
    """``__version__`` is read from the installed metadata when asked for: reading it costs
    every start (``wal_bridge run`` included) about 70 ms of imports otherwise."""
    if name != "__version__":
        raise AttributeError(f"module 'wal_bridge' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wal-bridge")
    except PackageNotFoundError:  # pragma: no cover - a source tree without install
        return "0.0.0+unknown"
