"""``wal_bridge audit``: is every offset in the destination exactly once? From footers alone.

Each Parquet file the bridge writes carries, in its footer, the offset ranges of its rows per
partition (``wal_bridge.ranges``) and the segment it came from. A segment's rows are split
between a data file and, when some records could not be decoded, a dead-letter file: the two
footers together cover the segment's offsets. Audit reads only the footers (a ranged read of
an object's last bytes on GCS), pairs each segment's files, and sweeps every partition's
ranges in order:

- a **gap**: offsets between two files that no file holds, or fewer rows inside a segment's
  range than the range spans (a lost row, or a missing dead-letter file);
- a **duplicate**: offsets held by more than one file.

Next to that it shows the topic's earliest and latest offsets (watermarks) and the consumer
group's committed offsets. What was consumed but is still in a WAL is "not landed yet", not a
gap. Exit code 1 on any gap or duplicate. Offsets are assumed dense: a transactional topic's
commit markers occupy offsets no record has, and would show up as gaps.
"""

from __future__ import annotations

import io
import json
import struct
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import click

from wal_bridge.commands.common import (
    KAFKA_SECURITY,
    LOGGING,
    STORAGE,
    PartitionOffsets,
    build_settings,
    echo_json,
    given,
    kafka_offsets,
    settings_options,
    show_runs,
    specs,
    table,
)
from wal_bridge.config import Settings
from wal_bridge.errors import KafkaUnavailable
from wal_bridge.parquet import INSTANCE_KEY, RANGES_KEY, SEGMENT_KEY
from wal_bridge.sink import ObjectInfo, Sink, open_sink

FOOTER_TAIL = 64 * 1024  # one ranged read fetches the whole footer of nearly every file
# The footer keys read here, as a footer's metadata holds them (bytes).
RANGES, INSTANCE, SEGMENT = (k.encode() for k in (RANGES_KEY, INSTANCE_KEY, SEGMENT_KEY))
TP = tuple[str, int]


@dataclass(frozen=True)
class Piece:
    """What one file holds of one partition, by its footer."""

    key: str
    kind: str  # "data" or "dead"
    segment: str  # "{instance}/{segment}", pairs a data file with its dead-letter file
    topic: str
    partition: int
    first: int
    last: int
    records: int


@dataclass
class Coverage:
    """One segment's offsets of one partition: its data and dead-letter pieces together."""

    first: int
    last: int
    records: int
    keys: list[str] = field(default_factory=list)

    @property
    def span(self) -> int:
        return self.last - self.first + 1


# ------------------------------------------------------------------------------- footers


def _tail(sink: Sink, obj: ObjectInfo, length: int) -> bytes:
    """The last ``length`` bytes of an object (one ranged read, not the whole object)."""
    start = max(0, obj.size - length)
    return sink.read_range(obj.key, start, obj.size - start)


def read_footer(sink: Sink, obj: ObjectInfo) -> dict[bytes, bytes] | None:
    """The key-value metadata of a Parquet object's footer; None if it is not Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if obj.size < 12:
        return None
    tail = _tail(sink, obj, FOOTER_TAIL)
    if tail[-4:] != b"PAR1":
        return None
    (length,) = struct.unpack("<I", tail[-8:-4])
    if length + 8 > len(tail):
        if length + 12 > obj.size:
            return None
        tail = _tail(sink, obj, length + 8)
    try:
        metadata = pq.read_metadata(io.BytesIO(b"PAR1" + tail[-(length + 8):]))
    except (pa.ArrowException, OSError):
        return None
    return dict(metadata.metadata or {})


def pieces_of(key: str, kind: str, footer: dict[bytes, bytes]) -> list[Piece] | None:
    """The pieces a footer describes; None when the file is not one of the bridge's."""
    raw = footer.get(RANGES)
    if raw is None:
        return None
    try:
        ranges = json.loads(raw)
    except ValueError:
        return None
    segment = (f"{footer.get(INSTANCE, b'?').decode(errors='replace')}/"
               f"{footer.get(SEGMENT, key.encode()).decode(errors='replace')}")
    return [Piece(key, kind, segment, str(r["topic"]), int(r["partition"]),
                  int(r["first_offset"]), int(r["last_offset"]), int(r["records"]))
            for r in ranges]


# ------------------------------------------------------------------------------- the sweep


def coverages(pieces: Iterable[Piece]) -> dict[TP, list[Coverage]]:
    """Per partition, each segment's coverage: a data piece merged with its dead-letter piece.

    Two files of the same kind from one segment are kept apart, so that a copy of a file is
    seen as the duplicate it is.
    """
    grouped: dict[tuple[TP, str], dict[str, list[Piece]]] = defaultdict(lambda: defaultdict(list))
    for piece in pieces:
        grouped[((piece.topic, piece.partition), piece.segment)][piece.kind].append(piece)
    result: dict[TP, list[Coverage]] = defaultdict(list)
    for (tp, _segment), kinds in grouped.items():
        data, dead = kinds.get("data", []), kinds.get("dead", [])
        extra = data[1:] + dead[1:]  # a second copy of the same kind stands alone
        firsts = data[:1] + dead[:1]
        result[tp].append(Coverage(min(p.first for p in firsts), max(p.last for p in firsts),
                                   sum(p.records for p in firsts), [p.key for p in firsts]))
        result[tp].extend(Coverage(p.first, p.last, p.records, [p.key]) for p in extra)
    for items in result.values():
        items.sort(key=lambda c: (c.first, c.last))
    return dict(result)


def sweep(items: list[Coverage]) -> dict[str, Any]:
    """Gaps, duplicates and holes of one partition's coverages (sorted by first offset)."""
    gaps: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    holes: list[dict[str, Any]] = []
    runs: list[list[int]] = []
    until = -1
    last_keys: list[str] = []
    for cov in items:
        if cov.records < cov.span:
            holes.append({"first_offset": cov.first, "last_offset": cov.last,
                          "missing": cov.span - cov.records, "keys": cov.keys})
        elif cov.records > cov.span:
            duplicates.append({"first_offset": cov.first, "last_offset": cov.last,
                               "records": cov.records - cov.span, "keys": cov.keys})
        if runs and cov.first > until + 1:
            gaps.append({"first_offset": until + 1, "last_offset": cov.first - 1,
                         "missing": cov.first - until - 1, "after": last_keys,
                         "before": cov.keys})
        if runs and cov.first <= until:
            top = min(cov.last, until)
            duplicates.append({"first_offset": cov.first, "last_offset": top,
                               "records": top - cov.first + 1, "keys": last_keys + cov.keys})
        if runs and cov.first <= until + 1:
            runs[-1][1] = max(runs[-1][1], cov.last)
        else:
            runs.append([cov.first, cov.last])
        if cov.last > until:
            until, last_keys = cov.last, list(cov.keys)
    return {"landed": [tuple(r) for r in runs], "gaps": gaps, "duplicates": duplicates,
            "holes": holes}


# ------------------------------------------------------------------------------- the audit


def audit(settings: Settings, sink: Sink, topics: set[str] | None, *, kafka: bool = True,
          group_id: str | None = None) -> dict[str, Any]:
    destination = settings.require_destination()
    pieces: list[Piece] = []
    foreign: list[str] = []
    objects = 0
    for kind, prefix in (("data", destination.prefix), ("dead", destination.dead_letter_prefix)):
        for obj in sink.list(prefix.rstrip("/") + "/"):
            if not obj.key.endswith(".parquet"):
                continue
            objects += 1
            footer = read_footer(sink, obj)
            described = pieces_of(obj.key, kind, footer) if footer is not None else None
            if described is None:
                foreign.append(obj.key)
                continue
            pieces.extend(p for p in described if topics is None or p.topic in topics)
    by_tp = coverages(pieces)
    offsets: dict[TP, PartitionOffsets] = {}
    kafka_error = None
    if kafka:
        wanted = (topics or set()) | {tp[0] for tp in by_tp}
        try:
            offsets = kafka_offsets(settings, sorted(wanted), group_id)
        except KafkaUnavailable as exc:
            kafka_error = str(exc)
    partitions = []
    for tp in sorted(set(by_tp) | set(offsets)):
        items = by_tp.get(tp, [])
        found = sweep(items)
        off = offsets.get(tp)
        row: dict[str, Any] = {
            "topic": tp[0], "partition": tp[1],
            "earliest": off.earliest if off else None, "latest": off.latest if off else None,
            "committed": off.committed if off else None,
            "files": len({k for c in items for k in c.keys}),
            "records": sum(c.records for c in items),
            "landed": [list(r) for r in found["landed"]],
            "gaps": found["gaps"], "holes": found["holes"], "duplicates": found["duplicates"],
            "not_landed_head": None, "not_landed_tail": None, "beyond_latest": None,
        }
        if off is not None:
            first = found["landed"][0][0] if found["landed"] else off.latest
            last = found["landed"][-1][1] if found["landed"] else off.earliest - 1
            if first > off.earliest:
                row["not_landed_head"] = {"first_offset": off.earliest,
                                          "last_offset": first - 1, "count": first - off.earliest}
            if last + 1 < off.latest:
                row["not_landed_tail"] = {"first_offset": last + 1,
                                          "last_offset": off.latest - 1,
                                          "count": off.latest - last - 1}
            if last >= off.latest:
                row["beyond_latest"] = {"first_offset": off.latest, "last_offset": last}
        partitions.append(row)
    totals = {
        "objects": objects, "foreign_objects": len(foreign),
        "records": sum(p["records"] for p in partitions),
        "gaps": sum(len(p["gaps"]) + len(p["holes"]) for p in partitions),
        "missing_offsets": sum(g["missing"] for p in partitions for g in p["gaps"] + p["holes"]),
        "duplicates": sum(len(p["duplicates"]) for p in partitions),
        "duplicated_records": sum(d["records"] for p in partitions for d in p["duplicates"]),
    }
    return {
        "destination": str(destination), "group_id": group_id,
        "kafka": {"checked": kafka, "available": kafka and kafka_error is None,
                  "error": kafka_error},
        "partitions": partitions, "foreign_objects": foreign, "totals": totals,
        "ok": totals["gaps"] == 0 and totals["duplicates"] == 0,
    }


def _opt(value: Any) -> str:
    return "-" if value is None else str(value)


def render(report: dict[str, Any]) -> str:
    out = [f"Audit of {report['destination']} (group {report['group_id'] or '-'})", ""]
    rows = []
    for p in report["partitions"]:
        tail = p["not_landed_tail"]
        rows.append([p["topic"], p["partition"], _opt(p["earliest"]), _opt(p["latest"]),
                     _opt(p["committed"]), show_runs([tuple(r) for r in p["landed"]]),
                     p["files"], p["records"], len(p["gaps"]) + len(p["holes"]) or "-",
                     len(p["duplicates"]) or "-", tail["count"] if tail else "-"])
    if rows:
        out.append(table(["TOPIC", "PARTITION", "EARLIEST", "LATEST", "COMMITTED", "LANDED",
                          "FILES", "RECORDS", "GAPS", "DUPLICATES", "NOT LANDED YET"], rows,
                         right=(1, 2, 3, 4, 6, 7, 8, 9, 10)))
    else:
        out.append("nothing has landed and Kafka reported no partitions")
    details = []
    for p in report["partitions"]:
        name = f"{p['topic']}[{p['partition']}]"
        for g in p["gaps"]:
            details.append(f"GAP        {name} offsets {g['first_offset']}-{g['last_offset']} "
                           f"({g['missing']} missing) between {', '.join(g['after'])} and "
                           f"{', '.join(g['before'])}")
        for h in p["holes"]:
            details.append(f"GAP        {name} {h['missing']} offset(s) missing inside "
                           f"{h['first_offset']}-{h['last_offset']} of {', '.join(h['keys'])}")
        for d in p["duplicates"]:
            details.append(f"DUPLICATE  {name} offsets {d['first_offset']}-{d['last_offset']} "
                           f"({d['records']} records) in {', '.join(d['keys'])}")
        if p["beyond_latest"]:
            b = p["beyond_latest"]
            details.append(f"WARNING    {name} landed offsets {b['first_offset']}-"
                           f"{b['last_offset']} are past the topic's end: was it recreated?")
    if details:
        out += ["", *details]
    if report["foreign_objects"]:
        out += ["", f"{len(report['foreign_objects'])} object(s) without wal-bridge footers "
                    f"ignored, e.g. {report['foreign_objects'][0]}"]
    kafka = report["kafka"]
    if kafka["checked"] and not kafka["available"]:
        out += ["", f"Kafka not checked: {kafka['error']}"]
    t = report["totals"]
    verdict = ("OK: no gaps, no duplicates" if report["ok"] else
               f"FAILED: {t['gaps']} gap(s) ({t['missing_offsets']} offsets missing), "
               f"{t['duplicates']} duplicate range(s) ({t['duplicated_records']} records)")
    out += ["", f"{t['objects']} objects, {t['records']} records. {verdict}"]
    return "\n".join(out)


@click.command("audit")
@settings_options(specs("bootstrap_servers", "topics", "group_id", *KAFKA_SECURITY,
                        "destination", *STORAGE, *LOGGING))
@click.option("--no-kafka", is_flag=True, help="Check the files only; skip watermarks and "
              "committed offsets.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def audit_command(no_kafka: bool, as_json: bool, **values: Any) -> None:
    """Check that every offset landed exactly once, from the Parquet footers.

    Exit code 1 on a gap or a duplicate.
    """
    settings = build_settings(values)
    topics = set(settings.topics) if given(values, "topics") else None
    sink = open_sink(settings)
    report = audit(settings, sink, topics, kafka=not no_kafka, group_id=settings.group_id)
    if as_json:
        echo_json(report)
    else:
        click.echo(render(report))
    if not report["ok"]:
        raise SystemExit(1)

