"""Metrics: a registry per bridge, gauges from the WAL's state, and the /metrics server."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from wal_bridge.errors import ConfigError
from wal_bridge.metrics import Health, Metrics, MetricsServer, high_watermarks_from_stats
from wal_bridge.wal.codec import RecordColumns
from wal_bridge.wal.log import KeyPolicy, Wal


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_watermarks_come_from_the_statistics_of_assigned_partitions() -> None:
    """The last stable offset is used, else the high watermark; -1 and others are skipped."""
    stats = {"topics": {"events": {"partitions": {
        "0": {"hi_offset": 120, "ls_offset": 110},
        "1": {"hi_offset": 80, "ls_offset": -1},
        "2": {"hi_offset": 99, "ls_offset": 99},
        "-1": {"hi_offset": -1, "ls_offset": -1},
    }}}}
    found = high_watermarks_from_stats(json.dumps(stats), [("events", 0), ("events", 1)])
    assert found == {("events", 0): 110, ("events", 1): 80}
    assert high_watermarks_from_stats("not json", [("events", 0)]) == {}


def test_each_metrics_object_has_its_own_registry() -> None:
    """Two bridges in one process count separately (no global registry)."""
    a, b = Metrics(), Metrics()
    a.records_consumed.inc(5)
    assert a.value("wal_bridge_records_consumed_total") == 5
    assert b.value("wal_bridge_records_consumed_total") == 0


def fake_bridge(wal: Wal, **overrides: Any) -> Any:
    """The attributes of runtime.Bridge that the collector and readiness read."""
    consumer = SimpleNamespace(rebalanced=True, paused=False, pause_reason=None,
                               high_watermarks={("events", 0): 50},
                               positions=lambda: {("events", 0): 30})
    fields = {"wal": wal, "consumer": consumer, "sealer": SimpleNamespace(disk_full=False),
              "uploader": SimpleNamespace(stuck=set()), "stop": threading.Event(),
              "fatal": None, **overrides}
    return SimpleNamespace(**fields)


def test_gauges_are_computed_from_the_wal_at_scrape_time(tmp_path: Path) -> None:
    """Segments by state, WAL bytes, oldest age and lag reflect the WAL and the consumer."""
    wal = Wal.open(tmp_path, keys=KeyPolicy("raw", "dead-letter"), batch_size=10)
    offsets = list(range(15))
    wal.append(RecordColumns(["events"] * 15, [0] * 15, offsets, [0] * 15, [None] * 15,
                             [b"{}"] * 15, [None] * 15).to_arrow())
    metrics = Metrics()
    metrics.watch(fake_bridge(wal))

    assert metrics.value("wal_bridge_segments", {"state": "sealed"}) == 1
    assert metrics.value("wal_bridge_segments", {"state": "open"}) == 1
    assert metrics.value("wal_bridge_segments", {"state": "quarantined"}) == 0
    assert metrics.value("wal_bridge_wal_bytes") == sum(s.bytes for s in wal.snapshot())
    assert metrics.value("wal_bridge_oldest_unshipped_age_seconds") >= 0
    assert metrics.value("wal_bridge_consumer_lag",
                         {"topic": "events", "partition": "0"}) == 20
    assert metrics.value("wal_bridge_ready") == 1
    wal.close()


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"consumer": None}, "no partition assignment yet"),
    ({"uploader": SimpleNamespace(stuck={7})}, "1 segment(s) stuck"),
    ({"sealer": SimpleNamespace(disk_full=True)}, "disk full"),
])
def test_readiness_says_why_it_is_not_ready(tmp_path: Path, overrides: dict[str, Any],
                                            reason: str) -> None:
    """Not assigned, a stuck segment or a full disk each make /readyz fail, with the reason."""
    from wal_bridge.metrics import readiness

    wal = Wal.open(tmp_path, keys=KeyPolicy("raw", "dead-letter"))
    health = readiness(fake_bridge(wal, **overrides))
    wal.close()
    assert not health.ready
    assert any(reason in r for r in health.reasons), health.reasons


def test_the_server_answers_metrics_healthz_and_readyz() -> None:
    """/metrics in the text format, /healthz 200, /readyz 200 or 503 with the reasons."""
    metrics = Metrics()
    metrics.records_shipped.inc(42)
    state = {"health": Health(True)}
    server = MetricsServer(metrics, lambda: state["health"], 0, host="127.0.0.1").start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        status, body = get(f"{base}/metrics")
        assert status == 200
        assert "wal_bridge_records_shipped_total 42.0" in body
        assert get(f"{base}/healthz") == (200, "ok\n")
        assert get(f"{base}/readyz") == (200, "ready\n")
        state["health"] = Health(False, ["consumer paused: disk full"])
        assert get(f"{base}/readyz") == (503, "consumer paused: disk full\n")
        assert get(f"{base}/nope")[0] == 404
    finally:
        server.stop()


def test_a_port_in_use_is_a_configuration_error() -> None:
    """A second server on the same port fails with METRICS_PORT named."""
    first = MetricsServer(Metrics(), lambda: Health(True), 0, host="127.0.0.1")
    try:
        with pytest.raises(ConfigError, match="METRICS_PORT"):
            MetricsServer(Metrics(), lambda: Health(True), first.port, host="127.0.0.1")
    finally:
        first.stop()
