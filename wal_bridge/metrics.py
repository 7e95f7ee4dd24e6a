"""Metrics in the Prometheus text format, and the one small HTTP server of the bridge.

This module imports no stage: the stages (consumer, sealer, uploader) increment its counters,
and the runtime hands it a :class:`BridgeStatus` to render. Arrows point from the stages and
the runtime to here, never back.

Every bridge has its own :class:`Metrics` with its own ``CollectorRegistry`` (never the global
one), so a test can run several bridges in one process. Counters and the histogram are
incremented where things happen; gauges (segments by state, WAL bytes, age of the oldest
unshipped record, consumer lag, readiness) are rendered at scrape time from a status snapshot
that the runtime takes of the state the stages already keep, so they can never drift from it.

The server (``METRICS_PORT``; 0 turns it off) answers three paths:

- ``/metrics``: the registry in the Prometheus text format;
- ``/healthz``: 200 while the process is alive (a liveness probe);
- ``/readyz``: 200 when the bridge is assigned partitions and moving data; 503 with the reasons
  while it is not (the runtime decides, see ``wal_bridge.runtime.readiness``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from wal_bridge.errors import ConfigError
from wal_bridge.logs import get_logger

log = get_logger("wal_bridge.metrics")

TP = tuple[str, int]
SEGMENT_STATES = ("open", "sealed", "converted", "quarantined")
# Group commits take from well under a millisecond (page cache, fast NVMe) to seconds (a
# saturated network disk): buckets cover both ends.
FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                 10.0)


@dataclass(frozen=True)
class Health:
    """Readiness and, when not ready, why (one line per reason, as ``/readyz`` shows them)."""

    ready: bool
    reasons: Sequence[str] = ()


@dataclass(frozen=True)
class BridgeStatus:
    """What the stages report at one moment: the input of readiness and of the gauges.

    Taken by the runtime at each scrape and probe; plain values only, so that this module
    needs no stage to render it.
    """

    segments: Mapping[str, int] = field(default_factory=dict)
    """Segments in the WAL by state: ``open``, ``sealed``, ``converted``, ``quarantined``."""
    stuck: tuple[int, ...] = ()
    """Converted segments whose upload failed permanently, by number, ascending."""
    wal_bytes: int = 0
    """Bytes of segments and Parquet files not yet shipped."""
    oldest_unshipped_age_s: float = 0.0
    """Age of the oldest record held and not yet shipped; 0 when the WAL is empty."""
    rebalanced: bool = False
    """The consumer received its first partition assignment."""
    partitions_assigned: int = 0
    paused: bool = False
    pause_reason: str | None = None
    """Why consuming is paused (full disk, WAL over WAL_MAX_BYTES); None when not paused, or
    paused for the shutdown drain."""
    lag: Mapping[TP, int] = field(default_factory=dict)
    """Per assigned partition, records in Kafka past what the WAL holds."""
    disk_full: bool = False
    """The sealer could not write Parquet or seal for lack of space."""
    schema_blocked: str | None = None
    """Why the destination refuses to store the table's schema (so nothing converts); None
    when it did, or when the failure is transient."""
    stopping: bool = False
    refetch_pending_ranges: int = 0
    """Offset ranges that damaged WAL frames held, waiting to be read again from Kafka."""
    refetch_pending_records: int = 0
    """Offsets those ranges span (an upper bound: compaction holes are not records)."""
    unrecoverable_records: int = 0
    """Offsets damaged in the WAL and gone from Kafka, held in quarantine for the operator."""
    fatal: str | None = None
    """The error that stops the bridge, once there is one."""


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
        self.salvage_decisions = Counter(
            "wal_bridge_salvage_decisions",
            "Decisions on damaged WAL segments at recovery, by decision (rewrite: verified "
            "frames kept, the rest re-fetched; cut_after_seal; ship_converted; reconvert; "
            "quarantine).", labelnames=["decision"], registry=r)
        self.salvaged_bytes = Counter(
            "wal_bridge_salvaged_bytes",
            "Bytes of verified frames kept from damaged WAL segments.", registry=r)
        self.damaged_bytes = Counter(
            "wal_bridge_damaged_bytes",
            "Bytes of WAL segments that did not verify, or followed a seal frame, set aside.",
            registry=r)
        self.refetch_ranges = Counter(
            "wal_bridge_refetch_ranges",
            "Offset ranges of damaged WAL frames read again from Kafka.", registry=r)
        self.refetch_records = Counter(
            "wal_bridge_refetch_records",
            "Records read again from Kafka in place of damaged WAL frames.", registry=r)
        self.refetch_lost_records = Counter(
            "wal_bridge_refetch_lost_records",
            "Offsets of damaged WAL frames that Kafka no longer holds: data loss, kept in "
            "quarantine for the operator.", registry=r)
        self.wal_fsync_seconds = Histogram(
            "wal_bridge_wal_fsync_seconds",
            "Group commit latency: seconds to write one polled batch to the WAL and fsync it.",
            buckets=FSYNC_BUCKETS, registry=r)

    def count_salvage(self, report: Any) -> None:
        """Count the decisions on damaged segments in a recovery report (any object with
        ``salvaged`` (dicts with a ``decision``), ``quarantined``, ``salvaged_bytes`` and
        ``damaged_bytes``, as :class:`wal_bridge.wal.recovery.RecoveryReport` has)."""
        for decision in report.salvaged:
            self.salvage_decisions.labels(decision["decision"]).inc()
        for _ in report.quarantined:
            self.salvage_decisions.labels("quarantine").inc()
        self.salvaged_bytes.inc(report.salvaged_bytes)
        self.damaged_bytes.inc(report.damaged_bytes)

    def watch(self, status: Callable[[], BridgeStatus],
              readiness: Callable[[BridgeStatus], Health]) -> None:
        """Add the gauges rendered, at each scrape, from a fresh ``status()``; the
        ``wal_bridge_ready`` gauge is 1 when ``readiness`` of it says ready."""
        self.registry.register(_StatusCollector(status, readiness))

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The current value of one sample (0 when it has none yet), e.g. for progress lines."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> bytes:
        """The registry in the Prometheus text format (version 0.0.4)."""
        return bytes(generate_latest(self.registry))


class _StatusCollector:
    """Gauges rendered from a status snapshot taken when Prometheus scrapes."""

    def __init__(self, status: Callable[[], BridgeStatus],
                 readiness: Callable[[BridgeStatus], Health]) -> None:
        self.status = status
        self.readiness = readiness

    def describe(self) -> list[Any]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        status = self.status()
        by_state = GaugeMetricFamily(
            "wal_bridge_segments", "Segments in the WAL by state (quarantined: set aside with "
            "damage, see `wal_bridge inspect`).", labels=["state"])
        for state in SEGMENT_STATES:
            by_state.add_metric([state], status.segments.get(state, 0))
        yield by_state
        yield GaugeMetricFamily("wal_bridge_segments_stuck",
                                "Converted segments whose upload failed permanently (retried "
                                "every minute).", value=len(status.stuck))
        yield GaugeMetricFamily("wal_bridge_wal_bytes",
                                "Bytes of segments and Parquet files not yet shipped.",
                                value=status.wal_bytes)
        yield GaugeMetricFamily("wal_bridge_oldest_unshipped_age_seconds",
                                "Age of the oldest record held in the WAL and not yet shipped "
                                "(0 when the WAL is empty).", value=status.oldest_unshipped_age_s)
        lag = GaugeMetricFamily(
            "wal_bridge_consumer_lag", "Records in Kafka past what the WAL holds durably, per "
            "assigned partition (from the client's statistics, refreshed every few seconds).",
            labels=["topic", "partition"])
        for (topic, partition), behind in sorted(status.lag.items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag
        yield GaugeMetricFamily("wal_bridge_partitions_assigned",
                                "Partitions assigned to this instance.",
                                value=status.partitions_assigned)
        yield GaugeMetricFamily("wal_bridge_consumer_paused",
                                "1 while consuming is paused (full disk or WAL_MAX_BYTES).",
                                value=1 if status.paused else 0)
        yield GaugeMetricFamily("wal_bridge_refetch_pending_ranges",
                                "Offset ranges of damaged WAL frames waiting to be read again "
                                "from Kafka.", value=status.refetch_pending_ranges)
        yield GaugeMetricFamily("wal_bridge_refetch_pending_records",
                                "Offsets those ranges span.", value=status.refetch_pending_records)
        yield GaugeMetricFamily("wal_bridge_unrecoverable_records",
                                "Offsets damaged in the WAL and gone from Kafka, held in "
                                "quarantine (see `wal_bridge inspect`).",
                                value=status.unrecoverable_records)
        yield GaugeMetricFamily("wal_bridge_ready", "1 when /readyz answers 200.",
                                value=1 if self.readiness(status).ready else 0)


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
    """``/metrics``, ``/healthz`` and ``/readyz`` on one daemon thread.

    ``health`` is called at each ``/readyz`` request. Port 0 picks a free port (see
    :attr:`port`). A port that cannot be bound raises :class:`ConfigError` naming
    METRICS_PORT.
    """

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
        """The port listened on (the one picked when 0 was asked)."""
        return int(self._httpd.server_address[1])

    def start(self) -> MetricsServer:
        """Serve on the daemon thread; return self."""
        self._thread.start()
        log.info("metrics_listening", port=self.port, paths=["/metrics", "/healthz", "/readyz"])
        return self

    def stop(self) -> None:
        """Stop serving (waiting up to 5 s) and close the socket; safe before :meth:`start`."""
        if self._thread.is_alive():
            self._httpd.shutdown()  # waits for serve_forever: only once it runs
            self._thread.join(5.0)
        self._httpd.server_close()
