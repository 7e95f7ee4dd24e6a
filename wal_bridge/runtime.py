"""The one place that owns the threads, their stop events, signals and shutdown; and the
bridge's status, from which readiness and the gauges are computed.

Threads: the consumer runs on the main thread (librdkafka callbacks arrive there); the sealer
(CONVERT_WORKERS threads) and the uploader run loops around their synchronous ``step()``. On
SIGTERM or SIGINT the consumer stops taking records, the active segment is sealed, and the
sealer and uploader drain what they can within SHUTDOWN_GRACE; offsets are committed and the
process exits 0. A second signal exits at once: everything appended is already durable in the
WAL.

Status: :meth:`Bridge.status` takes a :class:`~wal_bridge.metrics.BridgeStatus` of what the
stages report; :func:`readiness` decides ``/readyz`` from it, and :mod:`wal_bridge.metrics`
renders it. The stages and this module import metrics, never the other way round.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from wal_bridge.config import Settings, describe
from wal_bridge.consumer import BridgeConsumer
from wal_bridge.errors import (
    ConfigError,
    DiskFullError,
    SinkError,
    WalBridgeError,
    WalFatalError,
)
from wal_bridge.failpoints import Failpoints
from wal_bridge.logs import RateLimited, get_logger
from wal_bridge.metrics import BridgeStatus, Health, Metrics, MetricsServer
from wal_bridge.sink import Sink, open_sink
from wal_bridge.wal.log import Wal
from wal_bridge.wal.segment import Segment

if TYPE_CHECKING:  # built by Bridge.pipeline(), off the way of the first poll
    from wal_bridge.refetch import Refetcher
    from wal_bridge.sealer import Sealer
    from wal_bridge.uploader import Uploader

log = get_logger("wal_bridge.runtime")

SECOND_SIGNAL_EXIT = 130
# Threads converting sealed segments, each its own segment: in a backlog the consumer fills
# one core, and conversion (Arrow's JSON reader and Parquet writer, without the GIL) the other.
CONVERT_WORKERS = min(2, os.cpu_count() or 1)


def readiness(status: BridgeStatus) -> Health:
    """Ready: partitions assigned, consuming, nothing stuck, not shutting down.

    Otherwise the reasons, in this order: a fatal error or shutting down; no assignment yet or
    paused (with why); a full disk; a destination refusing the table's schema; stuck segments
    (the first ten numbers).
    """
    reasons: list[str] = []
    if status.fatal is not None:
        reasons.append(f"fatal error: {status.fatal}")
    elif status.stopping:
        reasons.append("shutting down")
    if not status.rebalanced:
        reasons.append("no partition assignment yet")
    elif status.paused and status.pause_reason:
        reasons.append(f"consumer paused: {status.pause_reason}")
    if status.disk_full:
        reasons.append("disk full: cannot convert sealed segments")
    if status.schema_blocked:
        # The registry's own errors (an incompatible writer's schema, refused credentials)
        # say what they are; others are the destination refusing the table's schema.
        own = status.schema_blocked.startswith(("schema id", "schema registry"))
        reasons.append(status.schema_blocked if own
                       else f"cannot store the table's schema: {status.schema_blocked}")
    if status.stuck:
        reasons.append(f"{len(status.stuck)} segment(s) stuck in the outbox: "
                       f"{list(status.stuck[:10])} (see `wal_bridge inspect`)")
    return Health(not reasons, reasons)


def segments_by_state(segments: Iterable[Segment], quarantined: int) -> dict[str, int]:
    """Counts by the states the ``wal_bridge_segments`` gauge shows: ``open``, ``sealed``,
    ``converted`` (a sealed segment with its Parquet file in the outbox), ``quarantined``."""
    counts = dict.fromkeys(("open", "sealed", "converted"), 0)
    for segment in segments:
        state = "converted" if segment.converted else segment.state
        counts[state] = counts.get(state, 0) + 1
    counts["quarantined"] = quarantined
    return counts


def oldest_age_s(segments: Iterable[Segment], now_s: float) -> float:
    """Seconds since the oldest segment that holds records was created; 0 when none does."""
    oldest = min((s.created_ms for s in segments if s.records), default=None)
    return max(0.0, now_s - oldest / 1000) if oldest is not None else 0.0


def process_age_ms() -> float | None:
    """Milliseconds since this process started (exec included), from Linux's ``/proc``
    (``starttime``, field 22 of ``/proc/self/stat``, in clock ticks since boot, against
    ``/proc/uptime``; proc(5)); None where there is no such file. Resolution: one clock tick
    (10 ms)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            # The command name (field 2) may hold spaces: fields count from after its ")".
            started_ticks = int(stat.read().rpartition(")")[2].split()[19])
            up_s = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round((up_s - started_ticks / os.sysconf("SC_CLK_TCK")) * 1000, 1)


@dataclass
class StageLoop:
    """Run ``step`` until ``halt`` is set; sleep ``idle`` seconds when it found nothing to do."""

    name: str
    step: Callable[[], bool]
    halt: threading.Event
    on_fatal: Callable[[BaseException], None]
    idle: float = 0.2
    thread: threading.Thread | None = field(default=None, init=False)
    _limited: RateLimited = field(default_factory=RateLimited, init=False)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.halt.is_set():
            try:
                busy = self.step()
            except (WalFatalError, ConfigError) as exc:  # no retry mends these
                self.on_fatal(exc)
                return
            except Exception as exc:  # a stage must outlive one bad step
                if (suppressed := self._limited.allow(type(exc).__name__)) is not None:
                    log.exception("stage_step_failed", stage=self.name, error=str(exc),
                                  suppressed=suppressed)
                self.halt.wait(1.0)
                continue
            if not busy:
                self.halt.wait(self.idle)

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)


@dataclass(frozen=True)
class Pipeline:
    """The stages after the WAL: the sealer (conversion), the uploader and the re-fetcher."""

    sealer: Sealer
    uploader: Uploader
    refetcher: Refetcher

    @classmethod
    def build(cls, bridge: Bridge) -> Pipeline:
        """The stages of ``bridge``, over its WAL, sink, metrics and halt event."""
        from wal_bridge.conversion import Converter
        from wal_bridge.refetch import Refetcher
        from wal_bridge.schema import SharedSchema
        from wal_bridge.sealer import Sealer
        from wal_bridge.uploader import Uploader

        settings = bridge.settings
        decoding = None
        if settings.uses_registry:  # import the registry's libraries only then
            from wal_bridge.conversion.decode import Decoding

            decoding = Decoding.open(settings)
        converter = Converter.open(
            settings.max_record_bytes, settings.wal_dir, settings.schema_file,
            SharedSchema(bridge.sink, settings.require_destination().schema_key,
                         settings.wal_dir), decoding)
        return cls(Sealer(bridge.wal, converter, bridge.metrics),
                   Uploader(bridge.wal, bridge.sink, bridge.halt, metrics=bridge.metrics),
                   Refetcher(settings, bridge.wal, bridge.metrics))


class Bridge:
    """The running service: WAL, consumer, sealer and uploader wired together."""

    def __init__(self, settings: Settings, sink: Sink | None = None) -> None:
        self.settings = settings
        destination = settings.require_destination()
        self.sink = sink or open_sink(settings)
        self.stop = threading.Event()  # set by a signal: stop consuming, drain, exit
        self.halt = threading.Event()  # set when draining is over: stages stop now
        self.fatal: BaseException | None = None
        self._signals = 0
        self.wal = Wal.open(
            settings.wal_dir,
            keys=destination,
            batch_size=settings.batch_size,
            batch_timeout=settings.batch_timeout,
            instance_id=settings.instance_id,
            failpoints=Failpoints(settings.failpoint),
        )
        self.metrics = Metrics()  # a registry per bridge: tests run several in one process
        self._pipeline: Pipeline | None = None
        self._pipeline_lock = threading.Lock()
        self.metrics.count_salvage(self.wal.recovery)
        self.consumer: BridgeConsumer | None = None
        self.metrics.watch(self.status, readiness)

    def pipeline(self) -> Pipeline:
        """The sealer, uploader and re-fetcher, built on first use (thread-safe). Building
        imports conversion, Parquet and the registry's libraries (a tenth of a second and
        more), which the consumer's first poll does not need: :meth:`run` builds them on the
        thread that starts the stages. Raises ConfigError for a bad SCHEMA_FILE or pin."""
        with self._pipeline_lock:
            if self._pipeline is None:
                self._pipeline = Pipeline.build(self)
            return self._pipeline

    @property
    def sealer(self) -> Sealer:
        return self.pipeline().sealer

    @property
    def uploader(self) -> Uploader:
        return self.pipeline().uploader

    @property
    def refetcher(self) -> Refetcher:
        return self.pipeline().refetcher

    def _conversion_hold(self) -> str | None:
        """Why the consumer should pause for conversion (its ``hold``, asked after every
        step): the sealer's :meth:`~wal_bridge.sealer.Sealer.registry_hold`, a schema
        registry that does not answer; None while the stages are not built yet. The consumer
        is handed this callable, so it knows nothing of the sealer."""
        built = self._pipeline
        return built.sealer.registry_hold() if built is not None else None

    def status(self) -> BridgeStatus:
        """What the stages report now (safe from any thread: each read is of a copy; stages
        not built yet report nothing stuck, blocked or full)."""
        built = self._pipeline
        segments = self.wal.snapshot()
        consumer = self.consumer
        quarantine = self.wal.quarantine_status()
        jobs = self.wal.refetch_jobs()
        return BridgeStatus(
            segments=segments_by_state(segments, quarantine.segments),
            stuck=tuple(sorted(built.uploader.stuck.copy())) if built else (),
            wal_bytes=sum(s.bytes + s.parquet_bytes for s in segments),
            oldest_unshipped_age_s=oldest_age_s(segments, time.time()),
            rebalanced=consumer is not None and consumer.rebalanced,
            partitions_assigned=len(consumer.positions()) if consumer is not None else 0,
            paused=consumer is not None and consumer.paused,
            pause_reason=consumer.pause_reason if consumer is not None else None,
            lag=consumer.lag() if consumer is not None else {},
            disk_full=built is not None and built.sealer.disk_full,
            schema_blocked=built.sealer.schema_blocked if built else None,
            stopping=self.stop.is_set(),
            refetch_pending_ranges=sum(len(r) for job in jobs for r in job.need.values()),
            refetch_pending_records=sum(job.records for job in jobs),
            unrecoverable_records=quarantine.lost_records,
            fatal=str(self.fatal) if self.fatal is not None else None,
        )

    # ----------------------------------------------------------------------------- signals

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            os.write(2, b"second signal: exiting now; the WAL keeps what was not shipped\n")
            os._exit(SECOND_SIGNAL_EXIT)
        log.info("shutdown_requested", signal=signal.Signals(signum).name,
                 grace_s=self.settings.shutdown_grace)
        self.stop.set()

    def _on_fatal(self, exc: BaseException) -> None:
        log.error("fatal_error", error=str(exc))
        self.fatal = exc
        self.stop.set()

    # ----------------------------------------------------------------------------- running

    def run(self) -> int:
        recovery = self.wal.recovery
        log.info(
            "bridge_starting", instance=self.wal.instance_id, destination=str(
                self.settings.destination), settings=describe(self.settings),
            recovered_sealed=recovery.sealed, truncated=recovery.truncated,
            quarantined=[seq for seq, _ in recovery.quarantined],
            salvaged=[(d["segment"], d["decision"]) for d in recovery.salvaged],
            refetch=[(j.seq, j.of_segment, j.records) for j in self.wal.refetch_jobs()],
            scanned_bytes=recovery.scanned_bytes,
            recovery_ms=round(recovery.duration_s * 1000, 1),
        )
        server = self._serve_metrics()
        stages: list[StageLoop] = []
        starter = threading.Thread(target=self._start_stages, args=(stages,), name="start",
                                   daemon=True)
        starter.start()
        consumer = self.consumer = BridgeConsumer(self.settings, self.wal, self.metrics,
                                                  hold=self._conversion_hold)
        try:
            consumer.subscribe()
            log.info("consuming_started", startup_ms=process_age_ms())
            while not self.stop.is_set():
                consumer.step()
            if self.fatal is None:
                self._drain(consumer)
        except WalFatalError as exc:
            self._on_fatal(exc)
        finally:
            self.halt.set()
            starter.join(10.0)
            for stage in list(stages):
                stage.join(10.0)
            if self.fatal is None:
                consumer.commit_all()
            consumer.close()
            self.wal.close()
            if server is not None:
                server.stop()
        if self.fatal is not None:
            if isinstance(self.fatal, WalBridgeError):
                raise self.fatal
            raise WalBridgeError(str(self.fatal)) from self.fatal
        log.info("bridge_stopped", left_in_wal=len(self.wal.snapshot()))
        return 0

    def _start_stages(self, stages: list[StageLoop]) -> None:
        """Check the destination, agree on the table's schema, then start the sealer, uploader
        and re-fetch loops (appended to ``stages``): on a thread of its own, so that the
        consumer's first poll waits for none of it (the storage client's imports alone take a
        third of a second). Records consumed meanwhile wait in the WAL, durable. A permanent
        failure (a missing bucket, a SCHEMA_FILE that differs from the destination's) stops
        the bridge as before, with the error's exit code; nothing is shipped before the
        checks pass."""
        try:
            self.pipeline()
            self._check_sink()
            self._agree_on_schema()
        except Exception as exc:  # noqa: BLE001 - any failure here is fatal: never stageless
            self._on_fatal(exc)
            return
        if self.halt.is_set():
            return
        for stage in (
            *(StageLoop(f"sealer-{n}", self.sealer.step, self.halt, self._on_fatal)
              for n in range(1, CONVERT_WORKERS + 1)),
            StageLoop("uploader", self.uploader.step, self.halt, self._on_fatal),
            StageLoop("refetch", self.refetcher.step, self.halt, self._on_fatal, idle=1.0),
        ):
            stages.append(stage)
            stage.start()
        log.info("pipeline_started", stages=[stage.name for stage in stages])

    def _serve_metrics(self) -> MetricsServer | None:
        """/metrics, /healthz and /readyz on METRICS_PORT (0: off)."""
        if not self.settings.metrics_port:
            return None
        return MetricsServer(self.metrics, lambda: readiness(self.status()),
                             self.settings.metrics_port).start()

    def _check_sink(self) -> None:
        try:
            self.sink.check()
        except SinkError as exc:
            if not exc.transient:
                raise
            log.warning("destination_unreachable_at_start", error=str(exc),
                        note="consuming into the WAL; uploads retry until it is back")

    def _agree_on_schema(self) -> None:
        """A SCHEMA_FILE or pinned schema that differs from the destination's stops the start
        (ConfigError, exit 2); an unreachable destination defers the check to the first
        conversion, which retries it."""
        try:
            self.sealer.converter.store.agreed()
        except SinkError as exc:
            if not exc.transient:
                raise
            log.warning("schema_check_deferred", error=str(exc))

    def _drain(self, consumer: BridgeConsumer) -> None:
        """Seal, convert and ship within the grace period; keep serving Kafka callbacks."""
        deadline = time.monotonic() + self.settings.shutdown_grace
        consumer.pause_all()
        try:
            self.wal.seal()
        except DiskFullError as exc:  # the open segment is sealed at the next start instead
            log.warning("seal_at_shutdown_failed", error=str(exc))
        while time.monotonic() < deadline and self.fatal is None:
            if not self.wal.to_convert() and not self.wal.to_ship():
                break
            if self.uploader.stuck and len(self.wal.to_ship()) == len(self.uploader.stuck):
                break  # only stuck segments left: they wait for the next start
            consumer.poll_callbacks(0.1)
            if self.settings.commit_policy == "upload":
                consumer.commit_shipped()
        left = self.wal.snapshot()
        log.info("drain_finished", segments_left=len(left),
                 records_left=sum(s.records for s in left))
