"""The durable pipeline end to end: real broker, real emulator, the bridge as a subprocess."""

from __future__ import annotations

import io
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import pyarrow.parquet as pq
import pytest

from scripts.services.toxiproxy import ToxiproxyClient
from tests.support import (
    BridgeProcess,
    bridge_env,
    committed_offsets,
    payloads_by_identity,
    produce,
    read_gcs,
    wait_for,
)

if TYPE_CHECKING:
    from conftest import GcsHandle, KafkaHandle

KEY_PATTERN = re.compile(
    r"^raw/dt=\d{4}-\d{2}-\d{2}/\d{8}T\d{9}Z-[A-Za-z0-9._-]+-\d{10}\.parquet$"
)


def event(i: int) -> bytes:
    return json.dumps({"event_id": i, "user": f"user-{i % 97}", "amount": i * 0.25,
                       "kind": ["view", "click", "buy"][i % 3]}).encode()


@pytest.fixture
def bridge(kafka: KafkaHandle, gcs: GcsHandle, topic: str, bucket: str,
           tmp_path: Path) -> BridgeProcess:
    env = bridge_env(bootstrap=kafka.bootstrap, topic=topic, destination=f"gs://{bucket}/raw",
                     wal_dir=tmp_path / "wal", emulator=gcs.url)
    process = BridgeProcess(env, tmp_path / "bridge.log")
    yield process  # type: ignore[misc]
    process.stop()


def landed_when(gcs: GcsHandle, bucket: str, expected: int, bridge: BridgeProcess,
                timeout: float = 120) -> dict:  # type: ignore[type-arg]
    client = gcs.client()

    def enough() -> object:
        landed = read_gcs(client, bucket, "raw/")
        return landed if landed.rows >= expected else None

    wait_for(enough, timeout, f"{expected} rows in gs://{bucket}/raw",
                      interval=1.0, on_timeout=lambda: bridge.log()[-4000:])
    time.sleep(3)  # anything more that would land (duplicates) lands now
    return read_gcs(client, bucket, "raw/")  # type: ignore[return-value]


def assert_exactly_once(landed, expected: dict[tuple[int, int], bytes]) -> None:  # type: ignore[no-untyped-def]
    counts = Counter(landed.identities())
    duplicates = {k: n for k, n in counts.items() if n > 1}
    missing = set(expected) - set(counts)
    extra = set(counts) - set(expected)
    assert not duplicates, f"{len(duplicates)} duplicated, e.g. {list(duplicates)[:5]}"
    assert not missing, f"{len(missing)} missing, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} never produced, e.g. {sorted(extra)[:5]}"
    rows = payloads_by_identity(landed.tables)
    for identity, value in expected.items():
        original = json.loads(value)
        row = rows[identity]
        assert {k: row[k] for k in original} == original, f"payload differs at {identity}"


def expected_records(
    bootstrap: str, topic: str, values: list[bytes]
) -> dict[tuple[int, int], bytes]:
    """Produce round-robin over 3 partitions and return what each (partition, offset) holds."""
    produce(bootstrap, topic, values)
    expected: dict[tuple[int, int], bytes] = {}
    per_partition: Counter[int] = Counter()
    for i, value in enumerate(values):
        partition = i % 3
        expected[(partition, per_partition[partition])] = value
        per_partition[partition] += 1
    return expected


def test_twenty_thousand_records_land_exactly_once(kafka, gcs, topic, bucket, bridge) -> None:  # type: ignore[no-untyped-def]
    """20,000 records over 3 partitions land once each, intact, Snappy, under the key layout."""
    expected = expected_records(kafka.bootstrap, topic, [event(i) for i in range(20_000)])
    bridge.start()
    landed = landed_when(gcs, bucket, 20_000, bridge)
    assert_exactly_once(landed, expected)
    for key in landed.keys:
        assert KEY_PATTERN.match(key), key
    blob = gcs.client().bucket(bucket).blob(landed.keys[0]).download_as_bytes()
    metadata = pq.ParquetFile(io.BytesIO(blob)).metadata
    codecs = {metadata.row_group(0).column(c).compression for c in range(metadata.num_columns)}
    assert codecs == {"SNAPPY"}
    # BATCH_SIZE=1000: no file holds more, and with the backlog waiting most hold exactly that.
    sizes = Counter(t.num_rows for t in landed.tables.values())
    assert max(sizes) == 1000
    assert sizes[1000] >= 15, sizes
    assert bridge.terminate() == 0
    assert committed_offsets(kafka.bootstrap, f"g-{topic}", topic) == {
        p: sum(1 for (q, _) in expected if q == p) for p in range(3)
    }


def test_the_time_trigger_seals_a_partial_batch(kafka, gcs, topic, bucket, bridge) -> None:  # type: ignore[no-untyped-def]
    """Seven records, far fewer than BATCH_SIZE, land within a few BATCH_TIMEOUTs."""
    bridge.start()
    expected = expected_records(kafka.bootstrap, topic, [event(i) for i in range(7)])
    started = time.monotonic()
    landed = landed_when(gcs, bucket, 7, bridge, timeout=60)
    assert time.monotonic() - started < 30
    assert_exactly_once(landed, expected)
    assert '"event": "segment_sealed"' in bridge.log()


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_a_restart_neither_loses_nor_duplicates(kafka, gcs, topic, bucket, bridge,  # type: ignore[no-untyped-def]
                                                stop: str) -> None:
    """Stopping mid-stream (SIGTERM or kill -9) and starting again lands everything once."""
    first = expected_records(kafka.bootstrap, topic, [event(i) for i in range(6_000)])
    bridge.start()
    wait_for(lambda: '"event": "segment_sealed"' in bridge.log(), 60, "a first sealed segment",
             on_timeout=lambda: bridge.log()[-3000:])
    if stop == "sigterm":
        assert bridge.terminate() == 0
    else:
        bridge.kill()
    produce(kafka.bootstrap, topic, [event(i) for i in range(6_000, 9_000)])
    expected = dict(first)
    for i in range(6_000, 9_000):
        partition = i % 3
        expected[(partition, 2000 + (i - 6_000) // 3)] = event(i)
    bridge.start()
    landed = landed_when(gcs, bucket, 9_000, bridge)
    assert_exactly_once(landed, expected)
    assert bridge.terminate() == 0


@pytest.mark.parametrize("policy", ["wal", "upload"])
def test_an_emulator_outage_loses_nothing(kafka, gcs, topic, bucket, tmp_path: Path,  # type: ignore[no-untyped-def]
                                         toxiproxy: ToxiproxyClient, policy: str) -> None:
    """With GCS cut off for 20 s from the start, the WAL holds everything and drains once it is
    back; offsets keep being committed under COMMIT_POLICY=wal, and not under upload. (Cut off
    from the start, the first thing to retry is storing the table's schema, which must reach
    the bucket before any file is written; test_storage_faults covers uploads cut mid-run.)"""
    upstream = urlparse(gcs.url).netloc
    proxy = toxiproxy.create_proxy(f"gcs-{policy}-{topic[-8:]}", upstream)
    env = bridge_env(bootstrap=kafka.bootstrap, topic=topic, destination=f"gs://{bucket}/raw",
                     wal_dir=tmp_path / "wal", emulator=proxy.url, COMMIT_POLICY=policy)
    bridge = BridgeProcess(env, tmp_path / "bridge.log")
    try:
        toxiproxy.disable(proxy.name)
        bridge.start()
        expected = expected_records(kafka.bootstrap, topic, [event(i) for i in range(5_000)])
        wait_for(lambda: bridge.log().count('"event": "schema_store_retrying"') >= 2, 60,
                 "retries to store the schema while the emulator is cut off",
                 on_timeout=lambda: bridge.log()[-3000:])
        time.sleep(8)  # the rest of the 20 s outage: commits happen (or not) meanwhile
        committed = committed_offsets(kafka.bootstrap, f"g-{topic}", topic)
        assert read_gcs(gcs.client(), bucket, "raw/").rows == 0
        if policy == "wal":
            assert sum(max(o, 0) for o in committed.values()) == 5_000
        else:
            # Nothing is shipped yet: no commit may pass the first record of any partition.
            assert all(o <= 0 for o in committed.values()), committed
        toxiproxy.enable(proxy.name)
        landed = landed_when(gcs, bucket, 5_000, bridge)
        assert_exactly_once(landed, expected)
        wait_for(lambda: sum(max(o, 0) for o in committed_offsets(
            kafka.bootstrap, f"g-{topic}", topic).values()) == 5_000, 30,
            "all offsets committed once shipped")
        assert bridge.terminate() == 0
        assert not list((tmp_path / "wal" / "segments").iterdir())
    finally:
        bridge.stop()


def test_a_missing_bucket_stops_the_bridge_with_one_clear_line(kafka, gcs, topic,  # type: ignore[no-untyped-def]
                                                                tmp_path: Path) -> None:
    """A bucket that does not exist is reported at start in one line, not a stack trace."""
    env = bridge_env(bootstrap=kafka.bootstrap, topic=topic, destination="gs://no-such-bucket/raw",
                     wal_dir=tmp_path / "wal", emulator=gcs.url)
    bridge = BridgeProcess(env, tmp_path / "bridge.log").start()
    assert bridge.wait(60) == 1
    last = bridge.log().strip().splitlines()[-1]
    assert last.startswith("wal_bridge: error: checking gs://no-such-bucket: HTTP 404")
    assert "create it (terraform apply) or fix DESTINATION" in last
    assert "Traceback" not in bridge.log()
