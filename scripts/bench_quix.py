"""Quix Streams with its FileSink writing Snappy Parquet, for comparison (child of scripts/bench).

Runs in the bench venv. Quix Streams' FileSink ships local, S3 and Azure destinations but none
for Google Cloud Storage, so this adds one the way its S3 sink is written: a FileSink subclass
whose ``_write`` uploads the serialized batch with google-cloud-storage (to the emulator).
Format, batching and commits are Quix's defaults: ``ParquetFormat`` (Snappy), one file per
topic partition per checkpoint, a checkpoint every ``commit_interval`` (5 s), the sink flushed
before the offsets are committed. Prints ``{"records": n, ...}`` after each file is written.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from quixstreams import Application
from quixstreams.sinks import SinkBatch
from quixstreams.sinks.community.file.base import FileSink
from quixstreams.sinks.community.file.formats import ParquetFormat


class GcsFileSink(FileSink):
    """FileSink to a GCS bucket: ``{directory}/{topic}/{partition}/{start_offset}.parquet``."""

    def __init__(self, client: storage.Client, bucket: str, directory: str) -> None:
        super().__init__(directory=directory, format=ParquetFormat(compression="snappy"))
        self._client = client
        self._bucket_name = bucket
        self._bucket: storage.Bucket | None = None  # set by setup(), when Quix starts the sink
        self.records = self.objects = self.bytes = 0

    def setup(self) -> None:
        self._bucket = self._client.get_bucket(self._bucket_name)  # fails early if missing

    def _write(self, data: bytes, batch: SinkBatch) -> None:
        if self._bucket is None:
            self.setup()
        self._bucket.blob(str(self._path(batch))).upload_from_string(
            data, content_type="application/octet-stream"
        )
        self.records += batch.size
        self.objects += 1
        self.bytes += len(data)
        print(json.dumps({"records": self.records, "objects": self.objects,
                          "bytes": self.bytes}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--emulator", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default="quix")
    args = parser.parse_args()

    client = storage.Client(project="bench", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": args.emulator})
    app = Application(
        broker_address=args.bootstrap, consumer_group=args.group,
        auto_offset_reset="earliest", state_dir=tempfile.mkdtemp(prefix="bench-quix-state-"),
    )
    topic = app.topic(args.topic, value_deserializer="json")
    app.dataframe(topic).sink(GcsFileSink(client, args.bucket, args.prefix))
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
