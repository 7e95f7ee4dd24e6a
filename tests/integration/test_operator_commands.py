"""Operator commands against the real broker and emulator: inspect, replay, audit, produce, query.

The bridge runs as a subprocess (``tests.support.BridgeProcess``); so does every command, so
that exit codes, flags and variables are the ones an operator meets.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.support import BridgeProcess, bridge_env, produce, wait_for
from wal_bridge.wal.codec import decode_records
from wal_bridge.wal.segment import iter_frames

if TYPE_CHECKING:
    from tests.conftest import GcsHandle, KafkaHandle

SMALL_RECORDS = {"MAX_RECORD_BYTES": "64KiB"}  # oversized test records stay under Kafka's limit


def cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``wal_bridge ARGS`` as an operator would."""
    return subprocess.run([sys.executable, "-m", "wal_bridge.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def inspect_json(wal_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    result = cli("inspect", "--wal-dir", str(wal_dir), "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def event(i: int) -> bytes:
    return json.dumps({"event_id": i, "user_id": f"user-{i % 50}", "amount": i * 0.5}).encode()


@pytest.fixture
def env(kafka: KafkaHandle, gcs: GcsHandle, topic: str, bucket: str,
        tmp_path: Path) -> dict[str, str]:
    """The settings every process of a test shares: broker, topic, group, bucket, WAL, and a
    SCHEMA_FILE, so that the schema is stored in the bucket at start and conversion goes on
    once the tests delete the bucket (the uploads get stuck, not the conversion)."""
    schema = tmp_path / "schema.json"
    schema.write_text('[{"name": "user_id", "type": "string"}]')
    return bridge_env(bootstrap=kafka.bootstrap, topic=topic, destination=f"gs://{bucket}/raw",
                      wal_dir=tmp_path / "wal", emulator=gcs.url, BATCH_TIMEOUT="1",
                      SCHEMA_FILE=str(schema), **SMALL_RECORDS)


@pytest.fixture
def bridge(env: dict[str, str], tmp_path: Path) -> Any:
    process = BridgeProcess(env, tmp_path / "bridge.log")
    yield process
    process.stop()


def wait_assigned(bridge: BridgeProcess) -> None:
    """Until the bridge has its partitions and has checked its destination (the check runs
    beside the first polls: a bucket deleted before it would stop the bridge instead)."""
    wait_for(lambda: "partitions_assigned" in (log := bridge.log())
             and "pipeline_started" in log, 60, "partition assignment and the destination checked",
             on_timeout=lambda: bridge.log()[-3000:])


def stuck_segments(bridge: BridgeProcess, gcs: GcsHandle, bucket: str, env: dict[str, str],
                   records: list[bytes]) -> dict[str, Any]:
    """Run the bridge, delete its bucket once it has checked it, produce ``records``: every
    segment gets stuck."""
    bridge.start()
    wait_assigned(bridge)
    gcs.client().bucket(bucket).delete(force=True)
    for start in range(0, len(records), 150):  # bursts: segments of several frames (polls)
        produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], records[start:start + 150])
        time.sleep(0.2)
    wal = Path(env["WAL_DIR"])

    def all_stuck() -> dict[str, Any] | None:
        report = inspect_json(wal, env)
        segs = report["segments"]
        held = sum(s["records"] for s in segs)
        if held == len(records) and segs and all(s["upload"] and s["upload"]["stuck"]
                                                 for s in segs):
            return report
        return None

    wait_for(all_stuck, 120, "every segment stuck", interval=1.0,
             on_timeout=lambda: bridge.log()[-3000:])
    assert bridge.terminate() == 0, bridge.log()[-3000:]
    gcs.create_bucket(bucket)
    return inspect_json(wal, env)


def test_inspect_shows_the_open_segment_while_the_bridge_runs_and_nothing_after(
        kafka: KafkaHandle, topic: str, env: dict[str, str], tmp_path: Path) -> None:
    """While running: the lock holder, the open segment's offsets per partition, no key yet;
    after a clean stop: an empty WAL and the shipped offsets."""
    env = {**env, "BATCH_SIZE": "100000", "BATCH_TIMEOUT": "600"}
    bridge = BridgeProcess(env, tmp_path / "bridge.log").start()
    wal = Path(env["WAL_DIR"])
    try:
        wait_assigned(bridge)
        produce(kafka.bootstrap, topic, [event(i) for i in range(600)])
        report = wait_for(lambda: (r := inspect_json(wal, env))["totals"]["records"] == 600
                          and r, 60, "600 records in the WAL")
        instance = json.loads((wal / "instance.json").read_text())["instance_id"]
        assert report["lock"] == {"locked": True, "pid": bridge.pid, "running": True}
        assert report["instance_id"] == instance
        (seg,) = report["segments"]
        assert (seg["state"], seg["records"], seg["key"], seg["damage"]) == ("open", 600, None,
                                                                              None)
        assert seg["tail"] is None or seg["tail"]["status"] == "in_progress"
        assert seg["ranges"] == [{"topic": topic, "partition": p, "first_offset": 0,
                                  "last_offset": 199, "records": 200} for p in range(3)]
        assert seg["age_s"] >= 0
        assert report["totals"]["by_state"] == {"open": 1, "sealed": 0, "converted": 0,
                                                "quarantined": 0}
        assert report["shipped"] == []
        assert [(p["partition"], p["pending_first_offset"], p["pending_last_offset"])
                for p in report["partitions"]] == [(0, 0, 199), (1, 0, 199), (2, 0, 199)]
        assert bridge.terminate() == 0
    finally:
        bridge.stop()

    after = inspect_json(wal, env)
    assert after["segments"] == []
    assert after["lock"]["locked"] is False
    assert after["shipped"] == [{"topic": topic, "partition": p, "next_offset": 200}
                                for p in range(3)]
    assert after["totals"]["records"] == 0


def test_stuck_segments_are_inspected_replayed_audited_and_queried(
        gcs: GcsHandle, topic: str, bucket: str, env: dict[str, str], bridge: BridgeProcess,
        tmp_path: Path) -> None:
    """Produce (with malformed records) into a bridge whose bucket vanished; inspect shows the
    stuck uploads; replay ships them; audit is clean; query counts every record."""
    bridge.start()
    wait_assigned(bridge)
    gcs.client().bucket(bucket).delete(force=True)
    produced = cli("produce", "--count", "1500", "--seed", "3", "--malformed-ratio", "0.05",
                   "--json", "--quiet", env=env)
    assert produced.returncode == 0, produced.stderr
    summary = json.loads(produced.stdout)
    assert (summary["sent"], summary["delivered"], summary["failed"]) == (1500, 1500, {})
    wal = Path(env["WAL_DIR"])
    wait_for(lambda: (r := inspect_json(wal, env))["totals"]["stuck"] >= 1
             and r["totals"]["records"] == 1500, 120, "stuck segments holding every record",
             on_timeout=lambda: bridge.log()[-3000:])
    assert bridge.terminate() == 0, bridge.log()[-3000:]

    report = inspect_json(wal, env)
    stuck = [s for s in report["segments"] if s["upload"] and s["upload"]["stuck"]]
    assert stuck
    for seg in stuck:
        assert seg["state"] == "converted"
        assert seg["key"].startswith("raw/dt=")
        assert seg["parquet_bytes"] > 0
        assert seg["upload"]["attempts"] >= 1
        assert "404" in seg["upload"]["last_error"]
    assert report["totals"]["stuck"] == len(stuck)

    gcs.create_bucket(bucket)
    before = sorted(p.name for p in wal.rglob("*"))
    plan = cli("replay", "--all", "--dry-run", env=env)
    assert plan.returncode == 0, plan.stderr
    for seg in report["segments"]:
        assert f"{seg['segment']:010d}" in plan.stdout
    assert "upload to raw/dt=" in plan.stdout
    assert sorted(p.name for p in wal.rglob("*")) == before

    replay = cli("replay", "--all", env=env)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert replay.stdout.count("ok     ") == len(report["segments"])
    assert inspect_json(wal, env)["segments"] == []

    audit = cli("audit", "--json", env=env)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    result = json.loads(audit.stdout)
    assert result["ok"] is True
    assert result["kafka"]["available"] is True
    assert result["totals"]["records"] == 1500
    for row in result["partitions"]:
        assert row["earliest"] == 0
        assert row["committed"] == row["latest"]
        assert row["landed"] == [[0, row["latest"] - 1]]
        assert (row["gaps"], row["holes"], row["duplicates"]) == ([], [], [])
        assert row["not_landed_tail"] is None

    query = cli("query", "--json", "SELECT (SELECT count(*) FROM events) AS events, "
                "(SELECT count(*) FROM dead_letters) AS dead", env=env)
    assert query.returncode == 0, query.stderr
    counts = json.loads(query.stdout)[0]
    assert counts == {"events": 1500 - summary["malformed"], "dead": summary["malformed"]}


def damage_one_frame(wal: Path) -> tuple[int, dict[int, list[int]]]:
    """Flip a byte in the second records frame of the first sealed segment with two or more;
    return the segment and the (partition -> offsets) that frame held."""
    for path in sorted((wal / "segments").glob("*.sealed")):
        data = bytearray(path.read_bytes())
        frames = [f for f in iter_frames(memoryview(bytes(data))) if f.kind == 1]
        if len(frames) < 2:
            continue
        batch = decode_records(frames[1])
        held: dict[int, list[int]] = defaultdict(list)
        for p, o in zip(batch.column("_partition").to_pylist(),
                        batch.column("_offset").to_pylist(), strict=True):
            held[p].append(o)
        data[frames[1].offset + 30] ^= 0x55
        path.write_bytes(bytes(data))
        return int(path.name.split(".")[0]), dict(held)
    raise AssertionError("no sealed segment has two records frames")


def drop_converted_file(wal: Path, seq: int) -> None:
    """Cut segment ``seq``'s Parquet file in half: without a complete converted file, recovery
    salvages the segment file itself."""
    parquet = wal / "outbox" / f"{seq:010d}.parquet"
    parquet.write_bytes(parquet.read_bytes()[: parquet.stat().st_size // 2])


def test_a_damaged_frame_is_read_again_from_kafka(
        gcs: GcsHandle, bucket: str, env: dict[str, str], bridge: BridgeProcess) -> None:
    """Recovery keeps the frames that verify; only the damaged frame's records come from Kafka
    (`replay --all` runs the re-fetch a running bridge runs by itself); every offset lands
    once and nothing is quarantined."""
    stuck_segments(bridge, gcs, bucket, env, [event(i) for i in range(900)])
    wal = Path(env["WAL_DIR"])
    seq, held = damage_one_frame(wal)
    drop_converted_file(wal, seq)

    replay = cli("replay", "--all", env=env)

    output = replay.stdout + replay.stderr
    assert replay.returncode == 0, output
    from_kafka = sum(len(v) for v in held.values())
    assert f"{from_kafka} records of its damaged frames read again from Kafka" in output
    assert (wal / "segments" / f"{seq:010d}.damaged").exists()
    report = inspect_json(wal, env)
    (done,) = report["refetched"]
    assert done["of_segment"] == seq
    assert done["records"] == from_kafka
    assert sorted((r["partition"], r["first_offset"], r["last_offset"])
                  for r in done["ranges"]) == sorted((p, min(o), max(o)) for p, o in held.items())
    assert report["quarantined"] == []
    assert report["unrecoverable"] == []
    audit = cli("audit", "--json", env=env)
    result = json.loads(audit.stdout)
    assert audit.returncode == 0, audit.stdout
    assert result["totals"]["records"] == 900
    assert result["totals"]["duplicates"] == 0


def test_offsets_deleted_from_kafka_are_reported_and_the_audit_finds_the_hole(
        kafka: KafkaHandle, gcs: GcsHandle, topic: str, bucket: str, env: dict[str, str],
        bridge: BridgeProcess) -> None:
    """A damaged frame whose offsets Kafka no longer holds: the re-fetch names exactly the
    offsets it cannot recover, inspect shows them as unrecoverable and they stay quarantined;
    every other record lands; --accept-loss releases them; audit names the missing offsets as
    not verifiable (Kafka no longer holds them) without failing."""
    stuck_segments(bridge, gcs, bucket, env, [event(i) for i in range(900)])
    wal = Path(env["WAL_DIR"])
    seq, held = damage_one_frame(wal)
    drop_converted_file(wal, seq)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    futures = admin.delete_records([TopicPartition(topic, p, max(o) + 1)
                                    for p, o in held.items()])
    for future in futures.values():
        future.result(30)

    refused = cli("replay", "--all", env=env)

    assert refused.returncode == 1, refused.stdout + refused.stderr
    for p, offsets in held.items():
        assert (f"not recovered: {topic}[{p}] {min(offsets)}-{max(offsets)} ({len(offsets)}): "
                "deleted from Kafka") in refused.stdout
    report = inspect_json(wal, env)
    assert sorted((u["partition"], u["first_offset"], u["last_offset"], u["of_segment"])
                  for u in report["unrecoverable"]) == sorted(
        (p, min(o), max(o), seq) for p, o in held.items())
    (lost,) = report["quarantined"]
    assert report["segments"] == []

    accepted = cli("replay", "--all", "--accept-loss", env=env)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    released = json.loads(
        (wal / "quarantine" / f"{lost['segment']:010d}.replayed.json").read_text())
    assert sorted((u["partition"], u["first_offset"], u["last_offset"])
                  for u in released["unrecovered"]) == sorted(
        (p, min(o), max(o)) for p, o in held.items())

    audit = cli("audit", "--json", env=env)
    assert audit.returncode == 0, audit.stdout
    result = json.loads(audit.stdout)
    lost_count = sum(len(o) for o in held.values())
    assert result["verification"]["unverifiable_offsets"] == lost_count
    assert sorted((row["partition"], u["first_offset"], u["last_offset"])
                  for row in result["partitions"] for u in row["unverifiable"]) == sorted(
        (p, min(o), max(o)) for p, o in held.items())
    assert result["totals"]["records"] == 900 - lost_count
    assert result["totals"]["duplicates"] == 0
    table = cli("audit", env=env).stdout
    for p, offsets in held.items():
        assert (f"{topic}[{p}] not verifiable: offsets {min(offsets)}-{max(offsets)} are below "
                f"the topic's earliest offset {max(offsets) + 1}") in table


def upload(client: Any, bucket: str, key: str, segment: int, kind_rows: dict[int, list[int]],
           topic: str) -> None:
    """A hand-made Parquet object with the footer keys the bridge writes."""
    offsets = [o for rows in kind_rows.values() for o in rows]
    partitions = [p for p, rows in kind_rows.items() for _ in rows]
    table = pa.table({"_kafka_topic": [topic] * len(offsets), "_kafka_partition": partitions,
                      "_kafka_offset": offsets})
    ranges = [{"topic": topic, "partition": p, "first_offset": min(r), "last_offset": max(r),
               "records": len(r)} for p, r in sorted(kind_rows.items())]
    table = table.replace_schema_metadata({
        "wal_bridge.ranges": json.dumps(ranges), "wal_bridge.records": str(len(offsets)),
        "wal_bridge.segment": str(segment), "wal_bridge.instance": "planted"})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    client.bucket(bucket).blob(key).upload_from_string(buf.getvalue())


def test_audit_finds_a_gap_and_a_duplicate_planted_in_a_bucket(
        kafka: KafkaHandle, gcs: GcsHandle, topic: str, bucket: str, env: dict[str, str]) -> None:
    """Footers with offsets 100-149 missing and 180-199 twice fail the audit, named exactly;
    a data file and its dead-letter file are one segment; watermarks come from Kafka."""
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    for i in range(220):
        producer.produce(topic, event(i), partition=0)
    for i in range(50):
        producer.produce(topic, event(i), partition=1)
    assert producer.flush(30) == 0
    client = gcs.client()
    upload(client, bucket, "raw/dt=2026-01-01/a.parquet", 1, {0: list(range(100))}, topic)
    upload(client, bucket, "raw/dt=2026-01-01/b.parquet", 2, {0: list(range(150, 200))}, topic)
    upload(client, bucket, "raw/dt=2026-01-02/c.parquet", 3, {0: list(range(180, 220))}, topic)
    dead = [3, 10, 20, 30, 40]
    upload(client, bucket, "raw/dt=2026-01-02/d.parquet", 4,
           {1: [o for o in range(50) if o not in dead]}, topic)
    upload(client, bucket, "dead-letter/dt=2026-01-02/d.parquet", 4, {1: dead}, topic)
    client.bucket(bucket).blob("raw/dt=2026-01-02/x.parquet").upload_from_string(b"not parquet")

    result = cli("audit", "--json", "--group-id", "nobody", env=env)

    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    rows = {p["partition"]: p for p in report["partitions"]}
    zero, one, two = rows[0], rows[1], rows[2]
    assert (zero["earliest"], zero["latest"], zero["committed"]) == (0, 220, None)
    assert zero["landed"] == [[0, 99], [150, 219]]
    assert [(g["first_offset"], g["last_offset"], g["missing"]) for g in zero["gaps"]] == [
        (100, 149, 50)]
    assert zero["gaps"][0]["after"] == ["raw/dt=2026-01-01/a.parquet"]
    assert zero["gaps"][0]["before"] == ["raw/dt=2026-01-01/b.parquet"]
    assert [(d["first_offset"], d["last_offset"], d["records"], d["keys"])
            for d in zero["duplicates"]] == [
        (180, 199, 20, ["raw/dt=2026-01-01/b.parquet", "raw/dt=2026-01-02/c.parquet"])]
    assert zero["records"] == 190
    assert (one["landed"], one["gaps"], one["holes"], one["duplicates"]) == ([[0, 49]], [], [],
                                                                             [])
    assert (one["files"], one["records"], one["latest"]) == (2, 50, 50)
    assert (two["files"], two["landed"], two["latest"]) == (0, [], 0)
    assert report["foreign_objects"] == ["raw/dt=2026-01-02/x.parquet"]
    assert report["totals"] == {"objects": 6, "foreign_objects": 1, "records": 240, "gaps": 1,
                                "missing_offsets": 50, "duplicates": 1,
                                "duplicated_records": 20}
    table = cli("audit", "--group-id", "nobody", env=env)
    assert "GAP        " in table.stdout
    assert f"{topic}[0] offsets 100-149 (50 missing)" in table.stdout
    assert f"{topic}[0] offsets 180-199 (20 records)" in table.stdout
