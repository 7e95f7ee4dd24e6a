"""``wal_bridge produce``: realistic test events, with a share of malformed ones, into a topic.

Events look like a product's click stream: ``event_id`` (UUID), ``user_id``, ``session_id``,
``event_type``, ``amount``, ``currency``, ``ts`` (ISO 8601, UTC) and a nested ``device``
object. They are keyed by ``user_id``, so one user's events stay in order in one partition.
``--malformed-ratio`` mixes in records the bridge must send to the dead-letter location: not
JSON, JSON that is not an object, invalid UTF-8, empty, and larger than MAX_RECORD_BYTES.
``--seed`` (with ``--start-time``) makes the stream repeatable.

``--format avro`` sends the same events Avro-encoded in the Confluent wire format (magic byte
0, the 4-byte schema id, the Avro body): EVENT_AVRO_SCHEMA is registered with the schema
registry (``--schema-registry-url`` / SCHEMA_REGISTRY_URL) under the topic's value subject
(``{topic}-value``, the TopicNameStrategy), ``ts`` as a ``timestamp-millis`` and ``device`` as
a nested record. Malformed records go out as they are, so none carries the magic byte.

How long it runs: ``--count N`` records, ``--rate R --duration S`` seconds, or ``--rate R`` alone
until SIGTERM or SIGINT (the compose stack's producer). A first SIGTERM/SIGINT, in any mode,
stops sending, waits for the broker to acknowledge what was sent, prints the summary and exits
0 (1 if records were not delivered); a second one ends the process at once.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from wal_bridge.commands.common import (
    KAFKA_SECURITY,
    LOGGING,
    build_settings,
    echo_json,
    settings_options,
    specs,
)
from wal_bridge.errors import ConfigError, WalBridgeError

EVENT_TYPES = ("page_view", "click", "search", "add_to_cart", "purchase", "signup")
EVENT_WEIGHTS = (40, 25, 12, 12, 8, 3)
PRICED = frozenset({"add_to_cart", "purchase"})
CURRENCIES = ("EUR", "USD", "GBP")
OSES = (("ios", ("17.5", "18.1")), ("android", ("14", "15")), ("web", ("chrome", "firefox")))
LOCALES = ("en-GB", "de-DE", "fr-FR", "en-US", "es-ES")
MALFORMED_KINDS = ("not_json", "not_object", "invalid_utf8", "empty", "oversized")
FORMATS = ("json", "avro")
# The registry settings produce takes (SCHEMA_REGISTRY_URL, its basic auth and TLS).
REGISTRY = ("schema_registry_url", "schema_registry_user_info", "schema_registry_ca_location",
            "schema_registry_certificate_location", "schema_registry_key_location",
            "schema_registry_key_password")

# The Avro schema of EventStream._event's dicts, field for field (a unit test keeps the two
# together): ts is the same instant as a timestamp-millis, device a nested record.
EVENT_AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Event",
    "namespace": "wal_bridge.produce",
    "doc": "A test event of `wal_bridge produce`: one action of a user in a product.",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "user_id", "type": "string"},
        {"name": "session_id", "type": "string"},
        {"name": "event_type", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "currency", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "device", "type": {
            "type": "record",
            "name": "Device",
            "fields": [
                {"name": "os", "type": "string"},
                {"name": "os_version", "type": "string"},
                {"name": "app_version", "type": "string"},
                {"name": "locale", "type": "string"},
            ],
        }},
    ],
}


@dataclass(frozen=True)
class Event:
    key: bytes
    value: bytes
    kind: str  # "event", or one of MALFORMED_KINDS


def encode_json(event: dict[str, Any]) -> bytes:
    """An event as the JSON bytes ``produce`` sends by default."""
    return json.dumps(event).encode()


class EventStream:
    """An endless, seedable stream of events, ``malformed_ratio`` of them malformed.

    ``encode`` turns an event's dict into the record value (default: JSON); malformed records
    are the same bytes whatever ``encode`` is.
    """

    def __init__(self, seed: int | None = None, malformed_ratio: float = 0.0,
                 max_record_bytes: int = 1024 * 1024, start: datetime | None = None,
                 users: int = 1000, *,
                 encode: Callable[[dict[str, Any]], bytes] = encode_json) -> None:
        if not 0.0 <= malformed_ratio <= 1.0:
            raise ValueError("malformed_ratio must be between 0 and 1")
        self.rng = random.Random(seed)  # noqa: S311 - test data, not secrets
        self.malformed_ratio = malformed_ratio
        self.max_record_bytes = max_record_bytes
        self.ts = start or datetime.now(UTC)
        self.users = [f"user-{i:05d}" for i in range(max(1, users))]
        self.sessions: dict[str, str] = {}
        self.encode = encode

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        rng = self.rng
        self.ts += timedelta(milliseconds=rng.randint(0, 2000))
        user = rng.choice(self.users)
        if self.malformed_ratio and rng.random() < self.malformed_ratio:
            kind = rng.choice(MALFORMED_KINDS)
            return Event(user.encode(), self._malformed(kind, user), kind)
        return Event(user.encode(), self.encode(self._event(user)), "event")

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _event(self, user: str) -> dict[str, Any]:
        rng = self.rng
        event_type = rng.choices(EVENT_TYPES, EVENT_WEIGHTS)[0]
        if event_type == "signup" or user not in self.sessions or rng.random() < 0.05:
            self.sessions[user] = self._uuid()
        os_name, versions = rng.choice(OSES)
        amount = round(rng.uniform(1, 400), 2) if event_type in PRICED else 0.0
        return {
            "event_id": self._uuid(),
            "user_id": user,
            "session_id": self.sessions[user],
            "event_type": event_type,
            "amount": amount,
            "currency": rng.choice(CURRENCIES),
            "ts": self.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "device": {
                "os": os_name,
                "os_version": rng.choice(versions),
                "app_version": f"4.{rng.randint(0, 12)}.{rng.randint(0, 9)}",
                "locale": rng.choice(LOCALES),
            },
        }

    def _malformed(self, kind: str, user: str) -> bytes:
        rng = self.rng
        if kind == "not_json":
            return rng.choice([b"not json at all", b'{"user_id": "' + user.encode() + b'", ',
                               b"event_type=click&amount=3"])
        if kind == "not_object":
            return rng.choice([b"[1, 2, 3]", b'"a plain string"', b"42", b"null", b"true"])
        if kind == "invalid_utf8":
            return b'{"user_id": "' + user.encode() + b'", "note": "\xff\xfe\xc3\x28"}'
        if kind == "empty":
            return b""
        padding = "x" * (self.max_record_bytes + 1024)
        return json.dumps({"user_id": user, "event_type": "click", "blob": padding}).encode()


@dataclass(frozen=True)
class AvroEncoding:
    """How ``--format avro`` encodes: the registered schema's id and subject, and the encoder."""

    subject: str
    schema_id: int
    encode: Callable[[dict[str, Any]], bytes]


def avro_encoding(registry_conf: dict[str, str], topic: str) -> AvroEncoding:
    """Register EVENT_AVRO_SCHEMA under ``{topic}-value`` and build the wire-format encoder.

    ``registry_conf``: a ``SchemaRegistryClient`` configuration (``Settings.registry_config``).
    The encoder takes an event dict as EventStream makes it (``ts`` as ISO 8601 text) and
    returns magic byte 0, the schema id (4 bytes, big-endian) and the Avro body. Raises
    WalBridgeError when the registry cannot be reached or refuses the schema.
    """
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    schema_str = json.dumps(EVENT_AVRO_SCHEMA)
    subject = f"{topic}-value"
    client = SchemaRegistryClient(registry_conf)
    try:
        schema_id = client.register_schema(subject, Schema(schema_str, "AVRO"))
    except Exception as exc:  # its own errors and its HTTP client's (connection refused, TLS)
        raise WalBridgeError(
            f"cannot register the events' Avro schema as {subject} at {registry_conf['url']}: "
            f"{exc}; check SCHEMA_REGISTRY_URL (--schema-registry-url) and that the registry "
            "is up") from exc
    serializer = AvroSerializer(client, schema_str, conf={"auto.register.schemas": False})
    context = SerializationContext(topic, MessageField.VALUE)

    def encode(event: dict[str, Any]) -> bytes:
        ts = datetime.fromisoformat(event["ts"])
        payload: bytes = serializer({**event, "ts": ts}, context)
        return payload

    return AvroEncoding(subject, schema_id, encode)


@dataclass
class ProduceReport:
    """What a produce run sent and what the broker acknowledged."""

    topic: str
    sent: int = 0
    delivered: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # error name -> count
    kinds: Counter[str] = field(default_factory=Counter)  # "event" / malformed kind -> count
    failed_kinds: Counter[str] = field(default_factory=Counter)
    next_offsets: dict[int, int] = field(default_factory=dict)  # partition -> last acked + 1
    seconds: float = 0.0
    value_format: str = "json"
    subject: str | None = None  # with --format avro: the value subject and its schema id
    schema_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic, "sent": self.sent, "delivered": self.delivered,
            "failed": dict(self.failed), "kinds": dict(self.kinds),
            "failed_kinds": dict(self.failed_kinds),
            "malformed": sum(n for k, n in self.kinds.items() if k != "event"),
            "next_offsets": {str(p): o for p, o in sorted(self.next_offsets.items())},
            "seconds": round(self.seconds, 3), "format": self.value_format,
            **({"subject": self.subject, "schema_id": self.schema_id}
               if self.subject is not None else {}),
        }


def producer_config(settings_conf: dict[str, str], max_record_bytes: int) -> dict[str, Any]:
    return {
        **settings_conf,
        "acks": "all",
        "enable.idempotence": True,  # a retried send never lands twice
        "linger.ms": 20,
        # Room for the oversized records; the broker may still refuse them (reported).
        "message.max.bytes": max(1_000_000, max_record_bytes + 64 * 1024),
    }


def _wait_until(producer: Any, due: float, stop: threading.Event) -> None:
    """Serve delivery callbacks until the monotonic time ``due`` or until ``stop`` is set."""
    while (wait := due - time.monotonic()) > 0 and not stop.is_set():
        producer.poll(min(wait, 0.05))


def _send(producer: Any, topic: str, event: Event, on_delivery: Any,
          stop: threading.Event) -> bool:
    """Queue one event, waiting while the local queue is full; False if ``stop`` came first."""
    while True:
        try:
            producer.produce(topic, event.value, key=event.key, on_delivery=on_delivery)
            return True
        except BufferError:  # the local queue is full: let deliveries drain
            if stop.is_set():
                return False
            producer.poll(0.1)


def produce_events(producer: Any, topic: str, events: Iterator[Event], count: int | None, *,
                   rate: float | None = None, duration: float | None = None,
                   progress: bool = True, stop: threading.Event | None = None) -> ProduceReport:
    """Send events, then flush (wait up to 60 s for the broker's acknowledgements).

    How many: ``count`` events; else ``rate`` per second for ``duration`` seconds; else, with
    ``rate`` alone, until ``stop`` is set. Setting ``stop`` ends any of them early; what was
    sent is still flushed and reported. ``producer`` is a ``confluent_kafka.Producer``.
    Raises ValueError when none of ``count``, ``duration`` or ``rate`` is given.
    """
    endless = count is None and duration is None
    if endless and rate is None:
        raise ValueError("produce_events needs count, duration or rate")
    stop = stop or threading.Event()
    report = ProduceReport(topic)
    started = time.monotonic()
    total = count if count is not None else int((rate or 0) * (duration or 0))

    def delivered(err: Any, msg: Any, kind: str) -> None:
        if err is not None:
            report.failed[err.name()] += 1
            report.failed_kinds[kind] += 1
            return
        report.delivered += 1
        part = msg.partition()
        report.next_offsets[part] = max(report.next_offsets.get(part, 0), msg.offset() + 1)

    bar: Any = None
    if progress and not endless:  # an endless run has no length to show a bar of
        bar = click.progressbar(length=total, label=f"producing to {topic}", file=sys.stderr,
                                show_pos=True, show_eta=rate is not None)
    try:
        if bar is not None:
            bar.__enter__()
        for i, event in enumerate(events):
            if count is not None and i >= count:
                break
            if rate is not None:
                due = started + i / rate
                if duration is not None and due - started >= duration:
                    break
                _wait_until(producer, due, stop)
            if stop.is_set() or not _send(
                producer, topic, event, lambda e, m, k=event.kind: delivered(e, m, k), stop
            ):
                break
            report.sent += 1
            report.kinds[event.kind] += 1
            producer.poll(0)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    left = producer.flush(60)
    if left:
        report.failed["not_acknowledged_within_60s"] += left
    report.seconds = time.monotonic() - started
    return report


def summary(report: ProduceReport) -> str:
    malformed = sum(n for k, n in report.kinds.items() if k != "event")
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(report.kinds.items()) if k != "event")
    line = (f"produced {report.delivered} of {report.sent} records to {report.topic} in "
            f"{report.seconds:.1f}s ({malformed} malformed{': ' + kinds if kinds else ''})")
    if report.subject is not None:
        line += f"; Avro, schema id {report.schema_id} ({report.subject})"
    if report.failed:
        failures = ", ".join(f"{k} {n}" for k, n in sorted(report.failed.items()))
        line += f"; not delivered: {failures}"
        if report.failed_kinds.get("oversized"):
            line += (" (the broker refuses oversized records above its max.message.bytes: "
                     "lower MAX_RECORD_BYTES for the bridge and for this command)")
    return line


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Turn the first SIGTERM or SIGINT into a set event; a second one acts as if unhandled.

    Yields the event; the previous handlers are restored on exit. Main thread only (Python's
    rule for ``signal.signal``).
    """
    stop = threading.Event()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, _frame: Any) -> None:
        stop.set()
        click.echo(f"{signal.Signals(signum).name}: stopping after the records already sent "
                   "are acknowledged (send it again to stop at once)", err=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    for signum in previous:
        signal.signal(signum, handler)
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@click.command()
@settings_options(specs("bootstrap_servers", "topics", *KAFKA_SECURITY, "max_record_bytes",
                        *REGISTRY, *LOGGING))
@click.option("--count", "-n", type=click.IntRange(min=1), help="Send this many records.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True),
              help="Records per second: with --count, with --duration, or alone to send until "
                   "SIGTERM or SIGINT.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True),
              help="Seconds to send for, at --rate.")
@click.option("--seed", type=int, help="Seed of the generator: the same seed, the same events.")
@click.option("--start-time", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
              help="Timestamp (UTC) of the first event; default: now. Fix it with --seed for a "
                   "fully repeatable stream.")
@click.option("--malformed-ratio", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of malformed records (not JSON, not an object, invalid UTF-8, empty, "
                   "oversized).")
@click.option("--users", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Distinct user_id values (the record keys).")
@click.option("--format", "value_format", type=click.Choice(FORMATS), default="json",
              show_default=True,
              help="Record values: JSON, or Avro in the Confluent wire format (the schema "
                   "registered as {topic}-value at --schema-registry-url).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def produce(*, count: int | None, rate: float | None, duration: float | None, seed: int | None,
            start_time: datetime | None, malformed_ratio: float, users: int, value_format: str,
            as_json: bool, quiet: bool, **values: Any) -> None:
    """Produce realistic test events (keyed by user_id) into the topic.

    Runs for --count records, for --duration seconds at --rate, or at --rate until SIGTERM or
    SIGINT. A signal stops it cleanly in every mode: what was sent is flushed and summarised,
    and the exit code is 0 unless records were not delivered.
    """
    if count is None and rate is None:
        raise click.UsageError("give --count N, --rate R --duration S, or --rate R (until "
                               "SIGTERM or SIGINT)")
    if duration is not None and rate is None:
        raise click.UsageError("--duration needs --rate")
    if count is not None and duration is not None:
        raise click.UsageError("give --count or --duration, not both")
    settings = build_settings(values)
    if len(settings.topics) != 1:
        raise ConfigError("KAFKA_TOPIC (--topic): produce writes to exactly one topic")
    from confluent_kafka import KafkaException, Producer

    topic = settings.topics[0]
    avro = None
    if value_format == "avro":
        if settings.schema_registry_url is None:
            raise click.UsageError("--format avro needs the schema registry: set "
                                   "--schema-registry-url or SCHEMA_REGISTRY_URL")
        avro = avro_encoding(settings.registry_config(), topic)
    start = start_time.replace(tzinfo=UTC) if start_time else None
    events = EventStream(seed, malformed_ratio, settings.max_record_bytes, start, users,
                         encode=avro.encode if avro else encode_json)
    try:
        producer = Producer(producer_config(settings.kafka_config(), settings.max_record_bytes))
    except KafkaException as exc:
        raise WalBridgeError(f"cannot create a Kafka producer: {exc}") from exc
    if count is None and duration is None:
        click.echo(f"producing to {topic} at {rate:g} records/s until SIGTERM or "
                   "SIGINT", err=True)
    with stop_on_signals() as stop:
        report = produce_events(producer, topic, events, count, rate=rate,
                                duration=duration, progress=not quiet, stop=stop)
    report.value_format = value_format
    if avro is not None:
        report.subject, report.schema_id = avro.subject, avro.schema_id
    if as_json:
        echo_json(report.to_json())
    else:
        click.echo(summary(report))
    # Stopped before the first record: nothing failed.
    if (report.sent and not report.delivered) or report.failed_kinds.get("event"):
        sys.exit(1)
