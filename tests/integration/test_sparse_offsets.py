"""Audit and lag on topics whose offsets are not dense: compaction and transactions.

A compacted topic has offsets the log cleaner removed; a transactional producer leaves commit
and abort markers, and aborted records that a read_committed consumer never gets. The bridge
runs as a subprocess on the real broker; audit runs as the operator runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.integration.test_metrics import free_port, scrape, value
from tests.support import BridgeProcess, bridge_env, read_dir, wait_for
from wal_bridge.parquet import RANGES_KEY, RECORDS_KEY

if TYPE_CHECKING:
    from tests.conftest import KafkaHandle


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wal_bridge.cli", *args], env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def audit(env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    """``wal_bridge audit --json`` and the table, as (exit code, report, table)."""
    result = cli("audit", "--json", env=env)
    table = cli("audit", env=env)
    assert result.returncode == table.returncode, table.stdout + table.stderr
    return result.returncode, json.loads(result.stdout), table.stdout


def offsets_in_kafka(bootstrap: str, topic: str) -> list[int]:
    """The offsets a read_committed consumer gets from partition 0, start to end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                         "enable.partition.eof": True, "isolation.level": "read_committed"})
    got: list[int] = []
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is None:
                continue
            if m.error() is not None or (offset := m.offset()) is None:
                break  # end of the partition
            got.append(offset)
    finally:
        consumer.close()
    return got


def drop_row(path: Path, offset: int) -> None:
    """Rewrite a landed file without the row of ``offset``, its footer counting one row less:
    a record lost after it was consumed."""
    table = pq.read_table(path)
    metadata = dict(table.schema.metadata)
    keep = [o != offset for o in table.column("_kafka_offset").to_pylist()]
    assert not all(keep), f"offset {offset} is not in {path}"
    table = table.filter(keep)
    ranges = json.loads(metadata[RANGES_KEY.encode()])
    for r in ranges:
        if r["first_offset"] <= offset <= r["last_offset"]:
            r["records"] -= 1
    metadata[RANGES_KEY.encode()] = json.dumps(ranges).encode()
    metadata[RECORDS_KEY.encode()] = str(table.num_rows).encode()
    pq.write_table(table.replace_schema_metadata(metadata), path)


def file_with(root: Path, offset: int) -> Path:
    landed = read_dir(root, "raw")
    for key, table in landed.tables.items():
        if offset in table.column("_kafka_offset").to_pylist():
            return root / key
    raise AssertionError(f"no landed file holds offset {offset}")


def run_until_landed(env: dict[str, str], tmp_path: Path, rows: int) -> BridgeProcess:
    bridge = BridgeProcess(env, tmp_path / "bridge.log").start()
    dest = Path(env["DESTINATION"].removeprefix("file://"))
    wait_for(lambda: (dest / "raw").exists() and read_dir(dest, "raw").rows == rows, 90,
             f"{rows} rows landed", on_timeout=lambda: bridge.log()[-3000:])
    return bridge


def test_a_compacted_topic_audits_clean_and_a_lost_row_is_still_a_gap(
        kafka: KafkaHandle, tmp_path: Path) -> None:
    """The cleaner removes offsets 0, 2 and 6; the bridge lands the rest once; audit exits 0
    with no gap and counts the two removed offsets inside the landed range as holding no
    record. A row then deleted from the landed file is reported as a gap, exactly."""
    topic = kafka.create_topic(f"compacted-{uuid.uuid4().hex[:8]}", 1, {
        "cleanup.policy": "compact", "segment.ms": "200", "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100", "min.compaction.lag.ms": "0"})
    producer = Producer({"bootstrap.servers": kafka.bootstrap})
    batches = [["acct-1", "acct-2", "acct-1", "acct-3", "acct-1", "acct-9"],  # offsets 0-5
               ["acct-4", "acct-5", "acct-4"],  # 6-8: rolls the first segment
               ["acct-6"]]  # 9: rolls the second
    offset = 0
    for keys in batches:
        for key in keys:
            producer.produce(topic, json.dumps({"account": key, "n": offset}).encode(),
                             key=key.encode(), partition=0)
            offset += 1
        assert producer.flush(30) == 0
        time.sleep(0.5)  # past segment.ms: the next record starts a new segment
    survivors = [1, 3, 4, 5, 7, 8, 9]
    wait_for(lambda: offsets_in_kafka(kafka.bootstrap, topic) == survivors, 90,
             "the log cleaner to remove offsets 0, 2 and 6", interval=1.0)
    dest = tmp_path / "dest"
    env = bridge_env(bootstrap=kafka.bootstrap, topic=topic, destination=f"file://{dest}",
                     wal_dir=tmp_path / "wal", BATCH_TIMEOUT="1")
    bridge = run_until_landed(env, tmp_path, 7)
    assert bridge.terminate() == 0, bridge.log()[-3000:]
    assert sorted(o for _, o in read_dir(dest, "raw").identities()) == survivors

    code, report, table = audit(env)

    assert code == 0, table
    (row,) = report["partitions"]
    assert (row["gaps"], row["holes"], row["unverifiable"]) == ([], [], [])
    assert row["landed"] == [[1, 9]]
    assert row["records"] == 7
    assert row["no_record_offsets"] == 2  # offsets 2 and 6, inside the landed range
    assert "\nGAP " not in table
    assert "OK: no gaps, no duplicates" in table

    drop_row(file_with(dest, 4), 4)
    code, report, table = audit(env)

    assert code == 1, table
    (row,) = report["partitions"]
    assert [(h["first_offset"], h["last_offset"], h["missing"], h["verified"])
            for h in row["holes"]] == [(4, 4, 1, True)]
    assert f"GAP        {topic}[0] offsets 4-4 (1 missing) inside" in table
    assert report["totals"]["missing_offsets"] == 1


def test_a_transactional_topic_lands_the_committed_records_audits_clean_and_lag_reaches_0(
        kafka: KafkaHandle, tmp_path: Path) -> None:
    """Committed 0-2 (marker 3), aborted 4-5 (marker 6), committed 7-8 (marker 9, the end):
    the bridge lands 0-2 and 7-8 only, audit exits 0 with no gap and nothing "not landed
    yet", the lag gauge reaches 0 although the partition ends with a marker; a row deleted
    from a landed file is a gap."""
    topic = kafka.create_topic(f"txn-{uuid.uuid4().hex[:8]}", 1)
    port = free_port()
    dest = tmp_path / "dest"
    env = bridge_env(bootstrap=kafka.bootstrap, topic=topic, destination=f"file://{dest}",
                     wal_dir=tmp_path / "wal", BATCH_TIMEOUT="1", METRICS_PORT=str(port))
    producer = Producer({"bootstrap.servers": kafka.bootstrap,
                         "transactional.id": f"txn-{uuid.uuid4().hex}"})
    producer.init_transactions(60)

    def transaction(values: list[str], *, commit: bool) -> None:
        producer.begin_transaction()
        for v in values:
            producer.produce(topic, json.dumps({"v": v}).encode(), partition=0)
        producer.flush(30)  # the records reach the log, aborted ones too
        (producer.commit_transaction if commit else producer.abort_transaction)(30)

    transaction(["a", "b", "c"], commit=True)
    bridge = run_until_landed(env, tmp_path, 3)  # a first file: 0-2
    transaction(["x", "y"], commit=False)
    transaction(["d", "e"], commit=True)
    wait_for(lambda: read_dir(dest, "raw").rows == 5, 60, "5 rows landed",
             on_timeout=lambda: bridge.log()[-3000:])
    try:
        # Two statistics intervals (5 s each): the client's end offset is the current one, so
        # a 0 is not a stale figure behind the position.
        time.sleep(11)
        wait_for(lambda: value(scrape(port), "wal_bridge_consumer_lag", topic=topic,
                               partition="0") == 0, 15, "the lag gauge at 0",
                 on_timeout=lambda: str(value(scrape(port), "wal_bridge_consumer_lag",
                                              topic=topic, partition="0")))
    finally:
        assert bridge.terminate() == 0, bridge.log()[-3000:]
    landed = read_dir(dest, "raw")
    assert sorted(o for _, o in landed.identities()) == [0, 1, 2, 7, 8]
    assert len(landed.keys) == 2

    code, report, table = audit(env)

    assert code == 0, table
    (row,) = report["partitions"]
    assert (row["earliest"], row["latest"]) == (0, 10)
    assert row["landed"] == [[0, 2], [7, 8]]
    assert (row["gaps"], row["holes"], row["unverifiable"]) == ([], [], [])
    assert row["no_record_offsets"] == 4  # the commit marker 3, aborted 4-5, abort marker 6
    assert row["not_landed_tail"] is None  # 9 is the last commit marker
    assert "\nGAP " not in table

    drop_row(file_with(dest, 1), 1)
    code, report, table = audit(env)

    assert code == 1, table
    (row,) = report["partitions"]
    assert [(h["first_offset"], h["last_offset"], h["missing"]) for h in row["holes"]] == [
        (1, 1, 1)]
    assert row["no_record_offsets"] == 4
    assert f"GAP        {topic}[0] offsets 1-1 (1 missing) inside" in table
