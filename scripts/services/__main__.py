"""Command line: ``python -m scripts.services provision|up|status|down``."""

from __future__ import annotations

import argparse
import sys

from . import dev, provision_all
from .errors import ServiceError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/dev-services",
        description="Kafka (KRaft), a GCS emulator, Toxiproxy, a BigQuery emulator and a "
        "schema registry (Apicurio) on loopback, from a cache.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "provision", help="fill the cache (jars, binaries) for the tests; starts nothing"
    )
    start = commands.add_parser("up", help="start the services in the background")
    start.add_argument("--kafka-port", type=int, default=0, help="default: a free port")
    start.add_argument("--gcs-port", type=int, default=0, help="default: a free port")
    start.add_argument("--toxiproxy-port", type=int, default=0, help="default: a free port")
    start.add_argument("--bigquery-port", type=int, default=0, help="default: a free port")
    start.add_argument(
        "--schema-registry-port", type=int, default=0, help="default: a free port"
    )
    start.add_argument("--topic", default="events-stream", help="topic to create (3 partitions)")
    start.add_argument("--bucket", default="wal-bridge", help="bucket to create")
    show = commands.add_parser("status", help="show the running services and the export lines")
    show.add_argument("--env", action="store_true", help="print only the export lines")
    commands.add_parser("down", help="stop the services started by `up`")
    args = parser.parse_args(argv)
    try:
        if args.command == "provision":
            provision_all()
            return 0
        if args.command == "up":
            return dev.up(
                args.kafka_port,
                args.gcs_port,
                args.toxiproxy_port,
                args.topic,
                args.bucket,
                bigquery_port=args.bigquery_port,
                schema_registry_port=args.schema_registry_port,
            )
        if args.command == "status":
            return dev.status(args.env)
        return dev.down()
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
