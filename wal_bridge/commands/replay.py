"""``wal_bridge replay``: re-convert and re-ship stuck segments; rebuild quarantined ones.

Pending segments (sealed, converted, stuck) go through the bridge's own path: the WAL is opened
as ``run`` opens it (lock, recovery), then :meth:`Sealer.convert` and :meth:`Uploader.ship`.
Object keys were fixed at seal time, so a replay of something that already landed finds the
same object (same checksum) and counts it as shipped: replay is idempotent.

A quarantined segment is rebuilt from two sources:

1. every frame of the damaged file whose checksum holds, before and after the damage (the seal
   frame, when it survived, gives the segment's exact offset ranges and counts);
2. Kafka, for the offsets of those ranges that no good frame holds: the same exact-offset read
   the running bridge heals damaged frames with (:func:`wal_bridge.refetch.fetch_runs`: a
   consumer assigned to exact offsets, no group, nothing committed), after checking the
   watermarks. Offsets below
   the earliest one Kafka still holds are reported, precisely, as not recoverable; the segment
   is then left alone unless ``--accept-loss`` says to rebuild what can be.

The records are appended to a new segment through :meth:`Wal.append` and sealed (new object
key), :meth:`Wal.release_quarantined` sets the quarantined file aside
(``quarantine/N.<state>.replayed`` with ``N.replayed.json``, never deleted), and the new
segment is shipped like any other. Replay never names or moves a WAL file itself.

The WAL lock makes replay and a running bridge exclusive: stop the bridge first. (A running
bridge retries stuck segments every 60 s by itself, and re-fetches the offsets of damaged
frames from Kafka by itself; replay is for when an operator fixed the cause, or for quarantined
segments, which the bridge never touches.)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pyarrow as pa

from wal_bridge.commands.common import (
    PartitionOffsets,
    Progress,
    build_settings,
    iso_ms,
    kafka_offsets,
    now_ms,
    settings_options,
    show_runs,
)
from wal_bridge.commands.inspect import inspect_wal
from wal_bridge.config import Settings
from wal_bridge.errors import (
    KafkaUnavailable,
    SinkError,
    WalBridgeError,
    WalLockedError,
)
from wal_bridge.refetch import fetch_runs, split_need
from wal_bridge.wal.codec import BATCH_SCHEMA
from wal_bridge.wal.layout import REPLAYED_SUFFIX, WalLayout
from wal_bridge.wal.lock import lock_holder
from wal_bridge.wal.salvage import RefetchJob, missing_runs
from wal_bridge.wal.segment import (
    Ranges,
    SealInfo,
    batch_ranges,
    merge_ranges,
    ranges_from_json,
    salvage,
)

TP = tuple[str, int]
Run = tuple[int, int]


class ReplayError(WalBridgeError):
    """Replay could not finish; what was done is durable, the rest is left as it was."""


# ------------------------------------------------------------------------------- salvage


@dataclass
class Salvage:
    """What a quarantined segment still holds, and which of its offsets must come from Kafka."""

    seq: int
    file: Path | None
    reason: dict[str, Any]
    batches: list[pa.RecordBatch] = field(default_factory=list)
    seal: SealInfo | None = None
    ranges: Ranges = field(default_factory=dict)
    need: dict[TP, list[Run]] = field(default_factory=dict)

    @property
    def local_records(self) -> int:
        return sum(b.num_rows for b in self.batches)

    @property
    def needed(self) -> int:
        return sum(b - a + 1 for runs in self.need.values() for a, b in runs)


def plan_quarantined(layout: WalLayout, seq: int) -> Salvage:
    """Read a quarantined segment (read-only) and work out what Kafka must supply."""
    entry = next(e for e in layout.read_quarantine() if e.seq == seq)
    data = entry.read()
    plan = Salvage(seq, entry.file if data is not None else None, entry.info)
    if data is not None:
        found = salvage(data)
        plan.batches, plan.seal = found.batches, found.seal
    local: dict[TP, list[int]] = {}
    local_ranges: Ranges = {}
    for batch in plan.batches:
        merge_ranges(local_ranges, batch_ranges(batch))
        topics = batch.column("_topic").dictionary_decode().to_pylist()
        for t, p, o in zip(topics, batch.column("_partition").to_pylist(),
                           batch.column("_offset").to_pylist(), strict=True):
            local.setdefault((t, p), []).append(o)
    if plan.seal is not None:
        plan.ranges = dict(plan.seal.ranges)
    else:
        plan.ranges = ranges_from_json(entry.info.get("ranges", []))
        merge_ranges(plan.ranges, local_ranges)
    for tp, rng in plan.ranges.items():
        have = local.get(tp, [])
        if plan.seal is not None and len(set(have)) >= rng.count:
            continue  # the seal's count confirms every record was read back
        runs = missing_runs(rng, have)
        if runs:
            plan.need[tp] = runs
    return plan


# ------------------------------------------------------------------------------- replaying


@dataclass
class Outcome:
    segment: int
    action: str
    ok: bool
    detail: str = ""
    new_segments: list[int] = field(default_factory=list)
    unrecovered: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"segment": self.segment, "action": self.action, "ok": self.ok,
                "detail": self.detail, "new_segments": self.new_segments,
                "unrecovered": self.unrecovered}


def _watermarks(settings: Settings, topics: Iterable[str]) -> dict[TP, PartitionOffsets]:
    return kafka_offsets(settings, sorted(set(topics)), None)


def rebuild(bridge: Any, settings: Settings, salvage: Salvage, *, accept_loss: bool,
            progress: Progress) -> Outcome:
    """Rebuild one quarantined segment into new WAL segments and move the old file aside."""
    outcome = Outcome(salvage.seq, "rebuild", False)
    lost: list[dict[str, Any]] = []
    kafka_batches: list[pa.RecordBatch] = []
    absent: dict[TP, list[Run]] = {}
    if salvage.need:
        try:
            offsets = _watermarks(settings, (t for t, _ in salvage.need))
        except KafkaUnavailable as exc:
            outcome.detail = (f"needs {salvage.needed} offsets from Kafka, which did not answer: "
                              f"{exc}; left in quarantine")
            return outcome
        fetch, lost = split_need(salvage.need, offsets)
        if lost and not accept_loss:
            outcome.unrecovered = lost
            outcome.detail = ("some offsets cannot be recovered (listed below); left in "
                              "quarantine. Rerun with --accept-loss to rebuild the rest")
            return outcome
        fetched = fetch_runs(settings, fetch, lambda got, total: progress.update(
            f"fetching from Kafka: {got}/{total} records"))
        kafka_batches, absent = fetched.batches, fetched.absent
        progress.done()
    table = pa.Table.from_batches([*salvage.batches, *kafka_batches], schema=BATCH_SCHEMA)
    table = table.unify_dictionaries().combine_chunks()
    table = table.sort_by([("_partition", "ascending"), ("_offset", "ascending")])
    wal = bridge.wal
    before = {s.seq for s in wal.snapshot()}
    if table.num_rows:
        for batch in table.to_batches(max_chunksize=10_000):
            done = wal.append(batch)
            if done < batch.num_rows:
                raise ReplayError(f"segment {salvage.seq}: the disk under the WAL is full; "
                                  "nothing was moved out of quarantine")
        wal.seal()
    new = sorted(s.seq for s in wal.snapshot() if s.seq not in before)
    absent_list: list[dict[str, Any]] = [
        {"topic": t, "partition": p, "first_offset": a, "last_offset": b, "count": b - a + 1}
                   for (t, p), runs in sorted(absent.items()) for a, b in runs]
    wal.release_quarantined(salvage.seq, {
        "segment": salvage.seq, "replayed_at": iso_ms(now_ms()), "new_segments": new,
        "records": table.num_rows, "from_file": salvage.local_records,
        "from_kafka": table.num_rows - salvage.local_records,
        "unrecovered": lost, "absent_in_kafka": absent_list,
        "quarantine": salvage.reason,
    })
    outcome.ok = True
    outcome.new_segments = new
    outcome.unrecovered = lost
    outcome.detail = (f"{table.num_rows} records ({salvage.local_records} from the file, "
                      f"{table.num_rows - salvage.local_records} from Kafka) into segment(s) "
                      f"{', '.join(str(s) for s in new) or '-'}")
    if absent_list:
        skipped = sum(a["count"] for a in absent_list)
        outcome.detail += (f"; {skipped} offsets have no record in Kafka (transaction markers "
                           "or compaction)")
    return outcome


def refetch(bridge: Any, job: RefetchJob) -> Outcome:
    """Read one re-fetch job's offsets from Kafka, as the running bridge's stage does."""
    try:
        lost = bridge.refetcher.heal(job)
    except KafkaUnavailable as exc:
        return Outcome(job.of_segment, "refetch", False, f"Kafka did not answer: {exc}")
    new = [s.seq for s in bridge.wal.snapshot() if s.seq == job.seq]
    records = sum(s.records for s in bridge.wal.snapshot() if s.seq == job.seq)
    detail = f"{records} records of its damaged frames read again from Kafka"
    if lost:
        detail += ("; the offsets below are gone from Kafka: kept in quarantine (release them "
                   "with --quarantined --accept-loss)")
    return Outcome(job.of_segment, "refetch", True, detail, new_segments=new, unrecovered=lost)


def ship(bridge: Any, seq: int) -> Outcome:
    """Convert (if needed) and upload one pending segment through the bridge's own stages."""
    segment = next((s for s in bridge.wal.snapshot() if s.seq == seq), None)
    if segment is None:
        return Outcome(seq, "ship", True, "already shipped")
    if not segment.converted:
        converted = bridge.sealer.convert(segment)
        salvaged = next((s for s in bridge.wal.snapshot() if s.seq == seq), None)
        if not converted and salvaged is not None and seq not in bridge.wal.quarantined():
            # Damage found at conversion was salvaged (its offsets go to a re-fetch): convert
            # what the segment now holds.
            converted = bridge.sealer.convert(salvaged)
        if not converted:
            if salvaged is None and seq not in bridge.wal.quarantined():
                return Outcome(seq, "convert", True, "damaged at conversion; every frame of it "
                               "was damaged: its offsets are re-fetched from Kafka")
            quarantined = seq in bridge.wal.quarantined()
            return Outcome(seq, "convert", False, "quarantined at conversion: it no longer "
                           "decodes" if quarantined else "conversion failed (disk full?)")
        segment = next(s for s in bridge.wal.snapshot() if s.seq == seq)
    assert segment.seal is not None
    if bridge.uploader.ship(segment):
        return Outcome(seq, "ship", True, f"shipped to {segment.seal.key}")
    error = "upload interrupted (timeout): the destination kept failing"
    status = bridge.wal.layout.read_upload_status(seq)
    if status is not None:
        error = str(status.get("last_error", error))
    if bridge.halt.is_set():
        error = f"gave up after the time limit; last error: {error}"
    return Outcome(seq, "ship", False, error)


def _targets(ids: tuple[str, ...]) -> set[int]:
    seqs = set()
    for raw in ids:
        digits = Path(raw).name.split(".")[0]
        if not digits.isdigit():
            raise click.BadParameter(f"{raw!r} is not a segment number", param_hint="SEGMENT")
        seqs.add(int(digits))
    return seqs


# ------------------------------------------------------------------------------- dry run


def _pending_plan(e: dict[str, Any]) -> str:
    if e["damage"] and e["state"] == "open":
        action = (f"damaged ({e['damage']['reason']}): opening the WAL quarantines it; "
                  "rebuild it with --quarantined")
    elif e["damage"]:
        action = (f"damaged ({e['damage']['reason']}): opening the WAL salvages it (frames "
                  "that verify kept, the others re-fetched from Kafka), then convert, upload")
    elif e["state"] == "open":
        action = "seal (as at every start), convert, upload"
    elif e["state"] == "sealed":
        action = f"convert, upload to {e['key']}"
    else:
        action = f"upload to {e['key']}"
    why = ""
    if e["upload"]:
        u = e["upload"]
        why = (f" [{'stuck' if u['stuck'] else 'retrying'} after {u['attempts']} "
               f"attempt(s): {u['last_error']}]")
    return f"  {e['segment']:010d}  {e['state']:<10} {e['records']:>7} records  -> {action}{why}"


def _quarantined_plan(settings: Settings, q: dict[str, Any]) -> list[str]:
    salvage = plan_quarantined(WalLayout(settings.wal_dir), q["segment"])
    lines = [f"  {q['segment']:010d}  quarantined ({q['reason']})",
             f"      {salvage.local_records} records readable in the file"
             + (" (seal frame intact)" if salvage.seal else "")]
    if salvage.need:
        try:
            offsets = _watermarks(settings, (t for t, _ in salvage.need))
        except KafkaUnavailable as exc:
            return [*lines, f"      needs from Kafka: {_need_text(salvage.need)}; Kafka did "
                            f"not answer ({exc})"]
        fetch, lost = split_need(salvage.need, offsets)
        if fetch:
            lines.append(f"      fetch from Kafka: {_need_text(fetch)}")
        lines += [f"      NOT RECOVERABLE: {item['topic']}[{item['partition']}] "
                  f"{item['first_offset']}-{item['last_offset']} ({item['count']}): "
                  f"{item['why']}" for item in lost]
        if lost:
            return [*lines, "      -> left in quarantine unless --accept-loss"]
    return [*lines, "      -> write a new segment, ship it, move the file aside "
                    f"({q['file'] or 'its reason file'}{REPLAYED_SUFFIX})"]


def print_plan(settings: Settings, ids: set[int], *, everything: bool, quarantined_only: bool
               ) -> None:
    """What replay would do, from a read-only look at the WAL (and Kafka's watermarks)."""
    report = inspect_wal(settings.wal_dir)
    lines = ["Replay plan (dry run: nothing is changed)", ""]
    lock = lock_holder(settings.wal_dir)
    if lock["locked"]:
        lines += [f"NOTE: the bridge is running on this WAL (pid {lock['pid']}); replay itself "
                  "refuses until it stops (it retries stuck segments every 60 s by itself).", ""]
    pending = [] if quarantined_only else [
        e for e in report["segments"] if everything or e["segment"] in ids]
    quarantined = [q for q in report["quarantined"]
                   if everything or quarantined_only or q["segment"] in ids]
    lines += [_pending_plan(e) for e in pending]
    if everything:
        lines += [f"  {r['segment']:010d}  re-fetch  {r['records']:>7} offsets of damaged "
                  f"segment {r['of_segment']} from Kafka: "
                  + ", ".join(f"{x['topic']}[{x['partition']}] {x['first_offset']}-"
                              f"{x['last_offset']}" for x in r["ranges"])
                  for r in report["refetch"]]
    for q in quarantined:
        lines += _quarantined_plan(settings, q)
    if not pending and not quarantined and not (everything and report["refetch"]):
        lines.append("  nothing to replay")
    click.echo("\n".join(lines))


def _need_text(need: dict[TP, list[Run]]) -> str:
    return "; ".join(f"{t}[{p}] {show_runs(runs)} ({sum(b - a + 1 for a, b in runs)})"
                     for (t, p), runs in sorted(need.items()))


# ------------------------------------------------------------------------------- command


def replay_wal(settings: Settings, ids: set[int], *, everything: bool, quarantined_only: bool,
               accept_loss: bool, timeout: float) -> list[Outcome]:
    from wal_bridge.runtime import Bridge

    try:
        bridge = Bridge(settings)
    except WalLockedError as exc:
        raise WalLockedError(f"{exc}. Replay needs the WAL to itself; a running bridge retries "
                             "stuck segments every 60 s on its own") from None
    timer = threading.Timer(timeout, bridge.halt.set)
    timer.daemon = True
    timer.start()
    progress = Progress()
    outcomes: list[Outcome] = []
    try:
        try:
            bridge.sink.check()
        except SinkError as exc:
            if not exc.transient:
                raise
        refetched: list[int] = []
        if everything:  # the running bridge does these by itself; a stopped one here
            for job in bridge.wal.refetch_jobs():
                progress.update(f"re-fetching segment {job.of_segment}'s damaged offsets",
                                force=True)
                outcomes.append(refetch(bridge, job))
                refetched.extend(outcomes[-1].new_segments)
        q_seqs = bridge.wal.quarantined()
        q_targets = [s for s in q_seqs if everything or quarantined_only or s in ids]
        pending = [] if quarantined_only else [
            s.seq for s in bridge.wal.snapshot() if everything or s.seq in ids] + refetched
        unknown = ids - set(q_seqs) - {s.seq for s in bridge.wal.snapshot()}
        for seq in sorted(unknown):
            outcomes.append(Outcome(seq, "none", False, "no such segment in the WAL (shipped "
                                    "already, or never existed)"))
        for seq in q_targets:
            progress.update(f"rebuilding quarantined segment {seq}", force=True)
            outcome = rebuild(bridge, settings, plan_quarantined(bridge.wal.layout, seq),
                              accept_loss=accept_loss, progress=progress)
            outcomes.append(outcome)
            pending.extend(outcome.new_segments)
        for i, seq in enumerate(sorted(set(pending)), 1):
            progress.update(f"shipping segment {seq} ({i}/{len(set(pending))})", force=True)
            outcomes.append(ship(bridge, seq))
        progress.done()
    finally:
        timer.cancel()
        bridge.halt.set()
        bridge.wal.close()
    return outcomes


@click.command()
@click.argument("segments", nargs=-1, metavar="[SEGMENT]...")
@settings_options()
@click.option("--all", "everything", is_flag=True,
              help="Every pending segment (sealed, converted, stuck), every pending re-fetch of "
                   "damaged offsets, and every quarantined segment.")
@click.option("--quarantined", "quarantined_only", is_flag=True,
              help="Every quarantined segment.")
@click.option("--dry-run", is_flag=True, help="Print what would be done; change nothing.")
@click.option("--accept-loss", is_flag=True,
              help="Rebuild a quarantined segment even when some of its offsets are gone from "
                   "Kafka (they are listed, and recorded in N.replayed.json).")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds to keep retrying an unreachable destination before giving up.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def replay(*, segments: tuple[str, ...], everything: bool, quarantined_only: bool, dry_run: bool,
           accept_loss: bool, timeout: float, as_json: bool, **values: Any) -> None:
    """Re-convert and re-ship stuck segments; rebuild quarantined ones from the file and Kafka.

    Name segments by number, or use --all / --quarantined. Stop the bridge first: replay takes
    the WAL's lock.
    """
    if not segments and not everything and not quarantined_only:
        raise click.UsageError("name segments to replay, or use --all or --quarantined")
    ids = _targets(segments)
    settings = build_settings(values)
    if dry_run:
        print_plan(settings, ids, everything=everything, quarantined_only=quarantined_only)
        return
    settings.require_destination()
    outcomes = replay_wal(settings, ids, everything=everything,
                          quarantined_only=quarantined_only, accept_loss=accept_loss,
                          timeout=timeout)
    if as_json:
        click.echo(json.dumps([o.to_json() for o in outcomes], indent=2))
    else:
        if not outcomes:
            click.echo("nothing to replay")
        for o in outcomes:
            mark = "ok    " if o.ok else "FAILED"
            click.echo(f"{mark} {o.segment:010d} {o.action}: {o.detail}")
            for item in o.unrecovered:
                click.echo(f"       not recovered: {item['topic']}[{item['partition']}] "
                           f"{item['first_offset']}-{item['last_offset']} ({item['count']}): "
                           f"{item['why']}")
    # Lost offsets fail the command unless --accept-loss asked to rebuild without them.
    if any(not o.ok or (o.unrecovered and not accept_loss) for o in outcomes):
        raise SystemExit(1)
