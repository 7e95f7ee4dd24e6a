"""Faithful rows end to end: every record a row or a dead letter, one schema for every file."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.support import BridgeProcess, Landed, bridge_env, produce, read_gcs, wait_for

if TYPE_CHECKING:
    from conftest import GcsHandle, KafkaHandle

PARTITIONS = 3
MAX_RECORD_BYTES = 4096
BAD: list[tuple[bytes | None, str]] = [
    (None, "tombstone"),
    (b"", "empty"),
    (b'{"id": 1, "blob": "' + b"x" * MAX_RECORD_BYTES + b'"}', "too_large"),
    (b'{"id": "\xff\xfe"}', "invalid_utf8"),
    (b"plain text", "not_json"),
    (b'{"id": 5, "name": "cut', "not_json"),
    (b'{"id": 6,}', "not_json"),
    (b'{"id": NaN}', "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'"a string"', "not_object"),
    (b'{"id": 1, "id": 2}', "duplicate_key"),
]


def good(i: int) -> bytes:
    return json.dumps({"id": i, "name": f"user-{i % 13}", "amount": i / 4,
                       "device": {"os": ["ios", "web"][i % 2], "v": i % 5}}).encode()


@pytest.fixture
def bridge(kafka: KafkaHandle, gcs: GcsHandle, topic: str, bucket: str,
           tmp_path: Path) -> Any:
    env = bridge_env(bootstrap=kafka.bootstrap, topic=topic, destination=f"gs://{bucket}/raw",
                     wal_dir=tmp_path / "wal", emulator=gcs.url, BATCH_SIZE="250",
                     MAX_RECORD_BYTES=str(MAX_RECORD_BYTES))
    process = BridgeProcess(env, tmp_path / "bridge.log")
    yield process
    process.stop()


def produced(bootstrap: str, topic: str, values: list[bytes | None],
             start: Counter[int] | None = None) -> dict[tuple[int, int], bytes | None]:
    """Produce round-robin and return what each (partition, offset) holds."""
    produce(bootstrap, topic, values, partitions=PARTITIONS, key=lambda i: f"k{i}".encode())
    next_offset = start if start is not None else Counter()
    out: dict[tuple[int, int], bytes | None] = {}
    for i, value in enumerate(values):
        partition = i % PARTITIONS
        out[(partition, next_offset[partition])] = value
        next_offset[partition] += 1
    return out


def landed(gcs: GcsHandle, bucket: str, total: int, bridge: BridgeProcess) -> tuple[Landed, Landed]:
    """Wait until data rows and dead letters add up to ``total``; then read both prefixes."""
    client = gcs.client()

    def both() -> tuple[Landed, Landed] | None:
        data, dead = read_gcs(client, bucket, "raw/"), read_gcs(client, bucket, "dead-letter/")
        return (data, dead) if data.rows + dead.rows >= total else None

    wait_for(both, 180, f"{total} records landed in gs://{bucket}", interval=1.0,
             on_timeout=lambda: bridge.log()[-4000:])
    time.sleep(3)  # anything more that would land (a duplicate) lands now
    return read_gcs(client, bucket, "raw/"), read_gcs(client, bucket, "dead-letter/")


def rows_by_identity(landed_files: Landed) -> dict[tuple[int, int], list[dict[str, Any]]]:
    rows: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for table in landed_files.tables.values():
        for row in table.to_pylist():
            rows.setdefault((row["_kafka_partition"], row["_kafka_offset"]), []).append(row)
    return rows


def footers(gcs: GcsHandle, bucket: str, keys: list[str]) -> dict[str, dict[str, str]]:
    out = {}
    for key in keys:
        blob = gcs.client().bucket(bucket).blob(key).download_as_bytes()
        meta = pq.ParquetFile(io.BytesIO(blob)).metadata.metadata
        out[key] = {k.decode(): v.decode() for k, v in meta.items()}
    return out


def test_a_stream_with_every_kind_of_bad_record_lands_whole(
    kafka: KafkaHandle, gcs: GcsHandle, topic: str, bucket: str, bridge: BridgeProcess
) -> None:
    """Good records become rows and every bad kind a dead letter with its raw bytes and
    reason: together, by (partition, offset), exactly what was produced, nothing twice; the
    footers of each segment's two files add up to the segment."""
    values: list[bytes | None] = []
    for i in range(1500):
        values.append(BAD[i // 7 % len(BAD)][0] if i % 7 == 3 else good(i))
    expected = produced(kafka.bootstrap, topic, values)
    bridge.start()
    data, dead = landed(gcs, bucket, len(values), bridge)

    data_rows, dead_rows = rows_by_identity(data), rows_by_identity(dead)
    assert not set(data_rows) & set(dead_rows)
    assert set(data_rows) | set(dead_rows) == set(expected)
    assert all(len(rows) == 1 for rows in [*data_rows.values(), *dead_rows.values()])
    reasons = dict(BAD)
    for identity, value in expected.items():
        if value in reasons:
            row = dead_rows[identity][0]
            assert (row["_value"], row["_reason"]) == (value, reasons[value]), identity
            assert row["_kafka_key"] is not None
        else:
            row = data_rows[identity][0]
            original = json.loads(value)  # type: ignore[arg-type]
            assert (row["id"], row["name"], row["amount"]) == (
                original["id"], original["name"], original["amount"])
            assert json.loads(row["device"]) == original["device"]
            assert row["_extra"] is None
    assert Counter(r[0]["_reason"] for r in dead_rows.values()) == Counter(
        reasons[v] for v in expected.values() if v in reasons)

    meta = footers(gcs, bucket, [*data.keys, *dead.keys])
    by_segment: dict[str, list[dict[str, str]]] = {}
    for footer in meta.values():
        by_segment.setdefault(footer["wal_bridge.segment"], []).append(footer)
    for segment, files in by_segment.items():
        assert sum(int(f["wal_bridge.records"]) for f in files) == int(
            files[0]["wal_bridge.segment_records"]), segment
        assert {f["wal_bridge.kind"] for f in files} <= {"data", "dead_letter"}


def test_schema_drift_end_to_end_loses_nothing_and_keeps_one_schema(
    kafka: KafkaHandle, gcs: GcsHandle, topic: str, bucket: str, bridge: BridgeProcess,
    tmp_path: Path,
) -> None:
    """After the first data pins the schema, new fields and type changes keep every record a
    row (odd values in _extra); every data file has the same schema, and pyarrow.dataset reads
    the whole prefix as one table."""
    bridge.start()
    first = produced(kafka.bootstrap, topic, [good(i) for i in range(300)])
    landed(gcs, bucket, len(first), bridge)  # the first data has landed: the schema is pinned

    drifted: list[bytes | None] = []
    for i in range(300, 900):
        event: dict[str, Any] = json.loads(good(i))
        if i % 3 == 0:
            event["campaign"] = f"c{i % 4}"  # a new field
        if i % 5 == 0:
            event["amount"] = str(event["amount"])  # a type change
        if i % 7 == 0:
            event["id"] = i + 0.5  # an integer column gets a fraction
        if i % 11 == 0:
            event["device"] = [event["device"]]  # the nested value changes shape
        drifted.append(json.dumps(event).encode())
    start = Counter({p: sum(1 for (q, _) in first if q == p) for p in range(PARTITIONS)})
    second = produced(kafka.bootstrap, topic, drifted, start)
    data, dead = landed(gcs, bucket, len(first) + len(second), bridge)

    assert dead.rows == 0
    schemas = {table.schema.remove_metadata() for table in data.tables.values()}
    assert len(schemas) == 1, schemas
    assert len(data.keys) >= 3

    local = tmp_path / "landed"
    for key in data.keys:
        target = local / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(gcs.client().bucket(bucket).blob(key).download_as_bytes())
    table = ds.dataset(local / "raw", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(first) + len(second)
    rows = {(r["_kafka_partition"], r["_kafka_offset"]): r for r in table.to_pylist()}
    assert set(rows) == set(first) | set(second)
    for identity, value in second.items():
        original = json.loads(value)  # type: ignore[arg-type]
        row = rows[identity]
        extra = json.loads(row["_extra"]) if row["_extra"] else {}
        for name in ("id", "amount"):  # in its column if it fits, else kept in _extra
            assert row[name] == original[name] or extra[name] == original[name], identity
        assert json.loads(row["device"]) == original["device"]
        if "campaign" in original:
            assert extra["campaign"] == original["campaign"]


def test_two_instances_with_different_first_data_write_one_schema_on_one_destination(
    kafka: KafkaHandle, gcs: GcsHandle, bucket: str, tmp_path: Path,
) -> None:
    """Two bridges whose first data differ (two topics, one bucket prefix, no SCHEMA_FILE)
    write files of one schema: the first to pin stores it beside the data, the other adopts
    it. A third started with a SCHEMA_FILE that disagrees stops at start with one line, exit 2."""
    topics = [kafka.create_topic(f"one-schema-{n}-{time.monotonic_ns()}", partitions=PARTITIONS)
              for n in ("a", "b")]
    shapes = [lambda i: {"id": i, "name": f"n{i}"}, lambda i: {"user": f"u{i}", "score": i / 2}]
    bridges = []
    for n, (topic, shape) in enumerate(zip(topics, shapes, strict=True)):
        produce(kafka.bootstrap, topic, [json.dumps(shape(i)).encode() for i in range(200)],
                partitions=PARTITIONS)
        env = bridge_env(bootstrap=kafka.bootstrap, topic=topic,
                         destination=f"gs://{bucket}/raw", wal_dir=tmp_path / f"wal-{n}",
                         emulator=gcs.url, BATCH_SIZE="100", INSTANCE_ID=f"bridge-{n}")
        bridges.append(BridgeProcess(env, tmp_path / f"bridge-{n}.log").start())
    client = gcs.client()
    try:
        data = wait_for(lambda: (d if (d := read_gcs(client, bucket, "raw/")).rows >= 400
                                 else None), 180, "400 rows landed",
                        on_timeout=lambda: bridges[1].log()[-3000:])
        assert all(b.terminate() == 0 for b in bridges)
    finally:
        for b in bridges:
            b.stop()
    schemas = {t.schema.remove_metadata() for t in data.tables.values()}
    assert len(schemas) == 1, schemas
    stored = client.bucket(bucket).blob("_wal_bridge/raw/schema.json").download_as_bytes()
    payload = [c["name"] for c in json.loads(stored)]
    assert payload in (["id", "name"], ["user", "score"])
    assert data.rows == 400
    assert sum(1 for t in data.tables.values() if t.num_rows) >= 2  # both wrote files

    other = tmp_path / "other.json"
    other.write_text('[{"name": "id", "type": "string"}]')
    env = bridge_env(bootstrap=kafka.bootstrap, topic=topics[0],
                     destination=f"gs://{bucket}/raw", wal_dir=tmp_path / "wal-x",
                     emulator=gcs.url, SCHEMA_FILE=str(other))
    third = BridgeProcess(env, tmp_path / "bridge-x.log").start()
    try:
        assert third.wait(60) == 2
    finally:
        third.stop()
    assert "SCHEMA_FILE differs from the one stored for this destination at gs://" \
        in third.log()
