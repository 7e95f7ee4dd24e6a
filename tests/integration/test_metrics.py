"""/metrics, /healthz and /readyz of a running bridge, scraped while it works."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import BridgeProcess, bridge_env, produce, wait_for
from wal_bridge.commands.produce import EventStream

if TYPE_CHECKING:
    from tests.conftest import GcsHandle, KafkaHandle


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), -1.0)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def bridge(kafka: KafkaHandle, gcs: GcsHandle, topic: str, bucket: str, tmp_path: Path,
           port: int) -> Any:
    env = bridge_env(bootstrap=kafka.bootstrap, topic=topic, destination=f"gs://{bucket}/raw",
                     wal_dir=tmp_path / "wal", emulator=gcs.url, METRICS_PORT=str(port),
                     MAX_RECORD_BYTES="64KiB", BATCH_TIMEOUT="1")
    process = BridgeProcess(env, tmp_path / "bridge.log")
    yield process
    process.stop()


def test_counters_match_the_records_produced(kafka: KafkaHandle, topic: str,
                                             bridge: BridgeProcess, port: int) -> None:
    """Consumed, appended and shipped equal what was produced; dead letters equal the malformed
    share; the lag drops to zero; the bridge is healthy and ready."""
    events = list(islice(EventStream(seed=21, malformed_ratio=0.04,
                                     max_record_bytes=64 * 1024), 3000))
    malformed = sum(1 for e in events if e.kind != "event")
    bridge.start()
    wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60, "/readyz 200",
             on_timeout=lambda: bridge.log()[-3000:])
    produce(kafka.bootstrap, topic, [e.value for e in events])

    samples = wait_for(
        lambda: (s := scrape(port)) and value(s, "wal_bridge_records_shipped_total") == 3000
        and s, 120, "3000 records shipped", on_timeout=lambda: bridge.log()[-3000:])

    assert value(samples, "wal_bridge_records_consumed_total") == 3000
    assert value(samples, "wal_bridge_records_appended_total") == 3000
    assert value(samples, "wal_bridge_dead_letters_total") == malformed
    assert value(samples, "wal_bridge_segments_shipped_total") >= 3
    assert value(samples, "wal_bridge_upload_errors_total") == 0
    assert value(samples, "wal_bridge_wal_fsync_seconds_count") >= 1
    assert value(samples, "wal_bridge_partitions_assigned") == 3
    lag = wait_for(lambda: (s := scrape(port)) and all(
        value(s, "wal_bridge_consumer_lag", topic=topic, partition=str(p)) == 0
        for p in range(3)) and s, 30, "the consumer lag gauge at 0 for every partition")
    assert value(lag, "wal_bridge_segments", state="quarantined") == 0
    assert value(lag, "wal_bridge_segments_stuck") == 0
    assert value(lag, "wal_bridge_ready") == 1
    assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    assert get(f"http://127.0.0.1:{port}/readyz") == (200, "ready\n")
    empty = wait_for(lambda: (s := scrape(port)) and value(s, "wal_bridge_wal_bytes") == 0
                     and s, 30, "an empty WAL")
    assert value(empty, "wal_bridge_oldest_unshipped_age_seconds") == 0
    assert bridge.terminate() == 0


def test_readyz_is_503_while_a_segment_is_stuck(kafka: KafkaHandle, gcs: GcsHandle, topic: str,
                                                bucket: str, bridge: BridgeProcess,
                                                port: int) -> None:
    """A bucket that disappears makes uploads fail for good: not ready, with the reason, while
    /healthz stays 200 and the error counter moves."""
    bridge.start()
    wait_for(lambda: get(f"http://127.0.0.1:{port}/readyz")[0] == 200, 60, "/readyz 200",
             on_timeout=lambda: bridge.log()[-3000:])
    # First records ship, so the destination's schema is pinned: without the bucket, pinning it
    # would fail instead, and no segment would reach the upload.
    produce(kafka.bootstrap, topic, [json.dumps({"n": i}).encode() for i in range(100)])
    wait_for(lambda: value(scrape(port), "wal_bridge_records_shipped_total") == 100, 60,
             "the first 100 records shipped", on_timeout=lambda: bridge.log()[-3000:])
    gcs.client().bucket(bucket).delete(force=True)
    produce(kafka.bootstrap, topic, [json.dumps({"n": i}).encode() for i in range(100, 200)])

    _, body = wait_for(lambda: (r := get(f"http://127.0.0.1:{port}/readyz"))[0] == 503
                            and r, 60, "/readyz 503", on_timeout=lambda: bridge.log()[-3000:])

    assert "stuck" in body
    samples = scrape(port)
    assert value(samples, "wal_bridge_segments_stuck") >= 1
    assert value(samples, "wal_bridge_upload_errors_total") >= 1
    assert value(samples, "wal_bridge_segments", state="converted") >= 1
    assert value(samples, "wal_bridge_ready") == 0
    assert value(samples, "wal_bridge_wal_bytes") > 0
    assert get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    assert bridge.terminate() == 0


def test_readyz_is_503_until_partitions_are_assigned(gcs: GcsHandle, bucket: str, tmp_path: Path,
                                                     port: int) -> None:
    """With no broker to talk to, the process is alive but not ready."""
    env = bridge_env(bootstrap=f"127.0.0.1:{free_port()}", topic="nowhere",
                     destination=f"gs://{bucket}/raw", wal_dir=tmp_path / "wal",
                     emulator=gcs.url, METRICS_PORT=str(port))
    bridge = BridgeProcess(env, tmp_path / "bridge.log").start()
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 60, "/healthz",
                 on_timeout=lambda: bridge.log()[-3000:])
        assert get(f"http://127.0.0.1:{port}/readyz") == (503, "no partition assignment yet\n")
        assert value(scrape(port), "wal_bridge_partitions_assigned") == 0
        assert bridge.terminate() == 0
    finally:
        bridge.stop()
