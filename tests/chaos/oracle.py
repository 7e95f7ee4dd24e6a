"""The chaos oracle: what was produced, what landed, and whether each record landed exactly once.

Ground truth is the topic itself, read back from the broker after the scenario: every
(partition, offset) it holds, with its key and value bytes. The producer's acknowledgements are
checked against it (an acknowledged record the topic does not hold would be the broker's loss,
not the bridge's). What landed is every Parquet object in the bucket, whatever its prefix.

A record has *landed intact* when a row carries its (``_kafka_partition``, ``_kafka_offset``), its
key bytes in ``_kafka_key``, and payload columns that re-encode to its value bytes exactly: the
workload writes each value as ``json.dumps`` of a flat object, so re-encoding the row's fields in
the same order must give back the very same bytes.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

Identity = tuple[int, int]  # (partition, offset)
Record = tuple[bytes | None, bytes]  # (key, value)

PAYLOAD_FIELDS = ("id", "run", "kind", "amount", "blob")


def make_record(run: str, i: int) -> Record:
    """Key and value of the i-th record of a run: a flat JSON object with a random blob."""
    value = json.dumps(
        {"id": i, "run": run, "kind": ("view", "click", "buy")[i % 3], "amount": i % 1000,
         "blob": os.urandom(12).hex()}
    ).encode()
    return f"{run}-{i}".encode(), value


class Workload:
    """Produces records of one run to a topic and remembers what the broker acknowledged.

    ``produce(n)`` writes n records and waits for them; ``start(rate)`` keeps writing about
    ``rate`` records a second from a thread until ``stop()``. The producer is idempotent, so a
    retry after a broker restart never writes a record twice.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int = 3) -> None:
        self.topic = topic
        self.partitions = partitions
        self.run = uuid.uuid4().hex[:8]
        self.acked: dict[Identity, Record] = {}
        self.errors: list[str] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "delivery.timeout.ms": 300_000,
        })
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        with self._lock:
            if err is not None:
                self.errors.append(str(err))
                return
            self.acked[(msg.partition(), msg.offset())] = (msg.key(), msg.value())

    def _send(self, count: int) -> None:
        for _ in range(count):
            key, value = make_record(self.run, self.sent)
            partition = self.sent % self.partitions
            while True:
                try:
                    self._producer.produce(self.topic, value, key=key, partition=partition,
                                           on_delivery=self._on_delivery)
                    break
                except BufferError:
                    self._producer.poll(0.1)
            self.sent += 1
        self._producer.poll(0)

    def produce(self, count: int, timeout: float = 120) -> None:
        """Write ``count`` records and wait until the broker acknowledged all of them."""
        self._send(count)
        self.flush(timeout)

    def flush(self, timeout: float = 120) -> None:
        left = self._producer.flush(timeout)
        assert left == 0, f"{left} records still unacknowledged after {timeout}s"
        assert not self.errors, f"delivery failed: {self.errors[:3]}"

    def start(self, rate: float, chunk: int = 20) -> Workload:
        """Keep producing about ``rate`` records a second in the background."""

        def loop() -> None:
            interval = chunk / rate
            next_at = time.monotonic()
            while not self._stop.is_set():
                self._send(chunk)
                self._producer.poll(0)
                next_at += interval
                self._stop.wait(max(0.0, next_at - time.monotonic()))

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="workload", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the background producer and drop what is unsent (teardown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        self._producer.purge()
        self._producer.flush(5)

    def stop(self, timeout: float = 300) -> None:
        """Stop the background producer and wait for every acknowledgement."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        self.flush(timeout)


def read_topic(bootstrap: str, topic: str, partitions: int = 3,
               timeout: float = 120) -> dict[Identity, Record]:
    """Every record the topic holds, by (partition, offset), read with a plain consumer."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"oracle-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "enable.partition.eof": False,
    })
    out: dict[Identity, Record] = {}
    try:
        ends: dict[int, int] = {}
        starts = []
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        consumer.assign(starts)
        deadline = time.monotonic() + timeout
        done: set[int] = set()
        while len(done) < len(ends):
            assert time.monotonic() < deadline, f"reading {topic} back timed out"
            for msg in consumer.consume(num_messages=10_000, timeout=1.0):
                if msg.error() is not None:
                    continue
                p, o = msg.partition(), msg.offset()
                out[(p, o)] = (msg.key(), msg.value())
                if o + 1 >= ends[p]:
                    done.add(p)
    finally:
        consumer.close()
    return out


class Landed:
    """The Parquet objects of a bucket, downloaded once each (objects are never rewritten)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self.objects: dict[str, list[dict[str, Any]]] = {}
        self.other_keys: list[str] = []

    def refresh(self) -> Landed:
        other = []
        for blob in self.client.list_blobs(self.bucket):
            if not blob.name.endswith(".parquet"):
                other.append(blob.name)
                continue
            if blob.name not in self.objects:
                table = pq.read_table(io.BytesIO(blob.download_as_bytes()))
                self.objects[blob.name] = table.to_pylist()
        self.other_keys = other
        return self

    def identities(self) -> set[Identity]:
        return {(r["_kafka_partition"], r["_kafka_offset"]) for rows in self.objects.values()
                for r in rows if "_kafka_partition" in r}

    def covers(self, expected: Iterable[Identity]) -> bool:
        landed = self.refresh().identities()
        return all(identity in landed for identity in expected)


def _reencode(row: dict[str, Any], value: bytes) -> bytes | None:
    try:
        original = json.loads(value)
    except ValueError:
        return None
    return json.dumps({k: row.get(k) for k in original}).encode()


@dataclass
class Verdict:
    """The oracle's figures for one scenario, and the identities behind each of them."""

    produced: int
    landed_rows: int
    objects: int
    missing: list[Identity] = field(default_factory=list)
    duplicated: dict[Identity, int] = field(default_factory=dict)  # identity -> extra copies
    unexpected: list[Identity] = field(default_factory=list)
    corrupted: list[tuple[str, Identity, str]] = field(default_factory=list)
    dead_letters: int = 0
    unacked_in_topic: int = 0
    acked_not_in_topic: list[Identity] = field(default_factory=list)
    duplicate_keys: dict[Identity, list[str]] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return len(self.missing)

    @property
    def duplicates(self) -> int:
        return sum(self.duplicated.values())

    def figures(self) -> dict[str, int]:
        return {"records": self.produced, "landed_rows": self.landed_rows,
                "objects": self.objects, "lost": self.lost, "duplicated": self.duplicates,
                "unexpected": len(self.unexpected), "corrupted": len(self.corrupted),
                "dead_letters": self.dead_letters}

    def problems(self, *, duplicates_allowed: bool = False) -> list[str]:
        out = []
        if self.acked_not_in_topic:
            out.append(f"{len(self.acked_not_in_topic)} acknowledged records are not in the "
                       f"topic, e.g. {self.acked_not_in_topic[:5]}")
        if self.missing:
            out.append(f"{self.lost} lost, e.g. {sorted(self.missing)[:5]}")
        if self.duplicated and not duplicates_allowed:
            sample = sorted(self.duplicated)[:5]
            out.append(f"{self.duplicates} duplicated, e.g. "
                       f"{[(i, self.duplicate_keys[i]) for i in sample]}")
        if self.unexpected:
            out.append(f"{len(self.unexpected)} never produced, e.g. {self.unexpected[:5]}")
        if self.corrupted:
            out.append(f"{len(self.corrupted)} landed with other bytes, e.g. {self.corrupted[:3]}")
        if self.dead_letters:
            out.append(f"{self.dead_letters} rows in dead-letter objects")
        return out

    def assert_exactly_once(self) -> None:
        """Every produced record landed once, intact, and nothing else landed."""
        problems = self.problems()
        assert not problems, "; ".join(problems)


def judge(expected: dict[Identity, Record], landed: Landed,
          acked: dict[Identity, Record] | None = None) -> Verdict:
    """Compare what the topic holds with every row that landed, byte for byte."""
    counts: Counter[Identity] = Counter()
    where: dict[Identity, list[str]] = {}
    verdict = Verdict(produced=len(expected), landed_rows=0, objects=len(landed.objects))
    for key, rows in landed.objects.items():
        if "/dead-letter/" in f"/{key}" or "_reason" in (rows[0] if rows else {}):
            verdict.dead_letters += len(rows)
            continue
        for row in rows:
            identity = (row["_kafka_partition"], row["_kafka_offset"])
            counts[identity] += 1
            where.setdefault(identity, []).append(key)
            verdict.landed_rows += 1
            record = expected.get(identity)
            if record is None:
                continue
            want_key, want_value = record
            if row.get("_kafka_key") != want_key:
                verdict.corrupted.append((key, identity, f"key {row.get('_kafka_key')!r}"))
            elif _reencode(row, want_value) != want_value:
                verdict.corrupted.append((key, identity, "payload differs"))
    verdict.missing = [i for i in expected if i not in counts]
    verdict.unexpected = sorted(i for i in counts if i not in expected)
    verdict.duplicated = {i: n - 1 for i, n in counts.items() if n > 1}
    verdict.duplicate_keys = {i: where[i] for i in verdict.duplicated}
    if acked is not None:
        verdict.acked_not_in_topic = sorted(
            i for i, rec in acked.items() if expected.get(i) != rec
        )
        verdict.unacked_in_topic = len(set(expected) - set(acked))
    return verdict

