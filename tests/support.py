"""Helpers shared by integration and chaos tests: the bridge as a subprocess, and the oracle.

Tests run the real ``wal_bridge run`` in a child process, so that signals, ``kill -9`` and
restarts are real, and read back what landed with google-cloud-storage or from a directory.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition


def produce(bootstrap: str, topic: str, values: Iterable[bytes | None], *,
            partitions: int = 3, key: Callable[[int], bytes | None] | None = None) -> int:
    """Produce ``values`` round-robin over ``partitions``; return how many were produced."""
    # Idempotence keeps each partition in the order produced, retries included: tests that
    # expect record i at a computed offset depend on it.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                         "enable.idempotence": True})
    count = 0
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value, key=key(i) if key else None,
                                 partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    assert remaining == 0, f"{remaining} records were not acknowledged by the broker"
    return count


def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int = 3
) -> dict[int, int]:
    """The group's committed offset per partition (-1001 when none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


def log_events(text: str, name: str) -> list[dict[str, Any]]:
    """The JSON lines of a bridge's log ``text`` whose ``event`` is ``name``, in order (other
    lines, and lines that are not JSON, are skipped)."""
    out = []
    for line in text.splitlines():
        if f'"{name}"' not in line or not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == name:
            out.append(entry)
    return out


@dataclass
class BridgeProcess:
    """``wal_bridge run`` in a child process, its output kept in a log file."""

    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    runs: int = field(default=0)

    def start(self, **overrides: str) -> BridgeProcess:
        env = {**self.env, **overrides}
        self.runs += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        log.write(f"\n===== start {self.runs} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wal_bridge.cli", "run"], env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait for the graceful exit; return the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> int:
        """SIGKILL: nothing is flushed, closed or committed."""
        assert self.proc is not None
        self.proc.kill()
        return self.proc.wait(30)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines with ``"event": name``, of every run, in order."""
        return log_events(self.log(), name)

    def stop(self) -> None:
        if self.alive():
            self.kill()


def bridge_env(*, bootstrap: str, topic: str, destination: str, wal_dir: Path,
               emulator: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a bridge child process: the test's settings and nothing inherited
    that could point it elsewhere (credentials, an emulator)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC=topic, KAFKA_GROUP_ID=f"g-{topic}",
        DESTINATION=destination, WAL_DIR=str(wal_dir), METRICS_PORT="0", LOG_FORMAT="json",
        BATCH_SIZE="1000", BATCH_TIMEOUT="2", SHUTDOWN_GRACE="20", PYTHONUNBUFFERED="1",
    )
    if emulator:
        env["STORAGE_EMULATOR_HOST"] = emulator
    env.update(extra)
    return env


@dataclass(frozen=True)
class Landed:
    """Every row that landed under a prefix, with the object it came from."""

    keys: list[str]
    tables: dict[str, pa.Table]

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.tables.values())

    def identities(self) -> list[tuple[int, int]]:
        """(partition, offset) of every row, duplicates kept."""
        out: list[tuple[int, int]] = []
        for table in self.tables.values():
            out.extend(zip(table.column("_kafka_partition").to_pylist(),
                           table.column("_kafka_offset").to_pylist(), strict=True))
        return out


def read_gcs(client: Any, bucket: str, prefix: str) -> Landed:
    tables: dict[str, pa.Table] = {}
    for blob in client.list_blobs(bucket, prefix=prefix):
        if blob.name.endswith(".parquet"):
            tables[blob.name] = pq.read_table(io.BytesIO(blob.download_as_bytes()))
    return Landed(sorted(tables), tables)


def read_dir(root: Path, prefix: str) -> Landed:
    tables = {
        p.relative_to(root).as_posix(): pq.read_table(p)
        for p in sorted((root / prefix).rglob("*.parquet")) if not p.name.startswith(".")
    }
    return Landed(sorted(tables), tables)


def in_ci() -> bool:
    """Whether ``CI`` is set (``1``, ``true``, ``yes``): a missing tool is then a failure."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(what: str) -> NoReturn:
    """Fail under CI=true, skip elsewhere: ``what`` says what is missing and how to get it."""
    if in_ci():
        pytest.fail(f"CI=true but {what}", pytrace=False)
    pytest.skip(what)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.5, on_timeout: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on time-out."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def payloads_by_identity(tables: Mapping[str, pa.Table]) -> dict[tuple[int, int], Any]:
    out: dict[tuple[int, int], Any] = {}
    for table in tables.values():
        for row in table.to_pylist():
            out[(row["_kafka_partition"], row["_kafka_offset"])] = row
    return out
