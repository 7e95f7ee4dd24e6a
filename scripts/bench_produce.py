"""Producing a benchmark backlog (JSON or Avro events alike): round-robin over the partitions,
in record batches compressed as asked, every event acknowledged, the end offsets checked."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def produce_backlog(bootstrap: str, topic: str, events: int, partitions: int, *,
                    value_of: Callable[[int], bytes], progress: Any,
                    compression: str = "none") -> dict[str, Any]:
    """Produce ``value_of(i)`` for ``i`` in ``0..events-1`` into ``topic``, event ``i`` to
    partition ``i % partitions``, with librdkafka's ``compression.type`` ``compression``
    (none, lz4, zstd, snappy or gzip). ``progress`` is the benchmark's ``Progress``.

    Returns ``events``, ``payload_bytes``, ``mean_event_bytes``, ``duration_s``,
    ``records_per_s`` and ``compression``. Raises RuntimeError when the broker did not
    acknowledge every event, or the topic then holds another number of records.
    """
    from confluent_kafka import Consumer, Producer, TopicPartition

    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
        "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576, "compression.type": compression,
    })
    started = time.monotonic()
    payload_bytes = 0
    for i in range(events):
        value = value_of(i)
        payload_bytes += len(value)
        while True:
            try:
                producer.produce(topic, value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 20_000 == 0:
            producer.poll(0)
            progress.update(i)
    left = producer.flush(300)
    elapsed = time.monotonic() - started
    progress.update(events, force=True)
    progress.close()
    if left:
        raise RuntimeError(f"{left} events of {topic} were not acknowledged by the broker")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-watermarks"})
    try:
        ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in range(partitions)]
    finally:
        consumer.close()
    if sum(ends) != events:
        raise RuntimeError(f"{topic} holds {sum(ends)} records, expected {events}")
    return {"events": events, "payload_bytes": payload_bytes,
            "mean_event_bytes": round(payload_bytes / events, 1),
            "duration_s": round(elapsed, 2), "records_per_s": round(events / elapsed),
            "compression": compression}
