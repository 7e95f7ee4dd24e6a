"""``wal_bridge demo``: the whole pipeline on one machine, in a minute, with nothing installed.

1. A Kafka-protocol broker: librdkafka's mock cluster, embedded in this process (the producer
   that creates it keeps it alive), or a real broker with ``--bootstrap-servers``.
2. Realistic events from ``wal_bridge produce``'s generator, a few of them malformed.
3. The real service: :class:`wal_bridge.runtime.Bridge` with settings built by
   :func:`wal_bridge.config.load_settings`, exactly what ``wal_bridge run`` does (WAL, sealer,
   uploader), into a local directory (or ``--destination gs://...``).
4. Once every produced offset is shipped, a clean stop (the same drain as SIGTERM), then SQL
   over the landed Parquet files and an audit of their footers.

The embedded broker cannot create topics through the admin API: the topic appears, with four
partitions, when the first record is produced.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from wal_bridge.commands.common import (
    KAFKA_SECURITY,
    STORAGE,
    Progress,
    kafka_offsets,
    settings_options,
    specs,
)
from wal_bridge.config import SPECS, Settings, load_settings
from wal_bridge.errors import KafkaUnavailable, WalBridgeError
from wal_bridge.logs import configure

EVENTS_SQL = """SELECT event_type,
       count(*)                  AS events,
       count(DISTINCT user_id)   AS users,
       round(sum(amount), 2)     AS amount,
       min(ts)                   AS first_ts
FROM events
GROUP BY event_type
ORDER BY events DESC"""
SAMPLE_SQL = "SELECT * FROM events LIMIT 5"
DEAD_SQL = """SELECT split_part(_reason, ':', 1) AS reason, count(*) AS records
FROM dead_letters
GROUP BY 1
ORDER BY records DESC"""
DEMO_MAX_RECORD_BYTES = 64 * 1024  # oversized demo records stay well under any broker's limit


class DemoError(WalBridgeError):
    """The demo did not finish: the message says where it stopped."""


def _embedded_broker(conf: dict[str, Any]) -> tuple[Any, str]:
    """A producer that hosts librdkafka's mock cluster, and the cluster's address."""
    from confluent_kafka import Producer

    # log_level 4: without the notice that the mock replaces bootstrap.servers.
    producer = Producer({**conf, "test.mock.num.brokers": 1, "log_level": 4})
    metadata = producer.list_topics(timeout=10)
    broker = metadata.brokers[min(metadata.brokers)]
    return producer, f"{broker.host}:{broker.port}"


def _targets(settings: Settings, topic: str, delivered: dict[int, int]
             ) -> dict[tuple[str, int], int]:
    """Per partition, the offset the WAL must have shipped up to: the topic's end now."""
    try:
        offsets = kafka_offsets(settings, [topic], None)
    except KafkaUnavailable:
        offsets = {}
    ends = {tp: o.latest for tp, o in offsets.items() if o.latest > o.earliest}
    for partition, end in delivered.items():
        ends[(topic, partition)] = max(ends.get((topic, partition), 0), end)
    return ends


class Monitor(threading.Thread):
    """Shows progress and stops the bridge once everything produced has been shipped."""

    def __init__(self, bridge: Any, targets: dict[tuple[str, int], int], expected: int,
                 timeout: float) -> None:
        super().__init__(name="demo-monitor", daemon=True)
        self.bridge = bridge
        self.targets = targets
        self.expected = expected
        self.deadline = time.monotonic() + timeout
        self.finished = threading.Event()
        self.done = False
        self.progress = Progress(every=2.0)

    def line(self) -> str:
        metrics = self.bridge.metrics
        consumed = int(metrics.value("wal_bridge_records_consumed_total"))
        shipped = int(metrics.value("wal_bridge_records_shipped_total"))
        segments = self.bridge.wal.snapshot()
        return (f"consumed {consumed:,}/{self.expected:,}  in WAL {len(segments)} segment(s)  "
                f"shipped {shipped:,}/{self.expected:,} records")

    def all_shipped(self) -> bool:
        shipped = self.bridge.wal.shipped_offsets()
        return all(shipped.get(tp, 0) >= end for tp, end in self.targets.items())

    def run(self) -> None:
        while not self.finished.wait(0.25):
            self.progress.update(self.line())
            if self.all_shipped():
                self.done = True
                self.progress.done(self.line())
                click.echo("everything produced has landed: stopping the bridge", err=True)
                self.bridge.stop.set()
                return
            if time.monotonic() > self.deadline:
                self.progress.done(self.line())
                self.bridge.stop.set()
                return


def _settings(values: dict[str, Any], overrides: dict[str, str]) -> Settings:
    raw = {spec.env: values.get(spec.name) for spec in SPECS}
    raw.update(overrides)
    settings = load_settings(raw)
    configure(settings.log_level, settings.log_format)
    return settings


@click.command()
@click.option("--bootstrap-servers", metavar="HOST:PORT",
              help="A real broker to use instead of the embedded one.")
@click.option("--topic", help="Topic to produce to and consume from [default: events-stream, "
              "or wal-bridge-demo on a real broker].")
@click.option("--destination", metavar="URL",
              help="gs://bucket/prefix or file:///path [default: OUTPUT_DIR/run-*/landed].")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("demo-output"), show_default=True,
              help="Each run makes a fresh run-<time> folder here (WAL and landed files); "
                   "nothing is ever deleted.")
@click.option("--count", "-n", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Events to produce.")
@click.option("--malformed-ratio", type=click.FloatRange(0, 1), default=0.02,
              show_default=True, help="Share of malformed records (they go to dead letters).")
@click.option("--seed", type=int, default=7, show_default=True, help="Generator seed.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1000, show_default=True,
              help="BATCH_SIZE of the bridge.")
@click.option("--batch-timeout", type=click.FloatRange(min=0.1), default=2.0,
              show_default=True, help="BATCH_TIMEOUT of the bridge, seconds.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Serve /metrics, /healthz and /readyz while the demo runs (0: off).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="warning", show_default=True, help="Log level of the bridge.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Give up if not everything has landed after this many seconds.")
@settings_options(specs(*KAFKA_SECURITY, *STORAGE))
def demo(*, bootstrap_servers: str | None, topic: str | None, destination: str | None,
         output_dir: Path, count: int, malformed_ratio: float, seed: int, batch_size: int,
         batch_timeout: float, metrics_port: int, log_level: str, timeout: float,
         **values: Any) -> None:
    """Run the whole pipeline locally: embedded broker, events, the bridge, SQL on the result."""
    from wal_bridge.commands.produce import EventStream, produce_events, producer_config, summary

    started = time.monotonic()
    run_dir = (output_dir / f"run-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}").resolve()
    run_dir.mkdir(parents=True)
    topic = topic or ("wal-bridge-demo" if bootstrap_servers else "events-stream")
    overrides = {
        "KAFKA_TOPIC": topic, "KAFKA_GROUP_ID": f"wal-bridge-demo-{run_dir.name}",
        "DESTINATION": destination or f"file://{run_dir / 'landed'}",
        "WAL_DIR": str(run_dir / "wal"), "BATCH_SIZE": str(batch_size),
        "BATCH_TIMEOUT": str(batch_timeout), "METRICS_PORT": str(metrics_port),
        "MAX_RECORD_BYTES": str(DEMO_MAX_RECORD_BYTES), "LOG_LEVEL": log_level,
        "SHUTDOWN_GRACE": "30",
    }
    if bootstrap_servers:
        overrides["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap_servers
    base = _settings(values, overrides)
    conf = producer_config({k: v for k, v in base.kafka_config().items()
                            if k != "bootstrap.servers" or bootstrap_servers},
                           DEMO_MAX_RECORD_BYTES)
    if bootstrap_servers:
        from confluent_kafka import Producer

        producer = Producer(conf)
        where = f"Kafka at {bootstrap_servers}"
    else:
        producer, address = _embedded_broker(conf)
        overrides["KAFKA_BOOTSTRAP_SERVERS"] = address
        where = f"embedded Kafka-protocol broker (librdkafka mock cluster) at {address}"
    settings = _settings(values, overrides)
    click.echo(f"wal-bridge demo in {run_dir}\n  broker:      {where}\n  topic:       {topic}\n"
               f"  WAL:         {settings.wal_dir}\n  destination: {settings.destination}\n",
               err=True)

    # The producer (and with it the embedded broker) stays alive until the demo ends.
    events = EventStream(seed, malformed_ratio, DEMO_MAX_RECORD_BYTES)
    report = produce_events(producer, topic, events, count)
    click.echo(summary(report), err=True)
    if report.delivered == 0:
        raise DemoError(f"no record reached the broker: {dict(report.failed)}")
    targets = _targets(settings, topic, report.next_offsets)

    from wal_bridge.runtime import Bridge

    bridge = Bridge(settings)
    bridge.install_signal_handlers()
    monitor = Monitor(bridge, targets, sum(targets.values()), timeout)
    click.echo("running the bridge (Ctrl-C stops it cleanly)", err=True)
    monitor.start()
    try:
        bridge.run()
    finally:
        monitor.finished.set()
        monitor.join(5)
    if not monitor.done:
        shipped = bridge.wal.shipped_offsets()
        missing = {f"{t}[{p}]": end - shipped.get((t, p), 0) for (t, p), end in targets.items()
                   if shipped.get((t, p), 0) < end}
        raise DemoError(f"stopped before everything landed; offsets not shipped per partition: "
                        f"{missing}; see `wal_bridge inspect --wal-dir {settings.wal_dir}`")
    _show_results(settings, time.monotonic() - started, producer)


def _show_results(settings: Settings, seconds: float, producer: Any) -> None:
    from wal_bridge.commands.audit import audit
    from wal_bridge.commands.audit import render as render_audit
    from wal_bridge.commands.query import format_result, landed_files, run_query
    from wal_bridge.sink import open_sink

    destination = settings.require_destination()
    with landed_files(settings) as (data, dead):
        events = run_query(EVENTS_SQL, data, dead)
        reasons = run_query(DEAD_SQL, data, dead) if dead else None
        totals = run_query("SELECT count(*) FROM events", data, dead).rows[0][0] if data else 0
        dead_total = run_query("SELECT count(*) FROM dead_letters", data, dead).rows[0][0] \
            if dead else 0
    report = audit(settings, open_sink(settings), set(settings.topics),
                   group_id=settings.group_id)
    producer.flush(1)  # the embedded broker lived until here, for the audit's watermarks
    out = [
        "",
        f"Landed {totals:,} events and {dead_total:,} dead letters in "
        f"{len(data) + len(dead)} Parquet files in {seconds:.1f}s:",
        f"  data:         {destination.url(destination.prefix)}/dt=YYYY-MM-DD/*.parquet",
        f"  dead letters: {destination.url(destination.dead_letter_prefix)}/dt=YYYY-MM-DD/"
        "*.parquet",
        f"  WAL:          {settings.wal_dir} (empty: everything was shipped)",
        "",
        "$ wal_bridge query " + repr(" ".join(EVENTS_SQL.split())),
        format_result(events),
    ]
    if reasons is not None:
        out += ["", "Dead letters by reason:", format_result(reasons)]
    where = (destination.url(destination.prefix) if destination.scheme == "gs"
             else destination.url().rstrip("/"))
    out += ["", render_audit(report), "", "Try next:",
            f"  wal_bridge query --destination {where} \"{SAMPLE_SQL}\"",
            f"  wal_bridge inspect {settings.wal_dir}",
            f"  wal_bridge audit --destination {where} --no-kafka"]
    click.echo("\n".join(out))
    if not report["ok"]:
        raise DemoError("the audit found gaps or duplicates (see above)")

