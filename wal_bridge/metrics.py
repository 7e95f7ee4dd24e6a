"""Metrics in the Prometheus text format, and the one small HTTP server of the bridge.

Every :class:`~wal_bridge.runtime.Bridge` has its own :class:`Metrics` with its own
``CollectorRegistry`` (never the global one), so a test can run several bridges in one process.
Counters and the histogram are incremented by the stages where things happen; gauges (segments
by state, WAL bytes, age of the oldest unshipped record, consumer lag, readiness) are computed
at scrape time from the state the stages already keep, so they can never drift from it.

The server (``METRICS_PORT``; 0 turns it off) answers three paths:

- ``/metrics``: the registry in the Prometheus text format;
- ``/healthz``: 200 while the process is alive (a liveness probe);
- ``/readyz``: 200 when the bridge is assigned partitions and moving data; 503 with the reasons
  while it is not yet assigned, paused (full disk, WAL over WAL_MAX_BYTES), holding stuck
  segments, or shutting down.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from wal_bridge.errors import ConfigError
from wal_bridge.logs import get_logger

if TYPE_CHECKING:
    from wal_bridge.runtime import Bridge

log = get_logger("wal_bridge.metrics")

TP = tuple[str, int]
SEGMENT_STATES = ("open", "sealed", "converted")
# Group commits take from well under a millisecond (page cache, fast NVMe) to seconds (a
# saturated network disk): buckets cover both ends.
FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                 10.0)


class Metrics:
    """The bridge's counters and histogram, registered in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_consumed = Counter(
            "wal_bridge_records_consumed", "Records polled from Kafka.", registry=r)
        self.records_appended = Counter(
            "wal_bridge_records_appended", "Records appended to the WAL and fsynced.", registry=r)
        self.records_shipped = Counter(
            "wal_bridge_records_shipped",
            "Records whose Parquet object is confirmed in the destination (dead letters "
            "included).", registry=r)
        self.segments_shipped = Counter(
            "wal_bridge_segments_shipped", "Segments shipped and truncated from the WAL.",
            registry=r)
        self.dead_letters = Counter(
            "wal_bridge_dead_letters",
            "Records written to the dead-letter location (not JSON objects, too large, ...).",
            registry=r)
        self.upload_retries = Counter(
            "wal_bridge_upload_retries",
            "Transient upload failures that were retried after a backoff.", registry=r)
        self.upload_errors = Counter(
            "wal_bridge_upload_errors",
            "Permanent upload failures: the segment was marked stuck and is retried later.",
            registry=r)
        self.wal_fsync_seconds = Histogram(
            "wal_bridge_wal_fsync_seconds",
            "Group commit latency: seconds to write one polled batch to the WAL and fsync it.",
            buckets=FSYNC_BUCKETS, registry=r)

    def watch(self, bridge: Bridge) -> None:
        """Add the gauges computed from ``bridge``'s state at each scrape."""
        self.registry.register(_BridgeCollector(bridge))

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of one sample (0 when it has none yet), e.g. for progress lines."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


def high_watermarks_from_stats(raw: str, assigned: Iterable[TP]) -> dict[TP, int]:
    """Per assigned partition, the end of what a consumer can read, from librdkafka statistics.

    That end is the last stable offset (``ls_offset``: the consumer reads committed
    transactions only), or the high watermark when the broker did not report one.
    """
    wanted = set(assigned)
    try:
        stats = json.loads(raw)
    except ValueError:
        return {}
    result: dict[TP, int] = {}
    for topic, info in (stats.get("topics") or {}).items():
        for key, part in (info.get("partitions") or {}).items():
            partition = int(key)
            if partition < 0 or (topic, partition) not in wanted:
                continue  # -1 is librdkafka's internal "unassigned" partition
            end = int(part.get("ls_offset", -1))
            if end < 0:
                end = int(part.get("hi_offset", -1))
            if end >= 0:
                result[(topic, partition)] = end
    return result


@dataclass
class Health:
    """Readiness and, when not ready, why."""

    ready: bool
    reasons: list[str] = field(default_factory=list)


def readiness(bridge: Bridge) -> Health:
    """Ready: partitions assigned, consuming, nothing stuck, not shutting down."""
    reasons: list[str] = []
    if bridge.fatal is not None:
        reasons.append(f"fatal error: {bridge.fatal}")
    elif bridge.stop.is_set():
        reasons.append("shutting down")
    consumer = bridge.consumer
    if consumer is None or not consumer.rebalanced:
        reasons.append("no partition assignment yet")
    elif consumer.paused and consumer.pause_reason:
        reasons.append(f"consumer paused: {consumer.pause_reason}")
    if bridge.sealer.disk_full:
        reasons.append("disk full: cannot convert sealed segments")
    stuck = sorted(bridge.uploader.stuck)
    if stuck:
        reasons.append(f"{len(stuck)} segment(s) stuck in the outbox: {stuck[:10]} "
                       "(see `wal_bridge inspect`)")
    return Health(not reasons, reasons)


class _BridgeCollector:
    """Gauges read from the bridge's own state when Prometheus scrapes."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def describe(self) -> list[Any]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        bridge = self.bridge
        segments = bridge.wal.snapshot()
        counts = dict.fromkeys(SEGMENT_STATES, 0)
        for segment in segments:
            state = "converted" if segment.converted else segment.state
            counts[state] = counts.get(state, 0) + 1
        by_state = GaugeMetricFamily(
            "wal_bridge_segments", "Segments in the WAL by state (quarantined: set aside with "
            "damage, see `wal_bridge inspect`).", labels=["state"])
        for state, count in counts.items():
            by_state.add_metric([state], count)
        quarantine = bridge.wal.quarantine_dir
        quarantined = sum(1 for _ in quarantine.glob("*.reason.json")) if quarantine.is_dir() else 0
        by_state.add_metric(["quarantined"], quarantined)
        yield by_state
        yield GaugeMetricFamily("wal_bridge_segments_stuck",
                                "Converted segments whose upload failed permanently (retried "
                                "every minute).", value=len(bridge.uploader.stuck))
        yield GaugeMetricFamily("wal_bridge_wal_bytes",
                                "Bytes of segments and Parquet files not yet shipped.",
                                value=sum(s.bytes + s.parquet_bytes for s in segments))
        oldest = min((s.created_ms for s in segments if s.records), default=None)
        age = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0
        yield GaugeMetricFamily("wal_bridge_oldest_unshipped_age_seconds",
                                "Age of the oldest record held in the WAL and not yet shipped "
                                "(0 when the WAL is empty).", value=age)
        yield from self._consumer_metrics()
        health = readiness(bridge)
        yield GaugeMetricFamily("wal_bridge_ready", "1 when /readyz answers 200.",
                                value=1 if health.ready else 0)

    def _consumer_metrics(self) -> Iterator[Any]:
        consumer = self.bridge.consumer
        lag = GaugeMetricFamily(
            "wal_bridge_consumer_lag", "Records in Kafka past what the WAL holds durably, per "
            "assigned partition (from the client's statistics, refreshed every few seconds).",
            labels=["topic", "partition"])
        assigned = GaugeMetricFamily("wal_bridge_partitions_assigned",
                                     "Partitions assigned to this instance.",
                                     value=len(consumer.positions()) if consumer else 0)
        paused = GaugeMetricFamily("wal_bridge_consumer_paused",
                                   "1 while consuming is paused (full disk or WAL_MAX_BYTES).",
                                   value=1 if consumer is not None and consumer.paused else 0)
        if consumer is not None:
            positions = consumer.positions()
            for (topic, partition), end in sorted(consumer.high_watermarks.items()):
                if (topic, partition) in positions:
                    lag.add_metric([topic, str(partition)],
                                   max(0, end - positions[(topic, partition)]))
        yield lag
        yield assigned
        yield paused


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: Metrics
    health: Callable[[], Health]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, self.server.metrics.render(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            health = self.server.health()
            body = "ready\n" if health.ready else "".join(f"{r}\n" for r in health.reasons)
            self._send(200 if health.ready else 503, body.encode(), "text/plain; charset=utf-8")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n",
                       "text/plain; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes arrive every few seconds: no log line for each."""


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on one daemon thread."""

    def __init__(self, metrics: Metrics, health: Callable[[], Health], port: int,
                 host: str = "0.0.0.0") -> None:  # noqa: S104 - probes and scrapes come from outside the pod
        try:
            self._httpd = _Server((host, port), _Handler)
        except OSError as exc:
            raise ConfigError(f"METRICS_PORT={port}: cannot listen on {host}:{port}: "
                              f"{exc.strerror or exc}") from exc
        self._httpd.metrics = metrics
        self._httpd.health = health
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics",
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics_listening", port=self.port, paths=["/metrics", "/healthz", "/readyz"])
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()  # waits for serve_forever: only once it runs
            self._thread.join(5.0)
        self._httpd.server_close()
