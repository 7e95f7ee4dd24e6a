"""Metrics: a registry per bridge, gauges rendered from a status snapshot, and the server."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from wal_bridge.errors import ConfigError
from wal_bridge.metrics import BridgeStatus, Health, Metrics, MetricsServer


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_each_metrics_object_has_its_own_registry() -> None:
    """Two bridges in one process count separately (no global registry)."""
    a, b = Metrics(), Metrics()
    a.records_consumed.inc(5)
    assert a.value("wal_bridge_records_consumed_total") == 5
    assert b.value("wal_bridge_records_consumed_total") == 0


def test_gauges_render_the_status_taken_at_scrape_time() -> None:
    """Segments by state, stuck, WAL bytes, oldest age, lag, assignment, pause and readiness
    show what the status callable returns at each scrape, not at registration."""
    status = {"now": BridgeStatus(
        segments={"open": 1, "sealed": 2, "converted": 3, "quarantined": 4}, stuck=(7, 9),
        wal_bytes=1234, oldest_unshipped_age_s=5.5, rebalanced=True, partitions_assigned=3,
        paused=True, pause_reason="disk full", lag={("events", 0): 20, ("events", 2): 0})}
    metrics = Metrics()
    metrics.watch(lambda: status["now"], lambda s: Health(not s.stuck))

    for state, count in {"open": 1, "sealed": 2, "converted": 3, "quarantined": 4}.items():
        assert metrics.value("wal_bridge_segments", {"state": state}) == count
    assert metrics.value("wal_bridge_segments_stuck") == 2
    assert metrics.value("wal_bridge_wal_bytes") == 1234
    assert metrics.value("wal_bridge_oldest_unshipped_age_seconds") == 5.5
    assert metrics.value("wal_bridge_consumer_lag", {"topic": "events", "partition": "0"}) == 20
    assert metrics.value("wal_bridge_consumer_lag", {"topic": "events", "partition": "2"}) == 0
    assert metrics.value("wal_bridge_partitions_assigned") == 3
    assert metrics.value("wal_bridge_consumer_paused") == 1
    assert metrics.value("wal_bridge_ready") == 0

    status["now"] = BridgeStatus()
    assert metrics.value("wal_bridge_segments", {"state": "quarantined"}) == 0
    assert metrics.value("wal_bridge_consumer_paused") == 0
    assert metrics.value("wal_bridge_ready") == 1
    assert b"wal_bridge_consumer_lag{" not in metrics.render()


def test_salvage_shows_in_counters_and_gauges() -> None:
    """Recovery's salvage decisions and bytes are counted; pending re-fetches and offsets lost
    from Kafka are gauges of the status."""
    from wal_bridge.wal.recovery import RecoveryReport

    metrics = Metrics()
    metrics.watch(lambda: BridgeStatus(refetch_pending_ranges=2, refetch_pending_records=15,
                                       unrecoverable_records=3), lambda s: Health(True))
    metrics.count_salvage(RecoveryReport(
        salvaged=[{"decision": "rewrite"}, {"decision": "rewrite"},
                  {"decision": "cut_after_seal"}],
        quarantined=[(4, "segment header: bad segment magic")],
        salvaged_bytes=4000, damaged_bytes=96))

    assert metrics.value("wal_bridge_salvage_decisions_total", {"decision": "rewrite"}) == 2
    assert metrics.value("wal_bridge_salvage_decisions_total",
                         {"decision": "cut_after_seal"}) == 1
    assert metrics.value("wal_bridge_salvage_decisions_total", {"decision": "quarantine"}) == 1
    assert metrics.value("wal_bridge_salvaged_bytes_total") == 4000
    assert metrics.value("wal_bridge_damaged_bytes_total") == 96
    assert metrics.value("wal_bridge_refetch_pending_ranges") == 2
    assert metrics.value("wal_bridge_refetch_pending_records") == 15
    assert metrics.value("wal_bridge_unrecoverable_records") == 3


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
