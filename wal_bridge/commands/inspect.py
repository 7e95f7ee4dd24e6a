"""``wal_bridge inspect``: what is in a WAL directory, for people (a table) or scripts (JSON).

Strictly read-only: it never takes the WAL's lock and never writes, so it is safe while the
bridge runs. It reads each file once and copes with the bridge moving things meanwhile: an open
segment may end in a frame being written (shown as in progress, not as damage), a segment may
be sealed or shipped between listing and reading.

Segment states: ``open`` (the active segment), ``sealed`` (waiting for conversion),
``converted`` (its Parquet file is in the outbox, waiting for upload; ``stuck`` when its upload
failed permanently), and ``quarantined`` (damaged beyond healing, set aside; see
``wal_bridge replay``).

Salvage (see :mod:`wal_bridge.wal.recovery`): the damaged sealed segments recovery rewrote
(``damaged``, with the bytes of verified frames kept and the bytes set aside), the offset
ranges waiting to be read again from Kafka (``refetch``) and those read already
(``refetched``), and the ranges Kafka no longer held (``unrecoverable``: data loss).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from wal_bridge.commands.common import (
    echo_json,
    human_age,
    human_bytes,
    iso_ms,
    now_ms,
    settings_options,
    specs,
    table,
)
from wal_bridge.config import Settings, load_settings
from wal_bridge.errors import ConfigError
from wal_bridge.wal.codec import SEGMENT_HEADER_SIZE, DecodeError
from wal_bridge.wal.layout import WalLayout, read_json
from wal_bridge.wal.lock import lock_holder
from wal_bridge.wal.salvage import inventory
from wal_bridge.wal.segment import (
    OPEN,
    SEALED,
    ScanResult,
    merge_ranges,
    ranges_from_json,
    ranges_to_json,
    scan,
)

STATES = ("open", "sealed", "converted", "quarantined")


# ------------------------------------------------------------------------------- reading


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _segment(layout: WalLayout, seq: int, state: str, data: bytes, *, locked: bool,
             now: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "segment": seq, "state": state, "file": layout.relative(layout.segment(seq, state)),
        "records": 0, "bytes": len(data), "parquet_bytes": 0, "dead_letter_bytes": 0,
        "created_at": None, "age_s": None, "sealed_at": None, "key": None,
        "dead_letter_key": None, "ranges": [], "tail": None, "damage": None, "upload": None,
    }
    if state == OPEN and len(data) < SEGMENT_HEADER_SIZE:
        # Created, its header not yet (or never) written: holds no record; a start removes it.
        entry["tail"] = {"status": "in_progress" if locked else "torn", "bytes": len(data),
                         "reason": "segment header not written yet"}
        return entry
    try:
        result: ScanResult | None = scan(data)
    except DecodeError as exc:
        result = None
        entry["damage"] = {"reason": f"segment header: {exc.reason}", "byte_offset": exc.offset}
    if result is not None:
        entry["records"] = result.records
        entry["created_at"] = iso_ms(result.created_ms)
        entry["age_s"] = round(max(0, now - result.created_ms) / 1000, 3)
        entry["ranges"] = ranges_to_json(result.ranges)
        if result.seal is not None:
            entry.update(sealed_at=iso_ms(result.seal.sealed_at_ms), key=result.seal.key,
                         dead_letter_key=result.seal.dead_letter_key)
        error = result.error
        if error is not None and state == OPEN and result.tail_only:
            # The bridge may be writing this frame right now; a stopped bridge cuts it off
            # (and keeps the bytes in N.torn) at its next start. Neither is damage.
            entry["tail"] = {
                "status": "in_progress" if locked else "torn",
                "bytes": result.size - result.valid_end, "reason": error.reason,
            }
        elif error is not None:
            entry["damage"] = {"reason": error.reason, "byte_offset": error.offset}
        elif state == SEALED and result.seal is None:
            entry["damage"] = {"reason": "sealed segment has no seal frame",
                               "byte_offset": result.size}
    if state == SEALED:
        parquet = layout.parquet(seq)
        if parquet.exists():
            entry["state"] = "converted"
            entry["parquet_bytes"] = _size(parquet)
            entry["dead_letter_bytes"] = _size(layout.dead_letters(seq))
        status = layout.read_upload_status(seq)
        if status is not None:
            entry["upload"] = {
                "attempts": int(status.get("attempts", 0)),
                "last_error": status.get("last_error"),
                "last_attempt_at": iso_ms(status.get("last_attempt_ms")),
                "stuck": bool(status.get("stuck", False)),
            }
    return entry


def _segments(layout: WalLayout, locked: bool, now: int
              ) -> tuple[list[dict[str, Any]], list[int]]:
    entries = [_segment(layout, seq, state, data, locked=locked, now=now)
               for seq, state, data in layout.read_segments()]
    seqs = {e["segment"] for e in entries}
    return entries, sorted(layout.outbox_segments() - seqs)


def _quarantined(layout: WalLayout, now: int
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    entries = []
    for q in layout.read_quarantine():
        info = q.info
        data = q.read()
        readable = None
        if data is not None:
            with contextlib.suppress(DecodeError):
                readable = scan(data).records
        at = info.get("quarantined_at_ms")
        ranges = info.get("ranges", [])
        entries.append({
            "segment": int(info.get("segment", q.seq)), "state": "quarantined",
            "file": layout.relative(q.file) if q.file is not None else None,
            "bytes": len(data) if data is not None else 0,
            "reason": info.get("reason"), "byte_offset": info.get("byte_offset"),
            "quarantined_at": iso_ms(at),
            "age_s": round(max(0, now - int(at)) / 1000, 3) if at is not None else None,
            "ranges": ranges, "records": sum(int(r.get("records", 0)) for r in ranges),
            "readable_records": readable, "of_segment": info.get("of_segment"),
            "lost": info.get("lost"),
        })
    replayed = [{
        "segment": info.get("segment"), "replayed_at": info.get("replayed_at"),
        "new_segments": info.get("new_segments", []),
        "records": info.get("records"), "unrecovered": info.get("unrecovered", []),
        "file": layout.relative(path),
    } for path, info in layout.read_replayed()]
    return entries, replayed


def _salvage(layout: WalLayout, quarantined: list[dict[str, Any]]) -> dict[str, Any]:
    """Damaged files kept, re-fetches pending and done, and offsets lost (for ``inspect``)."""
    damaged = []
    for seq, path in layout.damaged_files():
        try:
            data = path.read_bytes()
            inv = inventory(data)
            kept = sum(k.end - k.offset for k in inv.kept)
        except (FileNotFoundError, DecodeError):
            data, kept = b"", 0
        damaged.append({"segment": seq, "file": layout.relative(path), "bytes": len(data),
                        "salvaged_bytes": kept, "damaged_bytes": len(data) - kept})
    refetch = []
    for seq, job in layout.read_refetch():
        ranges = job.get("ranges", [])
        refetch.append({"segment": seq, "of_segment": job.get("of_segment"), "ranges": ranges,
                        "records": sum(int(r.get("count", 0)) for r in ranges),
                        "reason": job.get("reason"), "byte_offset": job.get("byte_offset"),
                        "created_at": iso_ms(job.get("created_at_ms"))})
    refetched = [{"segment": seq, "of_segment": info.get("of_segment"),
                  "ranges": info.get("ranges", []), "records": info.get("records"),
                  "lost": info.get("lost", []),
                  "completed_at": iso_ms(info.get("completed_at_ms"))}
                 for seq, info in layout.read_refetched()]
    unrecoverable = [{**item, "segment": q["segment"], "of_segment": q.get("of_segment")}
                     for q in quarantined for item in q.get("lost") or []]
    return {"damaged": damaged, "refetch": refetch, "refetched": refetched,
            "unrecoverable": unrecoverable}


def _partitions(segments: Iterable[dict[str, Any]], quarantined: Iterable[dict[str, Any]],
                shipped: dict[tuple[str, int], int]) -> list[dict[str, Any]]:
    pending: dict[tuple[str, int], Any] = {}
    for entry in segments:
        merge_ranges(pending, ranges_from_json(entry["ranges"]))
    held_q: dict[tuple[str, int], Any] = {}
    for entry in quarantined:
        merge_ranges(held_q, ranges_from_json(entry["ranges"]))
    rows = []
    for tp in sorted(set(pending) | set(held_q) | set(shipped)):
        rng, q = pending.get(tp), held_q.get(tp)
        rows.append({
            "topic": tp[0], "partition": tp[1],
            "shipped_next_offset": shipped.get(tp),
            "pending_first_offset": rng.first if rng else None,
            "pending_last_offset": rng.last if rng else None,
            "pending_records": rng.count if rng else 0,
            "quarantined_first_offset": q.first if q else None,
            "quarantined_last_offset": q.last if q else None,
            "quarantined_records": q.count if q else 0,
        })
    return rows


def inspect_wal(root: Path, now: int | None = None) -> dict[str, Any]:
    """Everything ``inspect`` shows, as plain data (the ``--json`` output)."""
    if not root.is_dir():
        raise ConfigError(f"WAL_DIR (--wal-dir)={str(root)!r}: no such directory")
    now = now_ms() if now is None else now
    layout = WalLayout(root)
    lock = lock_holder(root)
    segments, orphans = _segments(layout, lock["locked"], now)
    quarantined, replayed = _quarantined(layout, now)
    state_json = read_json(layout.state) or {}
    shipped = layout.read_shipped().next_offsets
    torn = [{"segment": seq, "file": layout.relative(p), "bytes": _size(p)}
            for seq, p in layout.torn_files()]
    salvage = _salvage(layout, quarantined)
    by_state = dict.fromkeys(STATES, 0)
    for entry in segments:
        by_state[entry["state"]] += 1
    by_state["quarantined"] = len(quarantined)
    ages = [e["age_s"] for e in segments if e["age_s"] is not None and e["records"]]
    totals = {
        "segments": len(segments) + len(quarantined), "by_state": by_state,
        "records": sum(e["records"] for e in segments),
        "bytes": sum(e["bytes"] + e["parquet_bytes"] + e["dead_letter_bytes"] for e in segments),
        "quarantined_bytes": sum(e["bytes"] for e in quarantined),
        "oldest_age_s": max(ages) if ages else None,
        "stuck": sum(1 for e in segments if e["upload"] and e["upload"]["stuck"]),
        "retrying": sum(1 for e in segments if e["upload"] and not e["upload"]["stuck"]),
        "damaged": sum(1 for e in segments if e["damage"]),
        "salvaged_bytes": sum(d["salvaged_bytes"] for d in salvage["damaged"]),
        "damaged_bytes": sum(d["damaged_bytes"] for d in salvage["damaged"]),
        "refetch_pending_records": sum(r["records"] for r in salvage["refetch"]),
        "refetched_records": sum(int(r["records"] or 0) for r in salvage["refetched"]),
        "unrecoverable_records": sum(int(u.get("count", 0)) for u in salvage["unrecoverable"]),
    }
    return {
        "wal_dir": str(root), "generated_at": iso_ms(now),
        "instance_id": layout.read_identity(),
        "lock": {**lock, "running": lock["locked"]},
        "last_shipped_segment": state_json.get("last_shipped_segment"),
        "shipped": [{"topic": t, "partition": p, "next_offset": n}
                    for (t, p), n in sorted(shipped.items())],
        "segments": segments, "quarantined": quarantined, "replayed": replayed,
        "torn": torn, "orphan_parquet": orphans, **salvage,
        "partitions": _partitions(segments, quarantined, shipped), "totals": totals,
    }


# ------------------------------------------------------------------------------- for people


def _range_text(r: dict[str, Any]) -> str:
    return f"{r['topic']}[{r['partition']}] {r['first_offset']}-{r['last_offset']}"


def _note(entry: dict[str, Any]) -> str:
    if entry["damage"]:
        d = entry["damage"]
        then = ("salvaged at next start: verified frames kept, the rest re-fetched"
                if entry["state"] != "open" else "quarantined at next start")
        return f"DAMAGED at byte {d['byte_offset']}: {d['reason']} ({then})"
    if entry["tail"]:
        t = entry["tail"]
        if t["status"] == "in_progress":
            return f"writing ({t['bytes']} bytes of a frame in progress)"
        return f"torn tail of {t['bytes']} bytes (cut at next start)"
    upload = entry["upload"]
    if upload:
        kind = "STUCK" if upload["stuck"] else "retrying"
        return f"{kind} after {upload['attempts']} attempt(s): {upload['last_error']}"
    return ""


def _render_salvage(report: dict[str, Any]) -> list[str]:
    """The re-fetches, the unrecoverable offsets and the damaged files kept, for people."""
    out: list[str] = []
    if report["refetch"] or report["refetched"]:
        out += ["", "Re-fetch from Kafka (offsets of damaged frames):"]
        out.append(table(
            ["SEGMENT", "OF SEGMENT", "STATUS", "RECORDS", "OFFSETS"],
            [[f"{r['segment']:010d}", f"{int(r['of_segment'] or 0):010d}", status,
              r["records"], ", ".join(_range_text(x) for x in r["ranges"]) or "-"]
             for status, rows in (("pending", report["refetch"]), ("done", report["refetched"]))
             for r in rows], right=(3,)))
    if report["unrecoverable"]:
        out += ["", "UNRECOVERABLE (damaged in the WAL and gone from Kafka: data loss):"]
        out.append(table(["TOPIC", "PARTITION", "OFFSETS", "COUNT", "OF SEGMENT", "WHY"],
                         [[u["topic"], u["partition"], f"{u['first_offset']}-{u['last_offset']}",
                           u["count"], u.get("of_segment") or "-", u.get("why", "")]
                          for u in report["unrecoverable"]], right=(1, 3)))
    if report["damaged"]:
        out += ["", "Damaged segments salvaged at recovery (kept for reference): " + ", ".join(
            f"{d['file']} ({d['salvaged_bytes']} bytes kept, {d['damaged_bytes']} set aside)"
            for d in report["damaged"])]
    return out


def render(report: dict[str, Any]) -> str:
    lock = report["lock"]
    held = (f"held by pid {lock['pid']} (the bridge is running)" if lock["locked"]
            else "free (no bridge running on this WAL)")
    out = [f"WAL {report['wal_dir']}  instance {report['instance_id'] or '-'}  lock {held}", ""]
    rows = []
    for e in report["segments"]:
        ranges = e["ranges"] or [None]
        for i, r in enumerate(ranges):
            first = i == 0
            rows.append([
                f"{e['segment']:010d}" if first else "", e["state"] if first else "",
                e["records"] if first else "",
                human_bytes(e["bytes"] + e["parquet_bytes"] + e["dead_letter_bytes"])
                if first else "",
                human_age(e["age_s"]) if first else "",
                f"{_range_text(r)} ({r['records']})" if r else "-",
                (e["key"] or ("(at seal)" if e["state"] == "open" else "-")) if first else "",
                _note(e) if first else "",
            ])
    if rows:
        out.append(table(["SEGMENT", "STATE", "RECORDS", "BYTES", "AGE", "OFFSETS",
                          "OBJECT KEY", "NOTE"], rows, right=(2, 3, 4)))
    else:
        out.append("no segments: everything consumed has been shipped")
    if report["quarantined"]:
        out += ["", "Quarantined (replay with `wal_bridge replay --quarantined`):"]
        qrows = []
        for q in report["quarantined"]:
            ranges = ", ".join(_range_text(r) for r in q["ranges"]) or "unknown"
            qrows.append([f"{q['segment']:010d}", q["file"] or "-", q["readable_records"],
                          human_age(q["age_s"]), ranges,
                          q["reason"] if q["byte_offset"] is None
                          else f"at byte {q['byte_offset']}: {q['reason']}"])
        out.append(table(["SEGMENT", "FILE", "READABLE", "AGE", "OFFSETS", "REASON"], qrows,
                         right=(2, 3)))
    if report["replayed"]:
        out += ["", "Replayed quarantine (kept for reference):"]
        out.append(table(["SEGMENT", "REPLAYED AT", "RECORDS", "NEW SEGMENTS", "UNRECOVERED"],
                         [[r["segment"], r["replayed_at"], r["records"],
                           ",".join(str(s) for s in r["new_segments"]) or "-",
                           len(r["unrecovered"]) or "-"] for r in report["replayed"]]))
    out += _render_salvage(report)
    if report["torn"]:
        out += ["", "Torn tails cut off at recovery (kept for reference): " + ", ".join(
            f"{t['file']} ({t['bytes']} bytes)" for t in report["torn"])]
    if report["orphan_parquet"]:
        out += ["", "Parquet files in the outbox without a segment: " + ", ".join(
            f"{s:010d}" for s in report["orphan_parquet"])]
    if report["partitions"]:
        out += ["", "Partitions:"]
        prow = []
        for p in report["partitions"]:
            pending = (f"{p['pending_first_offset']}-{p['pending_last_offset']}"
                       if p["pending_records"] else "-")
            quarantined = (f"{p['quarantined_first_offset']}-{p['quarantined_last_offset']}"
                           if p["quarantined_records"] else "-")
            prow.append([p["topic"], p["partition"], p["shipped_next_offset"]
                         if p["shipped_next_offset"] is not None else "-",
                         pending, p["pending_records"], quarantined])
        out.append(table(["TOPIC", "PARTITION", "SHIPPED UP TO", "PENDING", "RECORDS",
                          "QUARANTINED"], prow, right=(1, 2, 4)))
    t = report["totals"]
    states = ", ".join(f"{n} {s}" for s, n in t["by_state"].items())
    out += ["", f"Total: {t['segments']} segments ({states}); {t['records']} records, "
                f"{human_bytes(t['bytes'])} pending; oldest {human_age(t['oldest_age_s'])}; "
                f"{t['stuck']} stuck, {t['damaged']} damaged; salvaged "
                f"{human_bytes(t['salvaged_bytes'])}, {t['refetch_pending_records']} offsets "
                f"to re-fetch, {t['unrecoverable_records']} unrecoverable"]
    return "\n".join(out)


@click.command()
@click.argument("wal_dir_arg", metavar="[WAL_DIR]", required=False, type=click.Path())
@settings_options(specs("wal_dir"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def inspect(wal_dir_arg: str | None, as_json: bool, wal_dir: str | None) -> None:
    """Show what the WAL holds: segments by state, offsets, keys, stuck and quarantined ones.

    Read-only and lock-free: safe while the bridge runs.
    """
    settings: Settings = load_settings({"WAL_DIR": wal_dir_arg or wal_dir})
    report = inspect_wal(settings.wal_dir)
    if as_json:
        echo_json(report)
    else:
        click.echo(render(report))
