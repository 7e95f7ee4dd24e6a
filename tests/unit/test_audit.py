"""`wal_bridge audit` on local files: footers paired per segment, gaps and duplicates found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from wal_bridge.cli import main
from wal_bridge.commands.audit import (
    FOOTER_TAIL,
    Coverage,
    Piece,
    audit,
    coverages,
    render,
    sweep,
    verify,
)
from wal_bridge.commands.common import PartitionOffsets, RecordsRead
from wal_bridge.config import Destination, load_settings
from wal_bridge.sink.local import LocalSink


def write_file(root: Path, key: str, segment: int, rows: dict[int, list[int]],
               topic: str = "events", padding: int = 0) -> None:
    """A Parquet file with the bridge's footer keys for ``rows`` (partition -> offsets)."""
    partitions = [p for p, offsets in rows.items() for _ in offsets]
    offsets = [o for offs in rows.values() for o in offs]
    ranges = [{"topic": topic, "partition": p, "first_offset": min(o), "last_offset": max(o),
               "records": len(o)} for p, o in sorted(rows.items())]
    table = pa.table({"_kafka_topic": [topic] * len(offsets), "_kafka_partition": partitions,
                      "_kafka_offset": offsets})
    table = table.replace_schema_metadata({
        "wal_bridge.ranges": json.dumps(ranges), "wal_bridge.records": str(len(offsets)),
        "wal_bridge.segment": str(segment), "wal_bridge.instance": "bridge-a",
        "padding": "x" * padding})
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def piece(key: str, kind: str, segment: str, first: int, last: int, records: int) -> Piece:
    return Piece(key, kind, segment, "events", 0, first, last, records)


def test_a_data_file_and_its_dead_letter_file_together_cover_their_segment() -> None:
    """Rows split between data and dead letters make one dense coverage, not a hole."""
    found = coverages([piece("raw/a", "data", "i/1", 0, 9, 8),
                       piece("dead-letter/a", "dead", "i/1", 3, 7, 2)])
    assert found == {("events", 0): [Coverage(0, 9, 10, ["raw/a", "dead-letter/a"])]}
    assert sweep(found[("events", 0)]) == {"landed": [(0, 9)], "gaps": [], "duplicates": [],
                                           "holes": []}


def test_the_sweep_finds_gaps_duplicates_and_holes() -> None:
    """Offsets no file holds, offsets two files hold, and rows missing inside a file."""
    result = sweep([Coverage(0, 9, 10, ["a"]), Coverage(20, 29, 10, ["b"]),
                    Coverage(25, 34, 10, ["c"]), Coverage(35, 44, 8, ["d"])])
    assert result["landed"] == [(0, 9), (20, 44)]
    assert result["gaps"] == [{"first_offset": 10, "last_offset": 19, "missing": 10,
                               "after": ["a"], "before": ["b"]}]
    assert result["duplicates"] == [{"first_offset": 25, "last_offset": 29, "records": 5,
                                     "keys": ["b", "c"]}]
    assert result["holes"] == [{"first_offset": 35, "last_offset": 44, "missing": 2,
                                "keys": ["d"]}]


def test_two_copies_of_one_segment_file_are_a_duplicate() -> None:
    """The same segment's data file under two keys is not merged into one coverage."""
    found = coverages([piece("raw/a", "data", "i/1", 0, 9, 10),
                       piece("raw/copy", "data", "i/1", 0, 9, 10)])
    result = sweep(found[("events", 0)])
    assert result["duplicates"] == [{"first_offset": 0, "last_offset": 9, "records": 10,
                                     "keys": ["raw/a", "raw/copy"]}]


def test_audit_reads_footers_of_a_local_destination(tmp_path: Path) -> None:
    """A clean destination audits OK; foreign files are listed, not counted."""
    write_file(tmp_path, "raw/dt=2026-01-01/a.parquet", 1, {0: list(range(0, 98)),
                                                            1: list(range(0, 50))})
    write_file(tmp_path, "dead-letter/dt=2026-01-01/a.parquet", 1, {0: [98, 99]})
    write_file(tmp_path, "raw/dt=2026-01-02/b.parquet", 2, {0: list(range(100, 150))})
    (tmp_path / "raw" / "dt=2026-01-02" / "notes.parquet").write_bytes(b"not parquet at all")
    settings = load_settings({"DESTINATION": f"file://{tmp_path}"})

    report = audit(settings, LocalSink(settings.require_destination()), None, kafka=False)

    assert report["ok"] is True
    rows = {p["partition"]: p for p in report["partitions"]}
    assert rows[0]["landed"] == [[0, 149]]
    assert rows[0]["records"] == 150
    assert rows[0]["files"] == 3
    assert rows[1]["landed"] == [[0, 49]]
    assert report["foreign_objects"] == ["raw/dt=2026-01-02/notes.parquet"]
    assert report["totals"]["objects"] == 4


class TailOnlySink(LocalSink):
    """The local sink, recording every ranged read and refusing whole-object reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(Destination("file", str(root), "raw"))
        self.ranges: list[tuple[str, int, int]] = []

    def read(self, key: str) -> bytes:
        raise AssertionError(f"audit downloaded the whole of {key}")

    def read_range(self, key: str, start: int, length: int) -> bytes:
        self.ranges.append((key, start, length))
        return super().read_range(key, start, length)


def test_audit_reads_only_the_tail_of_each_file(tmp_path: Path) -> None:
    """One ranged read of the last 64 KiB per file, a second one only for a larger footer."""
    write_file(tmp_path, "raw/dt=2026-01-01/a.parquet", 1, {0: list(range(0, 100))})
    write_file(tmp_path, "raw/dt=2026-01-01/b.parquet", 2, {0: list(range(100, 200))},
               padding=2 * FOOTER_TAIL)  # a footer larger than the first read
    sink = TailOnlySink(tmp_path)
    settings = load_settings({"DESTINATION": f"file://{tmp_path}"})

    report = audit(settings, sink, None, kafka=False)

    assert report["ok"] is True
    assert report["partitions"][0]["landed"] == [[0, 199]]
    sizes = {key: (tmp_path / key).stat().st_size for key, _, _ in sink.ranges}
    assert [(key, length) for key, _, length in sink.ranges] == [
        ("raw/dt=2026-01-01/a.parquet", sizes["raw/dt=2026-01-01/a.parquet"]),
        ("raw/dt=2026-01-01/b.parquet", FOOTER_TAIL),
        ("raw/dt=2026-01-01/b.parquet", sink.ranges[2][2]),
    ]
    assert FOOTER_TAIL < sink.ranges[2][2] < sizes["raw/dt=2026-01-01/b.parquet"]
    assert all(start + length == sizes[key] for key, start, length in sink.ranges)


def test_audit_exits_1_on_a_gap_and_a_duplicate(tmp_path: Path) -> None:
    """The command fails and names both problems, with offsets and files."""
    write_file(tmp_path, "raw/dt=2026-01-01/a.parquet", 1, {0: list(range(0, 100))})
    write_file(tmp_path, "raw/dt=2026-01-01/b.parquet", 2, {0: list(range(150, 200))})
    write_file(tmp_path, "raw/dt=2026-01-01/c.parquet", 3, {0: list(range(180, 220))})

    result = CliRunner().invoke(main, ["audit", "--destination", f"file://{tmp_path}",
                                       "--no-kafka", "--json"])

    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    (row,) = report["partitions"]
    assert [(g["first_offset"], g["last_offset"], g["missing"]) for g in row["gaps"]] == [
        (100, 149, 50)]
    assert [(d["first_offset"], d["last_offset"], d["records"]) for d in row["duplicates"]] == [
        (180, 199, 20)]
    assert report["totals"] == {"objects": 3, "foreign_objects": 0, "records": 190, "gaps": 1,
                                "missing_offsets": 50, "duplicates": 1,
                                "duplicated_records": 20}
    table = CliRunner().invoke(main, ["audit", "--destination", f"file://{tmp_path}",
                                      "--no-kafka"])
    assert "GAP        events[0] offsets 100-149 (50 missing)" in table.output
    assert "DUPLICATE  events[0] offsets 180-199 (20 records)" in table.output
    assert "FAILED" in table.output


def suspects(tmp_path: Path, sink: LocalSink | None = None) -> tuple[LocalSink, dict[str, Any]]:
    """Partition 0 of a destination with a gap between files (10-19) and a segment 20-39
    holding 15 rows (offsets 25-29 absent), audited without Kafka."""
    write_file(tmp_path, "raw/dt=2026-01-01/a.parquet", 1, {0: list(range(0, 10))})
    write_file(tmp_path, "raw/dt=2026-01-01/b.parquet", 2,
               {0: [o for o in range(20, 40) if not 25 <= o <= 29]})
    sink = sink or LocalSink(Destination("file", str(tmp_path), "raw"))
    settings = load_settings({"DESTINATION": f"file://{tmp_path}"})
    report = audit(settings, sink, None, kafka=False)
    (row,) = report["partitions"]
    assert [(g["first_offset"], g["missing"], g["verified"]) for g in row["gaps"]] == [
        (10, 10, False)]
    assert [(h["first_offset"], h["missing"], h["verified"]) for h in row["holes"]] == [
        (20, 5, False)]
    return sink, row


def kafka_holds(records: set[int], **unread: list[tuple[int, int, str]]) -> RecordsRead:
    return RecordsRead({("events", 0): records}, {("events", 0): unread["unread"]}
                       if unread else {})


def test_offsets_kafka_holds_no_record_for_are_not_gaps(tmp_path: Path) -> None:
    """Compaction holes and transaction markers: Kafka delivers only the landed offsets, so
    neither the gap between files nor the segment's missing rows are gaps, and the segment's
    file is not even read (its footer count agrees with Kafka)."""
    sink, row = suspects(tmp_path, TailOnlySink(tmp_path))
    landed = set(range(0, 10)) | {o for o in range(20, 40) if not 25 <= o <= 29}

    verify(sink, row, PartitionOffsets("events", 0, 0, 40, None), kafka_holds(landed))

    assert (row["gaps"], row["holes"], row["unverifiable"]) == ([], [], [])
    assert row["no_record_offsets"] == 15


def test_records_kafka_holds_and_no_file_has_are_gaps_named_exactly(tmp_path: Path) -> None:
    """Kafka delivers 12 and 27 as records: those two are gaps, the rest of each range held no
    record; inside the segment the file's offsets are read to name the missing one."""
    sink, row = suspects(tmp_path)
    landed = set(range(0, 10)) | {o for o in range(20, 40) if not 25 <= o <= 29}

    verify(sink, row, PartitionOffsets("events", 0, 0, 40, None),
           kafka_holds(landed | {12, 27}))

    assert [(g["first_offset"], g["last_offset"], g["missing"], g["verified"], g["after"])
            for g in row["gaps"]] == [(12, 12, 1, True, ["raw/dt=2026-01-01/a.parquet"])]
    assert [(h["first_offset"], h["last_offset"], h["missing"], h["keys"])
            for h in row["holes"]] == [(27, 27, 1, ["raw/dt=2026-01-01/b.parquet"])]
    assert row["no_record_offsets"] == 9 + 4


def test_what_kafka_no_longer_holds_is_not_verifiable_and_does_not_fail(tmp_path: Path) -> None:
    """Retention moved the earliest offset to 15 and 25-29 were not read in time: those
    ranges are named as not verifiable, with why, and the audit stays OK."""
    sink, row = suspects(tmp_path)
    report = {"destination": "x", "group_id": None, "partitions": [row], "foreign_objects": [],
              "kafka": {"checked": True, "available": True, "error": None},
              "totals": {"objects": 2, "records": 25, "gaps": 0, "missing_offsets": 0,
                         "duplicates": 0, "duplicated_records": 0}, "ok": True}

    verify(sink, row, PartitionOffsets("events", 0, 15, 40, None),
           kafka_holds(set(range(20, 25)) | set(range(30, 40)),
                       unread=[(25, 29, "not read within 60 s")]))

    assert (row["gaps"], row["holes"]) == ([], [])
    assert [(u["first_offset"], u["last_offset"], u["why"]) for u in row["unverifiable"]] == [
        (10, 14, "below the topic's earliest offset 15"),
        (25, 29, "not read back from Kafka (not read within 60 s)")]
    assert row["no_record_offsets"] == 5  # 15-19: read, no record
    report["verification"] = {"against_kafka": True, "no_record_offsets": 5,
                              "unverifiable_offsets": 10}
    text = render(report)
    assert ("UNVERIFIED events[0] not verifiable: offsets 10-14 are below the topic's earliest "
            "offset 15") in text
    assert "OK: no gaps" in text


def test_without_kafka_gaps_are_possible_gaps_and_fail(tmp_path: Path) -> None:
    """--no-kafka cannot tell a compaction hole from a loss: exit 1, each gap marked possible."""
    suspects(tmp_path)
    result = CliRunner().invoke(main, ["audit", "--destination", f"file://{tmp_path}",
                                       "--no-kafka"])
    assert result.exit_code == 1, result.output
    assert ("GAP        events[0] offsets 10-19 (10 missing) between "
            "raw/dt=2026-01-01/a.parquet and raw/dt=2026-01-01/b.parquet (possible gap: not "
            "checked against Kafka)") in result.output
    assert "FAILED: 2 possible gap(s) (15 offsets missing)" in result.output
