"""What the operator commands share: option sets, tables for people, offsets in Kafka."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click

from wal_bridge.config import SPECS, SPECS_BY_NAME, Settings, Spec, load_settings
from wal_bridge.errors import KafkaUnavailable
from wal_bridge.logs import configure


def settings_options(specs: tuple[Spec, ...] = SPECS) -> Callable[[Any], Any]:
    """Decorate a command with one option per setting, each also read from its variable."""

    def decorate(func: Any) -> Any:
        for spec in reversed(specs):
            default = "" if spec.secret or spec.default is None else f" [default: {spec.default}]"
            func = click.option(
                spec.flag, spec.name, envvar=spec.env, default=None, show_envvar=True,
                metavar="TEXT", help=f"{spec.help}{default}",
            )(func)
        return func

    return decorate


def build_settings(values: dict[str, Any], **overrides: Any) -> Settings:
    """Settings from click's values (flag or variable), validated; configure logging."""
    raw = {spec.env: values.get(spec.name) for spec in SPECS}
    settings = load_settings(raw, **overrides)
    configure(settings.log_level, settings.log_format)
    return settings


# Settings a command that talks to Kafka needs besides the broker address.
KAFKA_SECURITY = ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
                  "ssl_ca_location", "ssl_certificate_location", "ssl_key_location",
                  "ssl_key_password")
# Settings a command that reads or writes the destination needs besides DESTINATION.
STORAGE = ("google_credentials", "storage_emulator_host")
LOGGING = ("log_level", "log_format")


def specs(*names: str) -> tuple[Spec, ...]:
    """The specs of ``names``, in the order of config.SPECS (so --help reads the same)."""
    wanted = set(names)
    return tuple(spec for spec in SPECS_BY_NAME.values() if spec.name in wanted)


def given(values: dict[str, Any], name: str) -> bool:
    """Whether the operator set this setting (flag or variable) rather than left the default."""
    return values.get(name) is not None


# ------------------------------------------------------------------------------- for people


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> str:
    """An aligned, space-separated table; columns in ``right`` are right-aligned (numbers)."""
    text_rows = [[("" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    align_right = set(right)

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(widths[i]) if i in align_right else c.ljust(widths[i])
               for i, c in enumerate(cells)]
        return "  ".join(out).rstrip()

    return "\n".join([line(list(headers)), *(line(r) for r in text_rows)])


def human_bytes(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - unreachable


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 172_800:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def intervals(offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted offsets as inclusive runs: [0, 1, 2, 5] -> [(0, 2), (5, 5)]."""
    runs: list[tuple[int, int]] = []
    for offset in sorted(set(offsets)):
        if runs and offset == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], offset)
        else:
            runs.append((offset, offset))
    return runs


def show_runs(runs: Sequence[tuple[int, int]], limit: int = 4) -> str:
    """``0-99, 200-299`` (the first ``limit`` runs, then how many more)."""
    if not runs:
        return "-"
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    if len(runs) > limit:
        shown.append(f"... +{len(runs) - limit} more")
    return ", ".join(shown)


class Progress:
    """One status line on stderr: rewritten in place on a terminal, every few seconds otherwise."""

    def __init__(self, every: float = 2.0, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self._last = 0.0
        self._shown = ""

    def update(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if text != self._shown:
                self.stream.write("\r\033[K" + text)
                self.stream.flush()
        elif force or (now - self._last >= self.every and text != self._shown):
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last = now
        self._shown = text

    def done(self, text: str | None = None) -> None:
        if text is not None:
            self.update(text, force=True)
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
        self._shown = ""


# ------------------------------------------------------------------------------- Kafka


@dataclass(frozen=True)
class PartitionOffsets:
    """Where a partition stands in Kafka: what it still holds, and the group's position."""

    topic: str
    partition: int
    earliest: int  # low watermark: the oldest offset still held
    latest: int  # high watermark: the offset the next record will get
    committed: int | None  # the group's committed offset, None when it has none


def kafka_offsets(settings: Settings, topics: Iterable[str], group_id: str | None,
                  timeout: float = 10.0) -> dict[tuple[str, int], PartitionOffsets]:
    """Watermarks of every partition of ``topics`` and the committed offsets of ``group_id``.

    A plain consumer with a throwaway group id reads the watermarks; the group's offsets are
    read with ``committed()``, which never joins the group or commits anything. Topics Kafka
    does not know are left out. Raises KafkaUnavailable when the broker does not answer within
    ``timeout`` seconds per request.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({
        **settings.kafka_config(), "group.id": group_id or f"wal-bridge-probe-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "enable.partition.eof": False,
    })
    try:
        try:
            metadata = consumer.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise KafkaUnavailable(
                f"Kafka at {settings.bootstrap_servers} did not answer: {exc}") from exc
        result: dict[tuple[str, int], PartitionOffsets] = {}
        tps: list[TopicPartition] = []
        for topic in topics:
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                continue
            tps.extend(TopicPartition(topic, p) for p in sorted(info.partitions))
        committed: dict[tuple[str, int], int | None] = {}
        if group_id and tps:
            try:
                for tp in consumer.committed(tps, timeout=timeout):
                    committed[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
            except KafkaException as exc:
                raise KafkaUnavailable(f"committed offsets of group {group_id!r}: {exc}") from exc
        for tp in tps:
            try:
                low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            except KafkaException as exc:
                raise KafkaUnavailable(
                    f"watermarks of {tp.topic}[{tp.partition}]: {exc}") from exc
            key = (tp.topic, tp.partition)
            result[key] = PartitionOffsets(tp.topic, tp.partition, low, high, committed.get(key))
        return result
    finally:
        consumer.close()



@dataclass
class RecordsRead:
    """What :func:`record_offsets` found: per partition, the offsets Kafka delivered as
    records inside the asked ranges, and the parts of those ranges it could not read to the
    end (with why)."""

    records: dict[tuple[str, int], set[int]]
    unread: dict[tuple[str, int], list[tuple[int, int, str]]]


def record_offsets(settings: Settings, ranges: dict[tuple[str, int], list[tuple[int, int]]],
                   timeout: float = 60.0) -> RecordsRead:
    """Which offsets inside ``ranges`` (inclusive) Kafka delivers as records.

    A consumer with ``isolation.level=read_committed`` (as the bridge reads) is assigned at
    each range's start and reads until it passes the range's end or reaches the end of the
    partition, so offsets that hold no record (a transaction's commit or abort marker, an
    aborted record, a record removed by compaction) are told apart from records. It never
    joins a group or commits. Offsets below the partition's earliest offset are not asked for
    here (the caller clamps); a range not read to its end within ``timeout`` seconds in all,
    or whose read failed (the broker gone, retention passing the start), is returned in
    ``unread`` from the first offset not read.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    result = RecordsRead({tp: set() for tp in ranges}, {})
    if not any(ranges.values()):
        return result
    consumer = Consumer({
        **settings.kafka_config(), "group.id": f"wal-bridge-probe-{uuid.uuid4().hex}",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "enable.partition.eof": True, "auto.offset.reset": "error",
        "isolation.level": "read_committed", "fetch.wait.max.ms": 100,
    })
    deadline = time.monotonic() + timeout
    try:
        for (topic, partition), runs in sorted(ranges.items()):
            got = result.records[(topic, partition)]
            for first, last in sorted(runs):
                position, why = first, f"not read within {timeout:g} s"
                if time.monotonic() < deadline:
                    consumer.assign([TopicPartition(topic, partition, first)])
                failed = False
                while position <= last and not failed and time.monotonic() < deadline:
                    for m in consumer.consume(num_messages=1000, timeout=0.2):
                        err = m.error()
                        if err is not None and err.code() == KafkaError._PARTITION_EOF:
                            position = last + 1  # nothing past here yet: the range is read
                        elif err is not None:
                            why, failed = f"read failed: {err.str()}", True
                            break
                        elif (offset := m.offset()) is not None and offset >= position:
                            if offset <= last:
                                got.add(offset)
                            position = offset + 1
                if position <= last:
                    result.unread.setdefault((topic, partition), []).append(
                        (position, last, why))
    finally:
        consumer.close()
    return result
