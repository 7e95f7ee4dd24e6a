"""The consumer's logic that needs no broker: client settings, statistics, lag, backpressure
(the WAL's cap and a hold from another stage), and the columns of a polled batch (built from
the client library's own Message objects)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message

from wal_bridge.config import Destination, Secret, Settings
from wal_bridge.consumer import (
    RESUME_FRACTION,
    BridgeConsumer,
    columns_of,
    consumer_config,
    high_watermarks_from_stats,
    lag_of,
    should_pause,
    stray_partitions,
)
from wal_bridge.wal.codec import RecordColumns
from wal_bridge.wal.log import Wal


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


def test_a_partition_without_known_offsets_has_no_watermark() -> None:
    """Before the broker reports offsets (both -1), or with no topics yet, nothing is claimed."""
    stats = {"topics": {"events": {"partitions": {"0": {"hi_offset": -1, "ls_offset": -1}}}}}
    assert high_watermarks_from_stats(json.dumps(stats), [("events", 0)]) == {}
    assert high_watermarks_from_stats(json.dumps({"topics": {}}), [("events", 0)]) == {}


def test_lag_is_what_kafka_holds_past_the_wal_never_negative() -> None:
    """End minus position per partition known to both; stale statistics give 0, not < 0."""
    positions = {("events", 0): 30, ("events", 1): 100, ("events", 2): 5}
    ends = {("events", 0): 50, ("events", 1): 90, ("other", 0): 7}
    assert lag_of(positions, ends) == {("events", 0): 20, ("events", 1): 0}


def test_lag_is_0_when_the_partition_ends_with_a_transaction_marker() -> None:
    """Last record at 6, commit marker at 7, end 8: the consumer's position (8, past the
    marker) says nothing is left; without it the marker would count as one record to go."""
    durable, ends = {("events", 0): 7}, {("events", 0): 8}
    assert lag_of(durable, ends) == {("events", 0): 1}
    assert lag_of(durable, ends, {("events", 0): 8}) == {("events", 0): 0}


def test_the_consumers_position_counts_only_when_ahead_of_the_wal() -> None:
    """A position behind the WAL (just assigned) or unknown (-1001) leaves the WAL's figure."""
    durable, ends = {("events", 0): 40, ("events", 1): 10}, {("events", 0): 50, ("events", 1): 12}
    read = {("events", 0): 30, ("events", 1): -1001}
    assert lag_of(durable, ends, read) == {("events", 0): 10, ("events", 1): 2}


@pytest.mark.parametrize(("wal_bytes", "paused", "expected"), [
    (1001, False, True),   # over the cap: pause
    (1000, False, False),  # at the cap: keep going
    (1000, True, True),    # paused: stay paused until well under the cap
    (int(1000 * RESUME_FRACTION) + 1, True, True),
    (int(1000 * RESUME_FRACTION), True, False),  # back under 90 %: resume
    (0, True, False),
])
def test_backpressure_pauses_over_the_cap_and_resumes_well_under_it(
        wal_bytes: int, paused: bool, expected: bool) -> None:
    """Pause above WAL_MAX_BYTES; resume only below RESUME_FRACTION of it (hysteresis)."""
    assert should_pause(wal_bytes, 1000, paused=paused) is expected


def test_the_consumer_commits_itself_only_what_is_durable() -> None:
    """Auto-commit and the auto offset store are off, the assignment is cooperative-sticky,
    and the instance id is the static group member id."""
    settings = Settings(bootstrap_servers="broker:9092", group_id="g1")
    config = consumer_config(settings, "inst-1")
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert config["group.id"] == "g1"
    assert config["group.instance.id"] == "inst-1"
    assert config["client.id"] == "wal-bridge-inst-1"
    assert config["bootstrap.servers"] == "broker:9092"


def test_the_consumer_settings_are_ones_librdkafka_accepts(tmp_path: Path) -> None:
    """Every key and value, SASL included, is accepted by the real client (an unknown
    property or a bad value raises at construction; no broker is contacted before poll)."""
    settings = Settings(bootstrap_servers="127.0.0.1:1", security_protocol="sasl_plaintext",
                        sasl_mechanism="plain", sasl_username="u", sasl_password=Secret("p"))
    config = consumer_config(settings, "inst-1")
    assert config["sasl.password"] == "p"
    consumer = Consumer(config)
    consumer.close()


def test_columns_of_a_polled_batch_keep_every_field_of_each_record() -> None:
    """Topic, partition, offset, timestamp, key, value and headers, in poll order; a missing
    key, value or header list stays None."""
    messages = [
        Message(topic="events", partition=2, offset=41, timestamp=(1, 1_700_000_000_000),
                key=b"k1", value=b'{"n": 1}', headers=[("trace", b"abc"), ("empty", None)]),
        Message(topic="events", partition=0, offset=7, timestamp=(1, 1_700_000_000_001),
                key=None, value=None, headers=None),
    ]
    columns = columns_of(messages)
    assert list(columns.topics) == ["events", "events"]
    assert list(columns.partitions) == [2, 0]
    assert list(columns.offsets) == [41, 7]
    assert list(columns.timestamps) == [1_700_000_000_000, 1_700_000_000_001]
    assert list(columns.keys) == [b"k1", None]
    assert list(columns.values) == [b'{"n": 1}', None]
    assert list(columns.headers) == [[("trace", b"abc"), ("empty", None)], None]
    assert columns.to_arrow().num_rows == 2


def test_partitions_of_topics_not_configured_are_stray() -> None:
    """An assignment is checked by exact topic name: another topic, even one whose name starts
    like a configured one, is stray; partitions of configured topics never are."""
    assigned = [("t1", 2), ("t2", 0), ("t1", 0), ("t2-old", 1)]
    assert stray_partitions(assigned, ("t2",)) == [("t1", 0), ("t1", 2), ("t2-old", 1)]
    assert stray_partitions(assigned, ("t1", "t2", "t2-old")) == []
    assert stray_partitions([], ("t2",)) == []


def test_a_hold_from_another_stage_pauses_consuming_until_it_lifts(tmp_path: Path) -> None:
    """While ``hold`` gives a reason (the sealer's: the schema registry does not answer) the
    consumer is paused with that reason; a WAL over its cap takes precedence; once both are
    gone it resumes (the real client, never connected: no broker is needed to pause)."""
    reason: list[str | None] = ["schema registry unreachable: schema id 2: ConnectError"]
    settings = Settings(bootstrap_servers="127.0.0.1:1", group_id="g1", wal_max_bytes=4096)
    wal = Wal.open(tmp_path / "wal", keys=Destination("gs", "bucket", "raw"), batch_size=50)
    consumer = BridgeConsumer(settings, wal, hold=lambda: reason[0])
    try:
        consumer.step(timeout=0.01)
        assert consumer.paused
        assert consumer.pause_reason == reason[0]
        wal.append(RecordColumns(["events"] * 40, [0] * 40, list(range(40)), [1] * 40,
                                 [None] * 40, [b"x" * 200] * 40, [None] * 40).to_arrow())
        consumer.step(timeout=0.01)
        assert str(consumer.pause_reason).startswith("WAL holds")
        reason[0] = None
        consumer.step(timeout=0.01)
        assert consumer.paused  # the WAL is still over its cap
        wal.close()
        wal = Wal.open(tmp_path / "wal2", keys=Destination("gs", "bucket", "raw"), batch_size=50)
        consumer.wal = wal
        consumer.step(timeout=0.01)
        assert not consumer.paused
        assert consumer.pause_reason is None
    finally:
        consumer.close()
        wal.close()
