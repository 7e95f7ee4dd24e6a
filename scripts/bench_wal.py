"""WAL recovery scan and segment-to-Parquet conversion, measured in isolation.

A child of scripts/bench, run in the project's virtual environment. It fills a scratch WAL
directory with sealed segments of benchmark events through the real ``Wal.append`` (fsync
on, BATCH_SIZE records per segment, a few frames per segment as polled batches make them),
then measures:

- recovery: ``Wal.open`` on that directory, ``recovery.scanned_bytes / recovery.duration_s``,
  with the files in the page cache (warm: a restart) and dropped from it with
  ``posix_fadvise(DONTNEED)`` (cold: a reboot), plus a cProfile of one warm open;
- conversion: the service's ``Sealer.convert`` (decode the segment, JSON to typed columns,
  Snappy Parquet, fsync, rename) on some of the segments, in records/s and segment MB/s, plus a
  cProfile.

Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from scripts.bench_events import payloads
from wal_bridge.config import Destination
from wal_bridge.logs import configure
from wal_bridge.wal.codec import RecordColumns
from wal_bridge.wal.log import Wal

PARTITIONS = 6
TOPIC = "events-stream"
DISTINCT_VALUE_LISTS = 8  # value lists cycled through, so that building 1 GB stays quick


def log(message: str) -> None:
    sys.stderr.write(f"[bench:wal] {message}\n")
    sys.stderr.flush()


def open_wal(root: Path, batch_size: int) -> Wal:
    return Wal.open(root, keys=Destination("gs", "bucket", "raw"), batch_size=batch_size,
                    batch_timeout=3600.0, instance_id="bench")


def build(root: Path, target_bytes: int, batch_size: int, frame_records: int) -> dict[str, Any]:
    """Append events until the sealed segments hold ``target_bytes``; return what was built."""
    wal = open_wal(root, batch_size)
    pool = [payloads(k * frame_records, frame_records) for k in range(DISTINCT_VALUE_LISTS)]
    started = time.monotonic()
    records = frames = 0
    try:
        while wal.total_bytes() < target_bytes:
            values = pool[frames % len(pool)]
            n = len(values)
            columns = RecordColumns(
                topics=[TOPIC] * n,
                partitions=[(records + j) % PARTITIONS for j in range(n)],
                offsets=[(records + j) // PARTITIONS for j in range(n)],
                timestamps=[1_767_225_600_000 + records + j for j in range(n)],
                keys=[None] * n, values=values, headers=[None] * n,
            )
            wal.append(columns.to_arrow())
            records += n
            frames += 1
            if frames % 200 == 0:
                log(f"built {wal.total_bytes() / 1e6:,.0f} / {target_bytes / 1e6:,.0f} MB")
        wal.seal()
    finally:
        wal.close()
    segments = sorted((root / "segments").glob("*.sealed"))
    return {
        "records": records, "segments": len(segments),
        "bytes": sum(p.stat().st_size for p in segments),
        "build_s": round(time.monotonic() - started, 2),
        "records_per_segment": batch_size, "records_per_frame": frame_records,
    }


def drop_cache(root: Path) -> None:
    """Evict the WAL's files from the page cache (clean pages only: they were fsynced)."""
    for path in (root / "segments").iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def recover_once(root: Path, batch_size: int) -> dict[str, float]:
    wal = open_wal(root, batch_size)
    try:
        report = wal.recovery
        return {"scanned_bytes": report.scanned_bytes, "duration_s": report.duration_s,
                "mb_per_s": report.scanned_bytes / report.duration_s / 1e6,
                "segments": len(wal.snapshot())}
    finally:
        wal.close()


def top_functions(profile: cProfile.Profile, limit: int = 14) -> list[dict[str, Any]]:
    """The functions with the most own time, with their cumulative time (seconds)."""
    stats = pstats.Stats(profile, stream=io.StringIO())
    rows = []
    for (filename, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{_short(filename)}:{line}({name})", "calls": calls,
                     "own_s": round(tottime, 4), "cumulative_s": round(cumtime, 4)})
    rows.sort(key=lambda r: r["own_s"], reverse=True)
    return rows[:limit]


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/wal_bridge/", "/lib/python"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return ("wal_bridge/" + tail) if marker == "/wal_bridge/" else tail
    return filename


def measure_recovery(root: Path, batch_size: int, repeats: int) -> dict[str, Any]:
    warm = [recover_once(root, batch_size) for _ in range(repeats)]
    drop_cache(root)
    cold = recover_once(root, batch_size)
    profile = cProfile.Profile()
    profile.enable()
    profiled = recover_once(root, batch_size)
    profile.disable()
    rates = [w["mb_per_s"] for w in warm]
    return {
        "scanned_bytes": warm[0]["scanned_bytes"], "segments": warm[0]["segments"],
        "warm_mb_per_s": round(statistics.median(rates), 1),
        "warm_runs_mb_per_s": [round(r, 1) for r in rates],
        "warm_duration_s": round(statistics.median(w["duration_s"] for w in warm), 3),
        "cold_mb_per_s": round(cold["mb_per_s"], 1),
        "cold_duration_s": round(cold["duration_s"], 3),
        "profiled_duration_s": round(profiled["duration_s"], 3),
        "profile_top": top_functions(profile),
    }


def measure_conversion(root: Path, batch_size: int, count: int,
                       max_record_bytes: int) -> dict[str, Any]:
    """Convert ``count`` sealed segments with the sealer the running service wires up."""
    from wal_bridge.config import load_settings
    from wal_bridge.runtime import Bridge

    settings = load_settings({
        "WAL_DIR": str(root), "DESTINATION": f"file://{root.parent / (root.name + '-landed')}",
        "BATCH_SIZE": str(batch_size), "BATCH_TIMEOUT": "3600", "METRICS_PORT": "0",
        "MAX_RECORD_BYTES": str(max_record_bytes), "INSTANCE_ID": "bench",
    })
    bridge = Bridge(settings)
    try:
        pending = bridge.wal.to_convert()
        # The first conversion pins the schema (inferred from the data): a one-off, not timed.
        if pending and not bridge.sealer.convert(pending[0]):
            raise RuntimeError(f"segment {pending[0].seq} did not convert")
        timed, profiled = pending[1 : count + 1], pending[count + 1 : count + 1 + count // 2]
        records = in_bytes = 0
        started = time.monotonic()
        for segment in timed:
            if not bridge.sealer.convert(segment):
                raise RuntimeError(f"segment {segment.seq} did not convert")
            records += segment.records
            in_bytes += segment.bytes
        elapsed = time.monotonic() - started
        out_bytes = sum(bridge.wal.parquet_path(s.seq).stat().st_size for s in timed)
        profile = cProfile.Profile()  # a separate pass: cProfile slows what it measures
        for segment in profiled:
            profile.enable()
            bridge.sealer.convert(segment)
            profile.disable()
    finally:
        bridge.wal.close()
    return {
        "segments": len(timed), "records": records, "segment_bytes": in_bytes,
        "parquet_bytes": out_bytes, "duration_s": round(elapsed, 3),
        "records_per_s": round(records / elapsed), "mb_per_s": round(in_bytes / elapsed / 1e6, 1),
        "profiled_segments": len(profiled), "profile_top": top_functions(profile),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="scratch WAL directory")
    parser.add_argument("--mb", type=float, default=1024, help="sealed segment bytes to build")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--frame-records", type=int, default=2500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--convert", type=int, default=40, help="segments to convert")
    parser.add_argument("--max-record-bytes", type=int, default=1024 * 1024)
    args = parser.parse_args()
    configure("warning", "json")  # the WAL's logs to stderr: stdout carries the result

    log(f"building ~{args.mb:,.0f} MB of sealed segments in {args.dir}")
    built = build(args.dir, int(args.mb * 1e6), args.batch_size, args.frame_records)
    log(f"built {built['segments']} segments, {built['bytes'] / 1e6:,.0f} MB in "
        f"{built['build_s']} s; measuring recovery")
    recovery = measure_recovery(args.dir, args.batch_size, args.repeats)
    log(f"recovery: warm {recovery['warm_mb_per_s']:,.0f} MB/s, "
        f"cold {recovery['cold_mb_per_s']:,.0f} MB/s; converting {args.convert} segments")
    conversion = measure_conversion(args.dir, args.batch_size, args.convert,
                                    args.max_record_bytes)
    log(f"conversion: {conversion['records_per_s']:,} records/s, "
        f"{conversion['mb_per_s']:,.0f} MB/s of segment")
    print(json.dumps({"built": built, "recovery": recovery, "conversion": conversion}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
