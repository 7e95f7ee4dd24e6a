"""The drain benchmark behind ``scripts/bench`` (run in the project's venv; see that script).

One run, one topic, one bucket:

1. start Kafka and the GCS emulator from the services cache (or use WAL_BRIDGE_TEST_KAFKA /
   WAL_BRIDGE_TEST_GCS), create a topic, pre-produce N events (~230-byte JSON objects);
2. drain that backlog with each contender, one after the other, each in its own consumer
   group and bucket prefix, each a measured child process (wall time from spawn until every
   record is in the bucket, CPU time and peak RSS from ``wait4``, RSS sampled for the plot):

   - ``ceiling``: a confluent-kafka loop that only consumes, with librdkafka's defaults;
   - ``ceiling-bridge``: the same loop with the bridge's client settings (a 2 MiB prefetch
     queue, to keep memory flat, refilled 10 ms after it drains), to tell that cost apart
     from the bridge's own work;
   - ``bridge``: the real ``wal_bridge run`` (fsync per polled batch, BATCH_SIZE records per
     segment, Snappy Parquet, GCS uploads); done when its WAL's state.json has shipped every
     offset;
   - ``naive``: the seed's design (kafka-python, a list, pandas.to_parquet every 5,000);
   - ``quix``: Quix Streams with its FileSink (Parquet) uploading to the bucket;
   - ``bridge-avro``: the bridge again, on a second topic holding the same events Avro-encoded
     through a schema registry (scripts/bench_avro.py; Apicurio Registry from the services
     cache), with ``VALUE_FORMAT=avro``;

   then count the objects and bytes each left in the bucket and the rows in them;
3. optionally drain once more with the bridge under py-spy, and summarise where its threads
   spend their time;
4. measure the WAL's recovery scan and the segment-to-Parquet conversion (scripts/bench_wal.py);
5. price what landed (scripts/bench_cost.py), check the issue's targets, print a table and
   write ``performance.json`` and ``performance.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scripts import bench_avro, bench_cost, bench_profile, services
from scripts.bench_events import encode
from scripts.bench_measure import (
    Child,
    CpuWatch,
    filesystem_of,
    load_average,
    rss_bytes,
    thread_cpu,
    wait_until,
)
from scripts.bench_produce import produce_backlog
from scripts.services import gcs as gcs_service
from scripts.services import kafka as kafka_service
from wal_bridge.wal.layout import WalLayout
from wal_bridge.wal.segment import SEALED

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("ceiling", "ceiling-bridge", "bridge", "bridge-avro", "naive", "quix")
# librdkafka's compression.type values, "none" first: the codecs a producer may choose.
CODECS = ("none", "lz4", "zstd", "snappy", "gzip")
LABELS = {
    "ceiling": "raw consume ceiling (confluent-kafka)",
    "ceiling-bridge": "consume only, the bridge's client settings",
    "bridge": "wal-bridge (WAL + fsync, Parquet, GCS)",
    "bridge-avro": "wal-bridge, Avro values (VALUE_FORMAT=avro)",
    "naive": "naive seed (kafka-python + pandas)",
    "quix": "Quix Streams FileSink (Parquet)",
}
TARGETS = {"vs_ceiling": 0.6, "vs_naive": 5.0, "vs_quix": 5.0, "peak_rss_mib": 256,
           "recovery_mb_per_s": 500, "first_poll_ms": 500}
# Issue 18: 5x the seed and Quix Streams on a backlog of 1,000,000 events or more, 4x on a
# smaller one (300,000), where start-up weighs more.
SMALL_BACKLOG_EVENTS = 1_000_000
SMALL_BACKLOG_GOAL = 4.0
PROFILE_RATE_HZ = 100


def say(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


# ------------------------------------------------------------------------------ progress


class Progress:
    """One line per contender: records landed, rate, RSS; redrawn on a terminal, else every
    few seconds."""

    def __init__(self, name: str, total: int) -> None:
        self.name = name
        self.total = total
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, done: int, rss: int | None = None, extra: str = "",
               force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.5 if self.tty else 5.0):
            return
        self._last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        text = (f"[bench] {self.name:<8} {done:>11,} / {self.total:,} "
                f"({done / self.total:6.1%})  {rate:>9,.0f} rec/s  {elapsed:6.1f} s")
        if rss:
            text += f"  RSS {rss / 2**20:5.0f} MiB"
        if extra:
            text += f"  {extra}"
        if self.tty:
            sys.stderr.write("\r\033[K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        if self.tty and self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ------------------------------------------------------------------------------ services


@dataclass
class Endpoints:
    bootstrap: str
    emulator: str
    kafka_managed: bool
    gcs_managed: bool
    pids: dict[str, int] = field(default_factory=dict)


def start_services(stack: ExitStack, workdir: Path) -> Endpoints:
    """Kafka and the emulator: named by the environment, or started here from the cache."""
    kafka_address = services.external("kafka")
    gcs_address = services.external("gcs")
    wanted = tuple(name for name, address in (("kafka", kafka_address), ("gcs", gcs_address))
                   if address is None)
    if wanted:
        services.provision_all(wanted)
    pids: dict[str, int] = {}
    if kafka_address is None:
        broker = kafka_service.KafkaBroker(kafka_service.provision(services.cache_root()),
                                           workdir / "kafka")
        say(f"starting Kafka {kafka_service.KAFKA_VERSION} (KRaft) on {broker.bootstrap}")
        stack.callback(broker.close)
        broker.start()
        kafka_address = broker.bootstrap
        if broker.pid:
            pids["kafka"] = broker.pid
    if gcs_address is None:
        emulator = gcs_service.FakeGcs(gcs_service.provision(services.cache_root()),
                                       workdir / "gcs")
        say(f"starting the GCS emulator (fake-gcs-server) on {emulator.url}")
        stack.callback(emulator.close)
        emulator.start()
        gcs_address = emulator.url
        if emulator.pid:
            pids["gcs"] = emulator.pid
    return Endpoints(kafka_address, gcs_address, "kafka" in wanted, "gcs" in wanted, pids)


def storage_client(emulator: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="bench", credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": emulator})


# ------------------------------------------------------------------------------ producing


def produce(bootstrap: str, topic: str, events: int, partitions: int,
            compression: str = "none") -> dict[str, Any]:
    """Produce ``events`` benchmark events (JSON) round-robin over the partitions, in record
    batches compressed with ``compression`` (librdkafka's ``compression.type``)."""
    return produce_backlog(bootstrap, topic, events, partitions, value_of=encode,
                           progress=Progress("produce", events), compression=compression)


# ------------------------------------------------------------------------------ contenders


@dataclass
class Run:
    name: str
    label: str
    ok: bool = False
    error: str = ""
    records: int = 0
    wall_s: float = 0.0
    records_per_s: float = 0.0
    mb_per_s: float = 0.0
    cpu_s: float = 0.0
    cpu_per_wall: float = 0.0
    peak_rss_bytes: int = 0
    objects: int = 0
    object_bytes: int = 0
    rows_in_bucket: int = 0
    distinct_identities: int | None = None
    verified: bool | None = None  # every event is a row in the bucket (None: not checked)
    services_cpu_s: dict[str, float] = field(default_factory=dict)
    loadavg_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    details: dict[str, Any] = field(default_factory=dict)
    rss_samples: list[tuple[float, int]] = field(default_factory=list)


@dataclass
class Context:
    args: argparse.Namespace
    endpoints: Endpoints
    topic: str
    bucket: str
    events: int
    payload_bytes: int
    workdir: Path
    venv_python: str
    bench_python: str
    run_id: str


class Landed:
    """The latest ``{"records": n}`` a child printed, and when it was read."""

    def __init__(self) -> None:
        self.records = 0
        self.at = 0.0
        self.last: dict[str, Any] = {}

    def on_line(self, line: str, now: float) -> None:
        if not line.startswith("{"):
            return
        try:
            data = json.loads(line)
        except ValueError:
            return
        if isinstance(data, dict) and "records" in data:
            self.records, self.at, self.last = int(data["records"]), now, data

    def poll(self) -> tuple[int, float]:
        return self.records, self.at


def shipped_offsets(wal: WalLayout, topic: str) -> int:
    """How many records the bridge has shipped, if it shipped its segments in order: the sum of
    its next offsets (a fresh topic's offsets start at 0 and have no gaps). Two conversion
    threads can ship a segment before the one ahead of it, so this may run ahead: see
    :func:`bridge_landed`."""
    return sum(n for (t, _), n in wal.read_shipped().next_offsets.items() if t == topic)


def unshipped_segments(wal: WalLayout) -> int:
    """Sealed segments still in the WAL: each leaves when its object is confirmed."""
    return sum(1 for _, state in wal.list_segments() if state == SEALED)


def bridge_landed(wal_dir: Path, topic: str, events: int) -> int:
    """Records in the bucket: the shipped offsets, but never all of them while a sealed segment
    is still waiting for its upload."""
    wal = WalLayout(wal_dir)
    shipped = shipped_offsets(wal, topic)
    if shipped >= events and unshipped_segments(wal):
        return events - 1
    return shipped


def dir_bytes(path: Path) -> int:
    """Bytes of the WAL's segments and outbox (what WAL_MAX_BYTES caps)."""
    total = 0
    wal = WalLayout(path)
    for sub in (wal.segments, wal.outbox):
        try:
            with os.scandir(sub) as entries:
                for entry in entries:
                    try:
                        total += entry.stat().st_size
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            continue
    return total


def drain(ctx: Context, run: Run, child: Child, landed: Callable[[], tuple[int, float]],
          *, extra: Callable[[], str] | None = None) -> float | None:
    """Wait until ``landed`` reports every event; return the time it did (None: failed)."""
    progress = Progress(run.name, ctx.events)
    deadline = time.monotonic() + ctx.args.timeout
    try:
        while True:
            records, at = landed()
            progress.update(records, rss_bytes(child.pid), extra() if extra else "")
            if records >= ctx.events:
                progress.update(records, rss_bytes(child.pid), extra() if extra else "",
                                force=True)
                return at
            if not child.alive():
                run.error = f"exited early with {records:,} of {ctx.events:,} records landed"
                return None
            if time.monotonic() > deadline:
                run.error = f"timed out after {ctx.args.timeout:.0f} s with {records:,} landed"
                return None
            time.sleep(0.05)
    finally:
        progress.close()


def finish(ctx: Context, run: Run, child: Child, done_at: float | None, watch: CpuWatch) -> None:
    usage = child.finish(stop=True)
    run.services_cpu_s = watch.stop()
    run.rss_samples = [(t, rss) for t, rss in usage.rss_samples
                       if done_at is None or t <= done_at - child.started + 0.5]
    run.cpu_s = round(usage.cpu_s, 2)
    run.peak_rss_bytes = usage.peak_rss_bytes
    if done_at is None:
        return
    run.ok = True
    run.records = ctx.events
    run.wall_s = round(done_at - child.started, 3)
    run.records_per_s = round(ctx.events / run.wall_s)
    run.mb_per_s = round(ctx.payload_bytes / run.wall_s / 1e6, 2)
    run.cpu_per_wall = round(usage.cpu_s / run.wall_s, 2)


def start_watch(ctx: Context) -> CpuWatch:
    watch = CpuWatch(ctx.endpoints.pids)
    watch.start()
    return watch


def run_ceiling(ctx: Context, attempt: int, name: str = "ceiling") -> Run:
    run = Run(name, LABELS[name], loadavg_before=load_average())
    landed = Landed()
    watch = start_watch(ctx)
    child = Child(
        [ctx.venv_python, "-m", "scripts.bench_ceiling", "--bootstrap", ctx.endpoints.bootstrap,
         "--topic", ctx.topic, "--group", f"{ctx.run_id}-{name}-{attempt}",
         "--expect", str(ctx.events), "--poll", str(min(10_000, ctx.args.batch_size)),
         "--config", "bridge" if name == "ceiling-bridge" else "defaults"],
        log=ctx.workdir / "logs" / f"{name}-{attempt}.log", on_line=landed.on_line, cwd=ROOT,
    )
    done_at = drain(ctx, run, child, landed.poll)
    if done_at is not None:
        wait_until(lambda: not child.alive(), 30)  # it exits by itself once it has them all
    finish(ctx, run, child, done_at, watch)
    return run


def bridge_env(ctx: Context, wal_dir: Path, group: str, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")
           and not k.startswith(("KAFKA_", "WAL_BRIDGE_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=ctx.endpoints.bootstrap, KAFKA_TOPIC=ctx.topic,
        KAFKA_GROUP_ID=group, DESTINATION=f"gs://{ctx.bucket}/{prefix}",
        WAL_DIR=str(wal_dir), BATCH_SIZE=str(ctx.args.batch_size),
        BATCH_TIMEOUT=str(ctx.args.batch_timeout), METRICS_PORT="0", LOG_FORMAT="json",
        LOG_LEVEL="info", SHUTDOWN_GRACE="30", STORAGE_EMULATOR_HOST=ctx.endpoints.emulator,
        INSTANCE_ID="bench",
    )
    return env


def run_bridge(ctx: Context, attempt: int, *, profile: bool = False,
               registry_url: str | None = None, variant: str = "") -> Run:
    """Drain ``ctx.topic`` with ``wal_bridge run``; with ``registry_url``, as the
    ``bridge-avro`` contender (VALUE_FORMAT=avro, SCHEMA_REGISTRY_URL=registry_url).
    ``variant`` tells apart the WAL, group and prefix of drains of other topics (a codec)."""
    name = "bridge" if registry_url is None else "bridge-avro"
    tag = f"{name}-profile-{attempt}" if profile else f"{name}-{attempt}"
    tag = f"{tag}-{variant}" if variant else tag
    run = Run(name, LABELS[name], loadavg_before=load_average())
    wal_dir = ctx.workdir / f"wal-{tag}"
    prefix = f"{ctx.run_id}/{tag}/raw"
    env = bridge_env(ctx, wal_dir, f"{ctx.run_id}-{tag}", prefix)
    if registry_url is not None:
        env.update(VALUE_FORMAT="avro", SCHEMA_REGISTRY_URL=registry_url)
    watch = start_watch(ctx)
    log_path = ctx.workdir / "logs" / f"{tag}.log"
    command = (shlex.split(ctx.args.bridge_command) if ctx.args.bridge_command
               else [ctx.venv_python, "-m", "wal_bridge.cli", "run"])
    child = Child(command, env=env, log=log_path, cwd=ROOT)
    spies: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    if profile:
        # Attach once the bridge holds its WAL lock (its interpreter is up by then): one
        # sampler of wall time (--idle: waits count) and one of who holds the GIL (--gil).
        # Non-blocking, so that two samplers do not pause the bridge twice per sample.
        wait_until(lambda: WalLayout(wal_dir).lock.exists() or not child.alive(), 60)
        for mode, flag in (("wall", "--idle"), ("gil", "--gil")):
            out = ctx.workdir / f"{tag}.pyspy-{mode}.txt"
            with open(ctx.workdir / "logs" / f"{tag}.pyspy-{mode}.log", "wb") as spy_log:
                spies[mode] = (subprocess.Popen(
                    [str(Path(ctx.bench_python).parent / "py-spy"), "record", "--pid",
                     str(child.pid), "--rate", str(PROFILE_RATE_HZ), "--format", "raw",
                     "--threads", "--nonblocking", flag, "--output", str(out)],
                    stdout=subprocess.DEVNULL, stderr=spy_log,
                ), out)
    peak_wal = [0]

    def landed() -> tuple[int, float]:
        return bridge_landed(wal_dir, ctx.topic, ctx.events), time.monotonic()

    def extra() -> str:
        size = dir_bytes(wal_dir)
        peak_wal[0] = max(peak_wal[0], size)
        return f"WAL {size / 1e6:5.0f} MB"

    done_at = drain(ctx, run, child, landed, extra=extra)
    threads = thread_cpu(child.pid)  # before shutdown: what the drain itself cost per thread
    finish(ctx, run, child, done_at, watch)
    run.details = {"peak_wal_bytes": peak_wal[0], "exit_code": child.proc.returncode,
                   "cpu_by_thread": bench_profile.cpu_by_thread(threads, {}, child.pid),
                   **bridge_log_stats(log_path, child.started_epoch)}
    for mode, (spy, out) in spies.items():
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.terminate()
            spy.wait(10)
        if out.exists():
            text = out.read_text()
            if mode == "wall":
                run.details["cpu_by_thread"] = bench_profile.cpu_by_thread(
                    threads, bench_profile.thread_ids(text), child.pid)
            run.details[f"profile_{mode}"] = bench_profile.summarize(text)
            run.details[f"profile_{mode}_text"] = bench_profile.format_summary(
                run.details[f"profile_{mode}"], PROFILE_RATE_HZ, wall_s=run.wall_s)
    if run.ok:
        inventory(ctx, run, prefix, identities=not profile)
    return run


def run_contender(ctx: Context, name: str, attempt: int, *, registry_url: str | None,
                  produced_avro: dict[str, Any] | None) -> Run:
    """One drain by contender ``name``; ``bridge-avro`` drains the Avro topic that
    ``produced_avro`` describes (bench_avro.produce) through the registry at ``registry_url``."""
    if name.startswith("ceiling"):
        return run_ceiling(ctx, attempt, name)
    if name == "bridge":
        return run_bridge(ctx, attempt)
    if name == "bridge-avro":
        if produced_avro is None:
            raise RuntimeError("bridge-avro needs the Avro topic (bench_avro.prepare) first")
        avro_ctx = replace(ctx, topic=produced_avro["topic"],
                           payload_bytes=produced_avro["payload_bytes"])
        return run_bridge(avro_ctx, attempt, registry_url=registry_url)
    return run_alternative(ctx, name, f"bench_{name}.py", attempt)


def bridge_log_stats(path: Path, spawned_epoch: float) -> dict[str, Any]:
    """Per-stage figures from the bridge's own JSON log lines (one per segment state change)."""
    converted: list[dict[str, Any]] = []
    shipped: list[dict[str, Any]] = []
    events: dict[str, int] = {}
    first_poll_ms: float | None = None
    first_seen: dict[str, float] = {}
    last_seen: dict[str, float] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {}
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue
        name = item.get("event", "")
        events[name] = events.get(name, 0) + 1
        stamp = _timestamp(item.get("timestamp"))
        if stamp is not None:
            first_seen.setdefault(name, stamp)
            last_seen[name] = stamp
        if name == "consuming_started":  # the bridge's own count, from its process start
            first_poll_ms = item.get("startup_ms")
        elif name == "segment_converted":
            converted.append(item)
        elif name == "segment_shipped":
            shipped.append(item)
    stats: dict[str, Any] = {"log_events": events, "first_poll_ms": first_poll_ms}
    start = spawned_epoch
    if last_seen:
        # When each stage was done with the backlog, in seconds since the process was spawned:
        # the stage that finishes last, well after the one before it, is the one that bounds.
        stats["timeline_s"] = {
            f"{label}": round(last_seen[name] - start, 2)
            for label, name in (("bridge_starting", "bridge_starting"),
                                ("consuming_started", "consuming_started"),
                                ("partitions_assigned", "partitions_assigned"),
                                ("last_segment_sealed", "segment_sealed"),
                                ("last_segment_converted", "segment_converted"),
                                ("last_segment_shipped", "segment_shipped"))
            if name in last_seen
        }
        if "segment_sealed" in first_seen:
            stats["timeline_s"]["first_segment_sealed"] = round(
                first_seen["segment_sealed"] - start, 2)
    if converted:
        busy = sum(float(c.get("duration_ms", 0)) for c in converted) / 1000
        records = sum(int(c.get("records", 0)) for c in converted)
        stats["conversion"] = {
            "segments": len(converted), "busy_s": round(busy, 2),
            "records_per_busy_s": round(records / busy) if busy else None,
            "median_ms": round(statistics.median(float(c.get("duration_ms", 0))
                                                 for c in converted), 1),
        }
    if shipped:
        busy = sum(float(s.get("duration_ms", 0)) for s in shipped) / 1000
        stats["upload"] = {
            "segments": len(shipped), "busy_s": round(busy, 2),
            "median_ms": round(statistics.median(float(s.get("duration_ms", 0))
                                                 for s in shipped), 1),
        }
    return stats


def _timestamp(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def run_alternative(ctx: Context, name: str, script: str, attempt: int) -> Run:
    run = Run(name, LABELS[name], loadavg_before=load_average())
    landed = Landed()
    # Quix's FileSink takes letters, digits, '.', '_' and '/' in its directory: no '-'.
    prefix = f"{ctx.run_id.replace('-', '_')}/{name}_{attempt}"
    watch = start_watch(ctx)
    child = Child(
        [ctx.bench_python, str(ROOT / "scripts" / script), "--bootstrap", ctx.endpoints.bootstrap,
         "--topic", ctx.topic, "--group", f"{ctx.run_id}-{name}-{attempt}",
         "--emulator", ctx.endpoints.emulator, "--bucket", ctx.bucket, "--prefix", prefix],
        log=ctx.workdir / "logs" / f"{name}-{attempt}.log", on_line=landed.on_line, cwd=ROOT,
    )
    done_at = drain(ctx, run, child, landed.poll)
    finish(ctx, run, child, done_at, watch)
    if run.ok:
        inventory(ctx, run, prefix)
    return run


def inventory(ctx: Context, run: Run, prefix: str, *, identities: bool = False) -> None:
    """Count what the run left in the bucket: objects, bytes, rows (Parquet footers), and for
    the bridge the distinct (partition, offset) identities."""
    import pyarrow.parquet as pq

    client = storage_client(ctx.endpoints.emulator)
    objects = size = rows = 0
    seen: set[tuple[int, int]] = set()
    sample: list[Any] = []
    for blob in client.list_blobs(ctx.bucket, prefix=prefix + "/"):
        objects += 1
        size += int(blob.size or 0)
        data = blob.download_as_bytes()
        if not blob.name.endswith(".parquet"):
            continue
        if identities:
            table = pq.read_table(io.BytesIO(data))
            rows += table.num_rows
            seen.update(zip(table.column("_kafka_partition").to_pylist(),
                            table.column("_kafka_offset").to_pylist(), strict=True))
            if len(sample) < 20:
                sample.append(table)
        else:
            rows += pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    run.objects, run.object_bytes, run.rows_in_bucket = objects, size, rows
    if identities:
        run.distinct_identities = len(seen)
        if sample:
            import pyarrow as pa

            run.details["bigquery_row_bytes"] = round(logical_row_bytes(
                pa.concat_tables(sample, promote_options="permissive")), 1)
            run.details["columns"] = sample[0].schema.names
    run.verified = rows == ctx.events and (not identities or len(seen) == ctx.events)
    if not run.verified:
        run.error = (f"{rows:,} rows ({len(seen):,} distinct) in the bucket, expected "
                     f"{ctx.events:,}" if identities else
                     f"{rows:,} rows in the bucket, expected {ctx.events:,}")


def logical_row_bytes(table: Any) -> float:
    """BigQuery's logical size of the rows of ``table`` (see bench_cost), walking nested types."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns: dict[str, tuple[str, int, int]] = {}

    def leaves(name: str, array: Any) -> None:
        kind = array.type
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            leaves(name + "[]", pc.list_flatten(array))
        elif pa.types.is_struct(kind):
            for i in range(kind.num_fields):
                child = pc.struct_field(array, [i])
                leaves(f"{name}.{kind.field(i).name}", child)
        elif pa.types.is_dictionary(kind):
            leaves(name, array.dictionary_decode())
        else:
            non_null = len(array) - array.null_count
            payload = 0
            if pa.types.is_string(kind) or pa.types.is_binary(kind) or \
                    pa.types.is_large_string(kind) or pa.types.is_large_binary(kind):
                total = pc.sum(pc.binary_length(array)).as_py()
                payload = int(total or 0)
            columns[name] = (str(kind), non_null, payload)

    for name in table.column_names:
        leaves(name, table.column(name).combine_chunks())
    return bench_cost.bigquery_row_bytes(columns, table.num_rows)


# ------------------------------------------------------------------------------ WAL bench


def run_wal_bench(ctx: Context) -> dict[str, Any] | None:
    if ctx.args.recovery_mb <= 0:
        return None
    scratch = ctx.workdir / "wal-recovery"
    say(f"WAL recovery and conversion on ~{ctx.args.recovery_mb:,.0f} MB of sealed segments")
    done = subprocess.run(
        [ctx.venv_python, "-m", "scripts.bench_wal", "--dir", str(scratch),
         "--mb", str(ctx.args.recovery_mb), "--batch-size", str(ctx.args.batch_size),
         "--convert", str(ctx.args.convert_segments)],
        cwd=ROOT, stdout=subprocess.PIPE, check=False, text=True,
    )
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(scratch.parent / (scratch.name + "-landed"), ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        say(f"the WAL benchmark failed (exit {done.returncode})")
        return {"error": f"exit {done.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1])
    result["filesystem"] = filesystem_of(ctx.workdir)
    return result


# ------------------------------------------------------------------------------ report


def best(runs: list[Run]) -> Run:
    """The median run by rate among those that finished (the only one for a single run)."""
    finished = sorted((r for r in runs if r.ok), key=lambda r: r.records_per_s)
    if not finished:
        return runs[-1]
    return finished[(len(finished) - 1) // 2]


def ratios(by_name: dict[str, Run]) -> dict[str, float]:
    bridge = by_name.get("bridge")
    out: dict[str, float] = {}
    if not bridge or not bridge.ok:
        return out
    for name, key in (("ceiling", "vs_ceiling"), ("ceiling-bridge", "vs_ceiling_bridge_settings"),
                      ("naive", "vs_naive"), ("quix", "vs_quix")):
        other = by_name.get(name)
        if other and other.ok and other.records_per_s:
            out[key] = round(bridge.records_per_s / other.records_per_s, 2)
    avro = by_name.get("bridge-avro")
    if avro and avro.ok and avro.records_per_s:  # the Avro drain's rate over the JSON drain's
        out["avro_vs_json"] = round(avro.records_per_s / bridge.records_per_s, 2)
    return out


def drain_codecs(ctx: Context, bridge: Run | None,
                 produced: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-codec table: the main drain's row (the first codec of ``--compression``), then
    for every other codec a topic of the same events produced with it, drained by the bridge
    (``--repeat`` times, the median kept)."""
    codecs = ctx.args.compression
    rows = [codec_row(codecs[0], bridge, produced)] if bridge is not None else []
    for codec in codecs[1:]:
        topic = f"{ctx.run_id}-events-{codec}"
        kafka_service.create_topic(ctx.endpoints.bootstrap, topic, ctx.args.partitions)
        say(f"producing {ctx.events:,} events into {topic} (compression {codec})")
        made = produce(ctx.endpoints.bootstrap, topic, ctx.events, ctx.args.partitions, codec)
        codec_ctx = replace(ctx, topic=topic, payload_bytes=made["payload_bytes"])
        runs = []
        for attempt in range(1, ctx.args.repeat + 1):
            say(f"draining the {codec} topic with {LABELS['bridge']}")
            runs.append(run_bridge(codec_ctx, attempt, variant=codec))
        rows.append(codec_row(codec, best(runs), made))
    return rows


def codec_row(codec: str, run: Run, produced: dict[str, Any]) -> dict[str, Any]:
    """One row of the per-codec table: the bridge's drain of a topic produced with ``codec``."""
    return {"codec": codec, "ok": run.ok, "records_per_s": run.records_per_s,
            "wall_s": run.wall_s, "peak_rss_mib": round(run.peak_rss_bytes / 2**20, 1),
            "first_poll_ms": run.details.get("first_poll_ms"),
            "produced_mean_event_bytes": produced.get("mean_event_bytes")}


def check_targets(by_name: dict[str, Run], ratio: dict[str, float],
                  wal: dict[str, Any] | None, *, events: int = SMALL_BACKLOG_EVENTS,
                  codecs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(what: str, measured: float | None, target: float, higher: bool, unit: str) -> None:
        met = None if measured is None else (measured >= target if higher else measured <= target)
        rows.append({"target": what, "measured": measured, "goal": target,
                     "direction": ">=" if higher else "<=", "unit": unit, "met": met})

    add("end to end vs raw consume ceiling", ratio.get("vs_ceiling"), TARGETS["vs_ceiling"],
        True, "x")
    small = events < SMALL_BACKLOG_EVENTS
    add("end to end vs naive seed", ratio.get("vs_naive"),
        SMALL_BACKLOG_GOAL if small else TARGETS["vs_naive"], True, "x")
    add("end to end vs Quix Streams", ratio.get("vs_quix"),
        SMALL_BACKLOG_GOAL if small else TARGETS["vs_quix"], True, "x")
    bridge = by_name.get("bridge")
    add("bridge peak RSS", round(bridge.peak_rss_bytes / 2**20, 1) if bridge else None,
        TARGETS["peak_rss_mib"], False, "MiB")
    for row in (codecs or [])[1:]:  # the first codec's drain is the row above
        add(f"bridge peak RSS, {row['codec']} topic", row["peak_rss_mib"],
            TARGETS["peak_rss_mib"], False, "MiB")
    add("bridge start-up, process start to first poll",
        bridge.details.get("first_poll_ms") if bridge else None,
        TARGETS["first_poll_ms"], False, "ms")
    recovery = (wal or {}).get("recovery", {})
    add("WAL recovery scan (page cache warm)", recovery.get("warm_mb_per_s"),
        TARGETS["recovery_mb_per_s"], True, "MB/s")
    add("WAL recovery scan (page cache dropped)", recovery.get("cold_mb_per_s"),
        TARGETS["recovery_mb_per_s"], True, "MB/s")
    return rows


def costs(by_name: dict[str, Run]) -> dict[str, Any]:
    bridge = by_name.get("bridge")
    if not bridge or not bridge.ok or "bigquery_row_bytes" not in bridge.details:
        return {}
    row_bytes = float(bridge.details["bigquery_row_bytes"])
    out: dict[str, Any] = {
        "prices": {k: asdict(v) for k, v in bench_cost.PRICES.items()},
        "bigquery_logical_row_bytes": row_bytes,
        "per_million_events": {},
    }
    for name, run in by_name.items():
        if name.startswith("ceiling") or not run.ok:
            continue
        out["per_million_events"][name] = bench_cost.per_million(
            events=run.records, objects=run.objects, object_bytes=run.object_bytes,
            logical_row_bytes=row_bytes,
        ).as_dict()
    return out


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def table(by_name: dict[str, Run], ratio: dict[str, float]) -> str:
    head = (f"{'contender':<42} {'records/s':>10} {'MB/s':>6} {'wall s':>7} {'CPU s':>6} "
            f"{'CPU/wall':>8} {'peak RSS':>10} {'objects':>7} {'written':>11} {'x ceiling':>9} "
            f"{'bridge is':>9}")
    lines = [head, "-" * len(head)]
    ceiling = by_name.get("ceiling")
    bridge = by_name.get("bridge")
    for name in CONTENDERS:
        run = by_name.get(name)
        if run is None:
            continue
        if not run.ok:
            lines.append(f"{run.label:<42} FAILED: {run.error}")
            continue
        vs_ceiling = (f"{run.records_per_s / ceiling.records_per_s:9.2f}"
                      if ceiling and ceiling.ok else f"{'-':>9}")
        faster = "-"
        if bridge and bridge.ok and name not in ("bridge", "bridge-avro"):
            faster = f"{bridge.records_per_s / run.records_per_s:.2f}x"
        lands = not name.startswith("ceiling")
        objects = f"{run.objects:>7,}" if lands else f"{'-':>7}"
        written = fmt_bytes(run.object_bytes) if lands else "-"
        lines.append(
            f"{run.label:<42} {run.records_per_s:>10,.0f} {run.mb_per_s:>6.1f} "
            f"{run.wall_s:>7.2f} {run.cpu_s:>6.1f} {run.cpu_per_wall:>7.2f}x "
            f"{fmt_bytes(run.peak_rss_bytes):>10} {objects} {written:>11} {vs_ceiling} "
            f"{faster:>9}"
        )
    return "\n".join(lines)


def codec_lines(codecs: list[dict[str, Any]]) -> list[str]:
    """The per-codec table of the report (nothing when there is no row)."""
    if not codecs:
        return []
    out = ["the bridge per compression.type of the produced topic:",
           f"  {'codec':<8} {'records/s':>10} {'peak RSS':>10} {'first poll':>11}"]
    for row in codecs:
        poll = "-" if row["first_poll_ms"] is None else f"{row['first_poll_ms']:.0f} ms"
        out.append(f"  {row['codec']:<8} {row['records_per_s']:>10,} "
                   f"{row['peak_rss_mib']:>6.1f} MiB {poll:>11}"
                   + ("" if row["ok"] else "  FAILED"))
    return [*out, ""]


def report_text(result: dict[str, Any], by_name: dict[str, Run]) -> str:
    out = [
        "",
        f"drain of {result['config']['events']:,} events ({result['produce']['mean_event_bytes']}"
        f" bytes each) over {result['config']['partitions']} partitions, BATCH_SIZE "
        f"{result['config']['batch_size']:,}, fsync on; load average at start "
        f"{result['machine']['loadavg_start']}, at end {result['machine']['loadavg_end']}",
        "",
        table(by_name, result["ratios"]),
        "",
    ]
    avro = result.get("produce_avro")
    if avro:
        out += [f"bridge-avro drains the same events Avro-encoded ({avro['mean_event_bytes']} "
                f"bytes each, schema id {avro['schema_id']} as {avro['subject']})"
                + (f": {result['ratios']['avro_vs_json']}x the JSON drain's rate"
                   if "avro_vs_json" in result["ratios"] else ""), ""]
    out += codec_lines(result.get("codecs") or [])
    out += [
        "targets:",
    ]
    for row in result["targets"]:
        state = {True: "met", False: "NOT MET", None: "not measured"}[row["met"]]
        measured = "-" if row["measured"] is None else f"{row['measured']:,}"
        out.append(f"  {row['target']:<42} {measured:>10} {row['unit']:<4} "
                   f"(goal {row['direction']} {row['goal']:,} {row['unit']}): {state}")
    wal = result.get("wal") or {}
    if "conversion" in wal:
        conv = wal["conversion"]
        out.append(f"  segment -> Parquet (isolated)              {conv['records_per_s']:>10,} "
                   f"rec/s, {conv['mb_per_s']} MB/s of segment")
    cost = result.get("cost") or {}
    if cost.get("per_million_events"):
        out += ["", f"cost per million events landed (USD, list prices; BigQuery logical row "
                f"{cost['bigquery_logical_row_bytes']:.0f} bytes):"]
        bridge_cost = cost["per_million_events"].get("bridge")
        if bridge_cost:
            out.append(f"  {'BigQuery legacy streaming inserts':<38} "
                       f"{bridge_cost['streaming_insert']:.4f}")
            out.append(f"  {'BigQuery Storage Write API':<38} "
                       f"{bridge_cost['storage_write_api']:.4f}  (after the free 2 TiB/month)")
        for name, c in cost["per_million_events"].items():
            out.append(f"  {LABELS[name]:<38} {c['gcs_first_month']:.4f}  "
                       f"({c['objects_per_million']:,.0f} Class A ops {c['gcs_class_a']:.4f} + "
                       f"{c['bytes_per_million'] / 2**20:,.1f} MiB stored "
                       f"{c['gcs_storage_per_month']:.4f}/month)")
    bridge = by_name.get("bridge")
    profiled = result.get("profile") or {}
    if profiled.get("cpu_by_thread"):
        out += ["", "CPU seconds of the profiled drain, by thread: " + ", ".join(
            f"{t['thread']} {t['cpu_s']}" for t in profiled["cpu_by_thread"])]
    if profiled.get("wall_text"):
        out += ["", f"where the bridge's time goes (py-spy at {PROFILE_RATE_HZ} Hz during a "
                f"{profiled['wall_s']:.1f} s drain, {profiled['cpu_s']:.1f} CPU s):",
                "-- wall time of each thread (waits included):", profiled["wall_text"]]
    if profiled.get("gil_text"):
        out += ["-- samples holding the GIL (what the one interpreter spends itself on):",
                profiled["gil_text"]]
    if bridge and bridge.details.get("conversion"):
        conv = bridge.details["conversion"]
        out.append(f"\nin the pipeline: {conv['segments']} conversions, "
                   f"{conv['records_per_busy_s']:,} records per busy second of the sealer, "
                   f"median {conv['median_ms']} ms per segment")
    if bridge and bridge.details.get("timeline_s"):
        steps = ", ".join(f"{k.replace('_', ' ')} {v} s"
                          for k, v in sorted(bridge.details["timeline_s"].items(),
                                             key=lambda kv: kv[1]))
        out.append(f"bridge timeline (since spawn): {steps}; every record in the bucket at "
                   f"{bridge.wall_s} s")
    return "\n".join(out)


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="backlog to drain")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--compression", default="lz4",
                        help="compression.type of the produced record batches, comma-separated "
                             f"from {','.join(CODECS)} or 'all': every contender drains the "
                             "first; the bridge also drains one topic per other codec")
    parser.add_argument("--batch-size", type=int, default=5000, help="the bridge's BATCH_SIZE")
    parser.add_argument("--batch-timeout", type=float, default=60.0,
                        help="the bridge's BATCH_TIMEOUT")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated, in this order: {','.join(CONTENDERS)} "
                             "(bridge-avro: the bridge on the same events Avro-encoded, "
                             "through a schema registry)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="drains per contender; the median by rate is reported")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the extra bridge drain under py-spy")
    parser.add_argument("--recovery-mb", type=float, default=1024,
                        help="sealed segment bytes for the recovery scan (0: skip)")
    parser.add_argument("--convert-segments", type=int, default=40,
                        help="segments converted in the isolated conversion measurement")
    parser.add_argument("--timeout", type=float, default=0,
                        help="seconds a drain may take (default: enough for 2,000 records/s)")
    parser.add_argument("--quiet-load", type=float, default=0,
                        help="before draining, wait until the 1-minute load average is under "
                             "this (0: do not wait)")
    parser.add_argument("--quiet-wait", type=float, default=600,
                        help="the longest wait for --quiet-load, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="where performance.json/.png go (default: docs/)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="scratch directory (WALs, broker data, logs); a disk, not tmpfs")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--bridge-command", default="",
                        help="run this instead of `.venv/bin/python -m wal_bridge.cli run` "
                             "(to compare a build or a patch; settings come by environment)")
    parser.add_argument("--bench-python", required=True,
                        help=argparse.SUPPRESS)  # the bench venv's python: scripts/bench adds it
    args = parser.parse_args(argv)
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    args.compression = (list(CODECS) if args.compression.strip() == "all"
                        else [c.strip() for c in args.compression.split(",") if c.strip()])
    bad = set(args.compression) - set(CODECS)
    if bad or not args.compression:
        parser.error(f"--compression: unknown codec(s) {', '.join(sorted(bad))}; "
                     f"choose from {', '.join(CODECS)} or all")
    if args.timeout <= 0:
        args.timeout = max(300.0, args.events / 2000)
    return args


def public_args(argv: list[str]) -> list[str]:
    """The command line as a reader would type it: without the venv path scripts/bench adds."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--bench-python":
            skip = True
            continue
        if arg.startswith("--bench-python="):
            continue
        out.append(arg)
    return out


def wait_for_quiet(threshold: float, longest: float) -> list[float]:
    """Wait until the 1-minute load average is under ``threshold``; return what was seen."""
    seen = [load_average()[0]]
    deadline = time.monotonic() + longest
    while seen[-1] >= threshold and time.monotonic() < deadline:
        say(f"1-minute load average {seen[-1]:.2f} >= {threshold}: waiting for a quieter "
            f"machine ({deadline - time.monotonic():.0f} s left)")
        time.sleep(20)
        seen.append(load_average()[0])
    return seen


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one run, top to bottom
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="wal-bridge-bench-", dir=args.workdir))
    (workdir / "logs").mkdir()
    fs_kind = filesystem_of(workdir)
    say(f"scratch {workdir} ({fs_kind}); results into {args.out}")
    if fs_kind in ("tmpfs", "ramfs"):
        say("warning: the scratch directory is in memory, fsync costs nothing there: "
            "give --workdir on a disk")
    started_at = datetime.now(tz=UTC)
    load_start = load_average()
    by_name: dict[str, Run] = {}
    attempts: dict[str, list[dict[str, Any]]] = {}
    wal: dict[str, Any] | None = None
    profile_run: Run | None = None
    quiet: list[float] = []
    with ExitStack() as stack:
        if not args.keep:
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        endpoints = start_services(stack, workdir)
        topic = f"{run_id}-events"
        bucket = run_id
        kafka_service.create_topic(endpoints.bootstrap, topic, args.partitions)
        gcs_service.create_bucket(endpoints.emulator, bucket)
        say(f"producing {args.events:,} events into {topic} ({args.partitions} partitions)")
        produced = produce(endpoints.bootstrap, topic, args.events, args.partitions,
                           args.compression[0])
        say(f"produced in {produced['duration_s']} s ({produced['records_per_s']:,} records/s)")
        # The Avro backlog and its registry, when bridge-avro is a contender (else Nones).
        registry_url, produced_avro = bench_avro.prepare(
            stack, workdir, bootstrap=endpoints.bootstrap, topic=f"{run_id}-events-avro",
            events=args.events, partitions=args.partitions,
            wanted="bridge-avro" in args.contenders, say=say,
            progress=Progress("produce", args.events), compression=args.compression[0])
        ctx = Context(args, endpoints, topic, bucket, args.events, produced["payload_bytes"],
                      workdir, sys.executable, args.bench_python, run_id)
        if args.quiet_load > 0:
            quiet = wait_for_quiet(args.quiet_load, args.quiet_wait)
        for name in args.contenders:
            runs = []
            for attempt in range(1, args.repeat + 1):
                say(f"draining with {LABELS[name]}" + (f" ({attempt}/{args.repeat})"
                                                        if args.repeat > 1 else ""))
                run = run_contender(ctx, name, attempt, registry_url=registry_url,
                                    produced_avro=produced_avro)
                if run.error:
                    say(f"{name}: {run.error} (log: {workdir / 'logs'})")
                runs.append(run)
            by_name[name] = best(runs)
            attempts[name] = [{"records_per_s": r.records_per_s, "wall_s": r.wall_s,
                               "ok": r.ok, "loadavg_before": r.loadavg_before} for r in runs]
        codec_rows = drain_codecs(ctx, by_name.get("bridge"), produced)
        if args.profile and "bridge" in args.contenders:
            say("draining once more with the bridge under py-spy (not counted above)")
            profile_run = run_bridge(ctx, 1, profile=True)
        wal = run_wal_bench(ctx)
        if args.keep:
            say(f"kept {workdir}")
    load_end = load_average()
    ratio = ratios(by_name)
    result: dict[str, Any] = {
        "version": 1,
        "generated_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join(["scripts/bench", *public_args(argv if argv is not None
                                                            else sys.argv[1:])]),
        "config": {"events": args.events, "partitions": args.partitions,
                   "compression": args.compression,
                   "batch_size": args.batch_size, "batch_timeout": args.batch_timeout,
                   "repeat": args.repeat, "contenders": args.contenders},
        "machine": {
            "cpus": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": load_end,
            "loadavg_waited": quiet, "python": platform.python_version(),
            "kernel": platform.release(), "scratch_filesystem": fs_kind,
        },
        "services": {"kafka": f"Apache Kafka {kafka_service.KAFKA_VERSION} (KRaft)"
                     if endpoints.kafka_managed else "external",
                     "gcs": f"fake-gcs-server {gcs_service.VERSION}"
                     if endpoints.gcs_managed else "external",
                     **({"schema_registry": registry_url} if registry_url else {})},
        "produce": produced,
        "produce_avro": produced_avro,
        "runs": [asdict(r) for r in by_name.values()],
        "attempts": attempts,
        "ratios": ratio,
        "wal": wal,
    }
    if profile_run is not None:
        details = profile_run.details
        result["profile"] = {
            "rate_hz": PROFILE_RATE_HZ, "records_per_s_under_profiler": profile_run.records_per_s,
            "wall_s": profile_run.wall_s, "cpu_s": profile_run.cpu_s,
            "wall": details.get("profile_wall"), "gil": details.get("profile_gil"),
            "cpu_by_thread": details.get("cpu_by_thread"),
            "wall_text": details.get("profile_wall_text"),
            "gil_text": details.get("profile_gil_text"),
        }
    result["codecs"] = codec_rows
    result["targets"] = check_targets(by_name, ratio, wal, events=args.events, codecs=codec_rows)
    result["cost"] = costs(by_name)
    json_path = args.out / "performance.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    print(report_text(result, by_name))
    png = args.out / "performance.png"
    subprocess.run([args.bench_python, str(ROOT / "scripts" / "bench_plot.py"), str(json_path),
                    str(png)], check=False)
    say(f"wrote {json_path}")
    return 0 if all(r.ok for r in by_name.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
