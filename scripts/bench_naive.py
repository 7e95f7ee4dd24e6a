"""The seed's naive design, for comparison (child of scripts/bench, in the bench venv).

kafka-python with auto-commit, each value decoded with ``json.loads`` into a list in memory,
flushed at 5,000 records or 60 seconds through ``pandas.DataFrame(...).to_parquet`` (Snappy)
and uploaded with google-cloud-storage. Nothing is durable before the upload: a crash loses
the list, and auto-commit may already have committed it. Object names follow the seed's
``raw/{date}/{timestamp}.parquet`` with a counter added (a second-resolution timestamp alone
would overwrite objects at these rates). Prints ``{"records": n, ...}`` after each upload.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from datetime import UTC, datetime

import pandas as pd
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from kafka import KafkaConsumer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--emulator", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="naive")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--batch-timeout", type=float, default=60.0)
    args = parser.parse_args()

    client = storage.Client(project="bench", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": args.emulator})
    bucket = client.bucket(args.bucket)
    consumer = KafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
        auto_offset_reset="earliest", enable_auto_commit=True,
        value_deserializer=json.loads,
    )
    buffer: list[dict[str, object]] = []
    landed = objects = written = 0
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal landed, objects, written, last_flush
        frame = pd.DataFrame(buffer)
        data = io.BytesIO()
        frame.to_parquet(data, compression="snappy", index=False)
        now = datetime.now(tz=UTC)
        key = f"{args.prefix}/{now:%Y-%m-%d}/{now:%Y%m%dT%H%M%S}-{objects:06d}.parquet"
        bucket.blob(key).upload_from_string(data.getvalue(),
                                            content_type="application/octet-stream")
        landed += len(buffer)
        objects += 1
        written += data.tell()
        buffer.clear()
        last_flush = time.monotonic()
        print(json.dumps({"records": landed, "objects": objects, "bytes": written}), flush=True)

    try:
        while True:
            polled = consumer.poll(timeout_ms=1000)
            for messages in polled.values():
                for message in messages:
                    buffer.append(message.value)
                    if len(buffer) >= args.batch_size:
                        flush()
            if buffer and time.monotonic() - last_flush >= args.batch_timeout:
                flush()
    except KeyboardInterrupt:
        return 0
    finally:
        consumer.close()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: leave like Ctrl-C
    sys.exit(main())
