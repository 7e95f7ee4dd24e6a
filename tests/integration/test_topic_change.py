"""Changing KAFKA_TOPIC under the same group and INSTANCE_ID, on the real broker.

A static member (``group.instance.id``) that comes back within the session timeout gets its
old assignment from the broker without a rebalance, whatever it now subscribes to (the classic
protocol compares only the protocol name; KAFKA-12759). The bridge must notice the stray
partitions, take nothing from them, and rejoin so that the configured topic is consumed.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support import (
    BridgeProcess,
    bridge_env,
    committed_offsets,
    produce,
    read_gcs,
    wait_for,
)

if TYPE_CHECKING:
    from conftest import GcsHandle, KafkaHandle


def event(i: int) -> bytes:
    return json.dumps({"event_id": i, "user": f"user-{i % 7}"}).encode()


def landed_by_topic(gcs: GcsHandle, bucket: str) -> Counter[tuple[str, int, int]]:
    """How often each (topic, partition, offset) landed under ``raw/``."""
    counts: Counter[tuple[str, int, int]] = Counter()
    for table in read_gcs(gcs.client(), bucket, "raw/").tables.values():
        counts.update(zip(table.column("_kafka_topic").to_pylist(),
                          table.column("_kafka_partition").to_pylist(),
                          table.column("_kafka_offset").to_pylist(), strict=True))
    return counts


def run_on_t1(kafka: KafkaHandle, gcs: GcsHandle, bucket: str, tmp_path: Path,
              stem: str) -> tuple[str, str, str, BridgeProcess]:
    """Two fresh topics; a bridge (one group, one INSTANCE_ID) lands T1's 30 records and stops
    on SIGTERM. Returns T1, T2, the group and the stopped bridge, to be started again."""
    unique = uuid.uuid4().hex[:8]
    t1 = kafka.create_topic(f"{stem}-t1-{unique}", partitions=3)
    t2 = kafka.create_topic(f"{stem}-t2-{unique}", partitions=3)
    group = f"g-{unique}"
    env = bridge_env(bootstrap=kafka.bootstrap, topic=t1, destination=f"gs://{bucket}/raw",
                     wal_dir=tmp_path / "wal", emulator=gcs.url, KAFKA_GROUP_ID=group,
                     INSTANCE_ID=f"same-id-{unique}")
    bridge = BridgeProcess(env, tmp_path / "bridge.log")
    try:
        produce(kafka.bootstrap, t1, [event(i) for i in range(30)])
        bridge.start()
        wait_for(lambda: sum(landed_by_topic(gcs, bucket).values()) >= 30, 90,
                 "T1's 30 records in the bucket", on_timeout=lambda: bridge.log()[-4000:])
        assert bridge.terminate() == 0
    except BaseException:
        bridge.stop()
        raise
    return t1, t2, group, bridge


def test_a_restart_on_another_topic_with_the_same_identity_lands_the_new_topic(
    kafka: KafkaHandle, gcs: GcsHandle, bucket: str, tmp_path: Path
) -> None:
    """Run on T1, SIGTERM, start again on T2 (same group, same INSTANCE_ID): T2's 50 records
    land exactly once, nothing more of T1 is taken or committed, and the log names T1's
    partitions as assigned outside the subscription."""
    t1, t2, group, bridge = run_on_t1(kafka, gcs, bucket, tmp_path, "topic-change")
    try:
        t1_committed = committed_offsets(kafka.bootstrap, group, t1)
        assert t1_committed == {0: 10, 1: 10, 2: 10}

        produce(kafka.bootstrap, t2, [event(1000 + i) for i in range(50)])
        produce(kafka.bootstrap, t1, [event(2000 + i) for i in range(9)])  # must stay unread
        first_run = len(bridge.log())
        bridge.start(KAFKA_TOPIC=t2)

        def t2_landed() -> int:
            return sum(n for (t, _, _), n in landed_by_topic(gcs, bucket).items() if t == t2)

        wait_for(lambda: t2_landed() >= 50, 120, "T2's 50 records in the bucket",
                 on_timeout=lambda: bridge.log()[first_run:][-4000:])
        assert bridge.terminate() == 0
        second_run = bridge.log()[first_run:]

        counts = landed_by_topic(gcs, bucket)
        assert not {k: n for k, n in counts.items() if n > 1}, "duplicates landed"
        assert sorted((p, o) for (t, p, o) in counts if t == t2) == sorted(
            (p, o) for p in range(3) for o in range(50 // 3 + (1 if p < 50 % 3 else 0)))
        assert sum(1 for (t, _, _) in counts if t == t1) == 30
        assert committed_offsets(kafka.bootstrap, group, t1) == t1_committed
        assert sum(committed_offsets(kafka.bootstrap, group, t2).values()) == 50

        stray = [json.loads(line) for line in second_run.splitlines()
                 if '"assignment_outside_subscription"' in line]
        assert stray, second_run[-4000:]
        assert sorted(stray[0]["partitions"]) == [f"{t1}[{p}]" for p in range(3)]
        assert stray[0]["level"] == "warning"
    finally:
        bridge.stop()


def test_a_restart_with_a_topic_added_under_the_same_identity_lands_both(
    kafka: KafkaHandle, gcs: GcsHandle, bucket: str, tmp_path: Path
) -> None:
    """Run on T1, SIGTERM, start again on T1,T2 at once (same group, same INSTANCE_ID): every
    partition handed back is of a configured topic, yet T2 would get no owner; the bridge
    remembers its last topics in WAL_DIR, sees the change, rejoins, and T2's records land
    exactly once beside T1's."""
    t1, t2, _, bridge = run_on_t1(kafka, gcs, bucket, tmp_path, "topic-added")
    try:
        assert json.loads((tmp_path / "wal" / "subscription.json").read_text()) == {
            "topics": [t1]}

        produce(kafka.bootstrap, t2, [event(1000 + i) for i in range(50)])
        produce(kafka.bootstrap, t1, [event(2000 + i) for i in range(9)])
        first_run = len(bridge.log())
        bridge.start(KAFKA_TOPIC=f"{t1},{t2}")
        wait_for(lambda: sum(landed_by_topic(gcs, bucket).values()) >= 89, 120,
                 "T2's 50 and T1's 9 new records in the bucket",
                 on_timeout=lambda: bridge.log()[first_run:][-4000:])
        assert bridge.terminate() == 0
        second_run = bridge.log()[first_run:]

        counts = landed_by_topic(gcs, bucket)
        assert not {k: n for k, n in counts.items() if n > 1}, "duplicates landed"
        assert sum(1 for (t, _, _) in counts if t == t2) == 50
        assert sum(1 for (t, _, _) in counts if t == t1) == 39
        assert '"subscription_changed"' in second_run
        assert json.loads((tmp_path / "wal" / "subscription.json").read_text()) == {
            "topics": [t1, t2]}
    finally:
        bridge.stop()
