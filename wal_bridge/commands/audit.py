"""``wal_bridge audit``: is every offset in the destination exactly once? From footers, then Kafka.

Each Parquet file the bridge writes carries, in its footer, the offset ranges of its rows per
partition (``wal_bridge.ranges``) and the segment it came from. A segment's rows are split
between a data file and, when some records could not be decoded, a dead-letter file: the two
footers together cover the segment's offsets. Audit reads only the footers (a ranged read of
an object's last bytes on GCS), pairs each segment's files, and sweeps every partition's
ranges in order:

- a **suspected gap**: offsets between two files that no file holds, or fewer rows inside a
  segment's range than the range spans;
- a **duplicate**: offsets held by more than one file.

Offsets are not dense: a compacted topic has offsets the cleaner removed, and a transactional
one has commit and abort markers, and aborted records that a read_committed consumer (the
bridge) never gets. So each suspected gap is read back from Kafka (:func:`record_offsets`,
read_committed, only those ranges, bounded in time) and only offsets Kafka delivers as records
and no file holds are **gaps**. Inside a segment's range the footers give a count, not the
offsets: when Kafka delivers more records there than the files hold, the files' offset column
is read to name the missing ones. What Kafka no longer holds (below the earliest offset) or did
not return in time is **not verifiable**, said as such, and does not fail the audit. Without
Kafka (``--no-kafka``, or a broker that does not answer) every suspected gap is reported as a
*possible* gap and fails the audit (exit 1), since it cannot be told from a compaction hole.

Next to that it shows the topic's earliest and latest offsets (watermarks) and the consumer
group's committed offsets. What was consumed but is still in a WAL is "not landed yet", not a
gap; its count is the records Kafka holds there (markers left out) when the range is small
enough to read. Exit code 1 on any gap, possible gap or duplicate.
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
    RecordsRead,
    build_settings,
    echo_json,
    given,
    intervals,
    kafka_offsets,
    record_offsets,
    settings_options,
    show_runs,
    specs,
    table,
)
from wal_bridge.config import Settings
from wal_bridge.errors import KafkaUnavailable
from wal_bridge.parquet import INSTANCE_KEY, RANGES_KEY, SEGMENT_KEY
from wal_bridge.schema import OFFSET, PARTITION, TOPIC
from wal_bridge.sink import ObjectInfo, Sink, open_sink

FOOTER_TAIL = 64 * 1024  # one ranged read fetches the whole footer of nearly every file
# The footer keys read here, as a footer's metadata holds them (bytes).
RANGES, INSTANCE, SEGMENT = (k.encode() for k in (RANGES_KEY, INSTANCE_KEY, SEGMENT_KEY))
TP = tuple[str, int]
VERIFY_TIMEOUT = 60.0  # seconds for reading every suspected gap back from Kafka
TAIL_CHECK = 10_000  # a "not landed yet" range up to this many offsets is counted in records


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


# ------------------------------------------------------------------------------- verification


def landed_offsets(sink: Sink, keys: Iterable[str], tp: TP) -> set[int]:
    """The offsets of partition ``tp`` that the files ``keys`` hold (their offset column: the
    whole object is read, so only for a segment whose count says offsets are missing)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    found: set[int] = set()
    for key in keys:
        rows = pq.read_table(io.BytesIO(sink.read(key)), columns=[TOPIC, PARTITION, OFFSET])
        mine = pc.and_(pc.equal(rows.column(TOPIC).cast("string"), tp[0]),
                       pc.equal(rows.column(PARTITION), tp[1]))
        found.update(rows.filter(mine).column(OFFSET).to_pylist())
    return found


def _cut(runs: Iterable[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of ``runs`` inside ``lo``-``hi`` (inclusive)."""
    return [(max(a, lo), min(b, hi)) for a, b in runs if max(a, lo) <= min(b, hi)]


def _beyond_kafka(first: int, last: int, off: PartitionOffsets, read: RecordsRead, tp: TP
                  ) -> list[tuple[int, int, str]]:
    """The parts of ``first``-``last`` whose records Kafka cannot tell, with why."""
    out: list[tuple[int, int, str]] = []
    if first < off.earliest:
        out.append((first, min(last, off.earliest - 1),
                    f"below the topic's earliest offset {off.earliest}"))
    if last >= off.latest:
        out.append((max(first, off.latest), last, f"past the partition's end ({off.latest})"))
    for a, b, why in read.unread.get(tp, []):
        out += [(x, y, f"not read back from Kafka ({why})") for x, y in _cut([(a, b)], first,
                                                                             last)]
    return out


def verify(sink: Sink, row: dict[str, Any], off: PartitionOffsets, read: RecordsRead) -> None:
    """Replace ``row``'s suspected gaps with the offsets Kafka delivers as records and no file
    holds; record what cannot be judged (``unverifiable``) and how many offsets hold no record
    (``no_record_offsets``: compaction, transaction markers, aborted records)."""
    tp: TP = (row["topic"], row["partition"])
    records = read.records.get(tp, set())
    gaps: list[dict[str, Any]] = []
    holes: list[dict[str, Any]] = []
    unverifiable: list[dict[str, Any]] = []
    no_record = 0
    suspects = [(g["first_offset"], g["last_offset"], g) for g in row["gaps"]]
    suspects += [(h["first_offset"], h["last_offset"], h) for h in row["holes"]]
    for first, last, suspect in suspects:
        span = last - first + 1
        is_hole = "keys" in suspect
        delivered = {o for o in records if first <= o <= last}
        unknown = _beyond_kafka(first, last, off, read, tp)
        landed: set[int] = set()
        if is_hole:
            if not unknown and len(delivered) == span - suspect["missing"]:
                no_record += suspect["missing"]  # every record there landed
                continue
            landed = landed_offsets(sink, suspect["keys"], tp)
        missing = sorted(delivered - landed)
        for a, b in intervals(missing):
            entry = {"first_offset": a, "last_offset": b, "missing": b - a + 1, "verified": True}
            if is_hole:
                holes.append({**entry, "keys": suspect["keys"]})
            else:
                gaps.append({**entry, "after": suspect["after"], "before": suspect["before"]})
        unjudged = 0
        for a, b, why in unknown:
            runs = intervals(o for o in range(a, b + 1) if o not in landed) if landed else [
                (a, b)]
            for x, y in runs:
                unverifiable.append({"first_offset": x, "last_offset": y,
                                     "count": y - x + 1, "why": why})
                unjudged += y - x + 1
        no_record += span - len(missing) - len(landed & set(range(first, last + 1))) - unjudged
    row["gaps"], row["holes"] = gaps, holes
    row["unverifiable"], row["no_record_offsets"] = unverifiable, no_record
    tail = row["not_landed_tail"]
    if tail is not None and tp not in read.unread and tail["first_offset"] >= off.earliest \
            and tail["last_offset"] - tail["first_offset"] < TAIL_CHECK:
        count = sum(1 for o in records if tail["first_offset"] <= o <= tail["last_offset"])
        row["not_landed_tail"] = {**tail, "count": count} if count else None


def _to_read(row: dict[str, Any], off: PartitionOffsets) -> list[tuple[int, int]]:
    """The ranges of ``row`` to read back from Kafka: its suspected gaps and a short tail,
    inside what the partition still holds."""
    wanted = [(g["first_offset"], g["last_offset"]) for g in row["gaps"] + row["holes"]]
    tail = row["not_landed_tail"]
    if tail is not None and tail["last_offset"] - tail["first_offset"] < TAIL_CHECK:
        wanted.append((tail["first_offset"], tail["last_offset"]))
    return _cut(wanted, off.earliest, off.latest - 1)


def _verify_all(settings: Settings, sink: Sink, partitions: list[dict[str, Any]],
                offsets: dict[TP, PartitionOffsets], timeout: float) -> None:
    """Read every partition's suspected gaps back from Kafka (one consumer) and judge them."""
    ranges: dict[TP, list[tuple[int, int]]] = {}
    for row in partitions:
        tp = (row["topic"], row["partition"])
        if tp in offsets and (found := _to_read(row, offsets[tp])):
            ranges[tp] = found
    read = record_offsets(settings, ranges, timeout)
    for row in partitions:
        if (tp := (row["topic"], row["partition"])) in offsets:
            verify(sink, row, offsets[tp], read)


# ------------------------------------------------------------------------------- the audit


def audit(settings: Settings, sink: Sink, topics: set[str] | None, *, kafka: bool = True,
          group_id: str | None = None, verify_timeout: float = VERIFY_TIMEOUT) -> dict[str, Any]:
    """The audit report of ``settings``' destination (see the module docstring): per
    partition the landed runs, gaps (``verified``: read back from Kafka, or only possible),
    what cannot be judged, duplicates and what has not landed yet; ``ok`` is False on any gap
    or duplicate. Raises what opening or reading the sink raises."""
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
            "gaps": [{**g, "verified": False} for g in found["gaps"]],
            "holes": [{**h, "verified": False} for h in found["holes"]],
            "unverifiable": [], "no_record_offsets": 0, "duplicates": found["duplicates"],
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
    checked = kafka and kafka_error is None
    if checked:
        _verify_all(settings, sink, partitions, offsets, verify_timeout)
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
        "verification": {
            "against_kafka": checked,
            "no_record_offsets": sum(p["no_record_offsets"] for p in partitions),
            "unverifiable_offsets": sum(u["count"] for p in partitions
                                        for u in p["unverifiable"]),
        },
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
    details = _details(report)
    if details:
        out += ["", *details]
    if report["foreign_objects"]:
        out += ["", f"{len(report['foreign_objects'])} object(s) without wal-bridge footers "
                    f"ignored, e.g. {report['foreign_objects'][0]}"]
    kafka = report["kafka"]
    if kafka["checked"] and not kafka["available"]:
        out += ["", f"Kafka not checked: {kafka['error']}"]
    t, v = report["totals"], report["verification"]
    kind = "gap(s)" if v["against_kafka"] else "possible gap(s)"
    verdict = ("OK: no gaps, no duplicates" if report["ok"] else
               f"FAILED: {t['gaps']} {kind} ({t['missing_offsets']} offsets missing), "
               f"{t['duplicates']} duplicate range(s) ({t['duplicated_records']} records)")
    out += ["", f"{t['objects']} objects, {t['records']} records. {verdict}"]
    if v["against_kafka"] and v["no_record_offsets"]:
        out.append(f"{v['no_record_offsets']} offset(s) inside the landed ranges hold no record "
                   "in Kafka (compaction, transaction markers, aborted records): not gaps.")
    if v["unverifiable_offsets"]:
        out.append(f"{v['unverifiable_offsets']} offset(s) could not be judged (UNVERIFIED "
                   "above); they do not fail the audit.")
    if t["gaps"] and not v["against_kafka"]:
        out.append("Gaps were not checked against Kafka: on a compacted or transactional topic "
                   "an offset without a record looks the same. Run with Kafka to judge them.")
    return "\n".join(out)


def _details(report: dict[str, Any]) -> list[str]:
    """One line per gap, unverifiable range, duplicate and warning."""
    details = []
    for p in report["partitions"]:
        name = f"{p['topic']}[{p['partition']}]"
        for g in p["gaps"]:
            details.append(f"GAP        {name} offsets {g['first_offset']}-{g['last_offset']} "
                           f"({g['missing']} missing) between {', '.join(g['after'])} and "
                           f"{', '.join(g['before'])}{_possible(g)}")
        for h in p["holes"]:
            where = (f"offsets {h['first_offset']}-{h['last_offset']} ({h['missing']} missing) "
                     f"inside" if h["verified"] else
                     f"{h['missing']} offset(s) missing inside {h['first_offset']}-"
                     f"{h['last_offset']} of")
            details.append(f"GAP        {name} {where} {', '.join(h['keys'])}{_possible(h)}")
        for u in p["unverifiable"]:
            details.append(f"UNVERIFIED {name} not verifiable: offsets {u['first_offset']}-"
                           f"{u['last_offset']} are {u['why']}")
        for d in p["duplicates"]:
            details.append(f"DUPLICATE  {name} offsets {d['first_offset']}-{d['last_offset']} "
                           f"({d['records']} records) in {', '.join(d['keys'])}")
        if p["beyond_latest"]:
            b = p["beyond_latest"]
            details.append(f"WARNING    {name} landed offsets {b['first_offset']}-"
                           f"{b['last_offset']} are past the topic's end: was it recreated?")
    return details


def _possible(suspect: dict[str, Any]) -> str:
    return "" if suspect["verified"] else " (possible gap: not checked against Kafka)"


@click.command("audit")
@settings_options(specs("bootstrap_servers", "topics", "group_id", *KAFKA_SECURITY,
                        "destination", *STORAGE, *LOGGING))
@click.option("--no-kafka", is_flag=True, help="Check the files only; skip watermarks and "
              "committed offsets; suspected gaps are reported as possible gaps (exit 1).")
@click.option("--verify-timeout", type=click.FloatRange(min=0), default=VERIFY_TIMEOUT,
              show_default=True, help="Seconds for reading suspected gaps back from Kafka; "
              "what is not read by then is reported as not verifiable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def audit_command(no_kafka: bool, verify_timeout: float, as_json: bool, **values: Any) -> None:
    """Check that every offset landed exactly once, from the Parquet footers and Kafka.

    Offsets that hold no record in Kafka (compaction, transaction markers, aborted records)
    are not gaps. Exit code 1 on a gap (or, without Kafka, a possible gap) or a duplicate.
    """
    settings = build_settings(values)
    topics = set(settings.topics) if given(values, "topics") else None
    sink = open_sink(settings)
    report = audit(settings, sink, topics, kafka=not no_kafka, group_id=settings.group_id,
                   verify_timeout=verify_timeout)
    if as_json:
        echo_json(report)
    else:
        click.echo(render(report))
    if not report["ok"]:
        raise SystemExit(1)

