"""The raw consume ceiling: a confluent-kafka loop that only consumes (child of scripts/bench).

Runs in the project's virtual environment, with the bridge's poll size and either librdkafka's
default settings (``--config defaults``: the raw ceiling) or the bridge's own client settings
(``--config bridge``, :func:`wal_bridge.consumer.consumer_config`, which bound the prefetch
queue to keep memory flat), so that the gap between the two is what those settings cost and
the gap to the bridge is everything it does with a batch: columns, Arrow, the WAL write and
fsync, commits, conversion and upload. Prints ``{"records": n, "bytes": b}`` lines on stdout
as it goes and exits once ``--expect`` records were consumed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from confluent_kafka import Consumer

from wal_bridge.config import load_settings
from wal_bridge.consumer import consumer_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--poll", type=int, default=5000, help="num_messages per consume()")
    parser.add_argument("--config", choices=("defaults", "bridge"), default="defaults")
    args = parser.parse_args()

    if args.config == "bridge":
        settings = load_settings({"KAFKA_BOOTSTRAP_SERVERS": args.bootstrap,
                                  "KAFKA_TOPIC": args.topic, "KAFKA_GROUP_ID": args.group})
        config = consumer_config(settings, f"{args.group}-ceiling")
    else:
        config = {"bootstrap.servers": args.bootstrap, "group.id": args.group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False}
    consumer = Consumer(config)
    consumer.subscribe([args.topic])
    records = size = 0
    last_report = 0.0
    try:
        while records < args.expect:
            messages = consumer.consume(num_messages=args.poll, timeout=0.5)
            values = [m.value() for m in messages if m.error() is None]
            records += len(values)
            size += sum(map(len, values))
            now = time.monotonic()
            if now - last_report >= 0.2 or records >= args.expect:
                print(json.dumps({"records": records, "bytes": size}), flush=True)
                last_report = now
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
