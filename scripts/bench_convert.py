"""How fast a sealed segment becomes Parquet: records/s and MB/s, next to a plain reference.

    python scripts/bench_convert.py [--records 1000000] [--segment 5000] [--threads 1]

For three payloads of ~230-byte JSON events (a clickstream event with an ISO timestamp, a nested
object and an array):

- **all-good**: every record decodes;
- **1% bad**: one record in a hundred is a dead letter (not JSON, truncated, a tombstone, empty,
  invalid UTF-8, an array, a repeated key, NaN, a trailing comma, in turn);
- **schema drift**: after the first segment pinned the schema, every record carries a new field,
  one in ten has its amount as a string (a value that does not fit its float64 column), and the
  nested object changes shape.

it measures ``Converter.convert`` plus the Parquet encoding of the data and dead-letter tables
(the service's exact code path, written to memory, without the fsync), once on one 5,000-record
segment (best of several runs) and once on a run of ``--records`` records in segments. The
**reference** is pyarrow's JSON reader plus Parquet writer on the same all-good records, joined
as newline-delimited JSON: the floor this work is compared with (the goal: within 2x).

The reference and the bridge's conversion run interleaved, segment by segment, so that other
load on the machine slows both alike; the last column is their ratio. CPU time (of the whole
process) is reported next to wall time: on a shared machine it is the steadier of the two.
Numbers are printed as a table; nothing is written to disk.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wal_bridge.conversion import Converter
from wal_bridge.parquet import footer_metadata, write_table
from wal_bridge.schema import SchemaStore
from wal_bridge.wal.codec import RecordColumns
from wal_bridge.wal.segment import SealInfo, batch_ranges

EVENT_TYPES = ("page_view", "add_to_cart", "checkout", "search", "login", "purchase")
COUNTRIES = ("DE", "FR", "US", "GB", "NL", "ES", "IT")
BAD_KINDS: tuple[bytes | None, ...] = (
    b"plain text, not JSON",
    b'{"event_id":"truncated","user_id":4',
    None,
    b"",
    b'{"event_id":"\xff\xfe"}',
    b'[{"event_id":"in an array"}]',
    b'{"event_id":"a","event_id":"b"}',
    b'{"event_id":"x","amount":NaN}',
    b'{"event_id":"x","tags":["a",],}',
)


def event(i: int, rnd: random.Random, *, drift: bool = False) -> bytes:
    """One ~230-byte event; with ``drift``, a new field, a changed nested shape and, one time in
    ten, the amount as a string."""
    amount = f'"{rnd.randrange(1, 10_000) / 100}"' if drift and i % 10 == 0 \
        else str(rnd.randrange(1, 10_000) / 100)
    device = (f'{{"os":"{rnd.choice(("ios", "android"))}","version":{rnd.randrange(10, 18)},'
              f'"beta":true}}' if drift else
              f'{{"os":"{rnd.choice(("ios", "android", "web"))}","version":"17.{i % 9}"}}')
    extra = f',"campaign":"c-{i % 97}"' if drift else ""
    return (
        f'{{"event_id":"{uuid.UUID(int=rnd.getrandbits(128))}",'
        f'"event_type":"{EVENT_TYPES[i % 6]}","user_id":{rnd.randrange(1, 10_000_000)},'
        f'"ts":"2026-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",'
        f'"amount":{amount},"country":"{COUNTRIES[i % 7]}","is_new":{str(i % 9 == 0).lower()},'
        f'"device":{device},"tags":["t{i % 5}","t{i % 3}"]{extra}}}'
    ).encode()


def values_for(scenario: str, n: int, seed: int) -> list[bytes | None]:
    rnd = random.Random(seed)  # noqa: S311 - benchmark data, not cryptography
    values: list[bytes | None] = [event(i, rnd, drift=scenario == "schema drift")
                                  for i in range(n)]
    if scenario == "1% bad":
        for k, i in enumerate(range(37, n, 100)):
            values[i] = BAD_KINDS[k % len(BAD_KINDS)]
    return values


@dataclass
class Segment:
    batch: pa.RecordBatch
    seal: SealInfo
    payload_bytes: int


def make_segment(values: list[bytes | None], number: int) -> Segment:
    n = len(values)
    first = number * n
    batch = RecordColumns(["events"] * n, [number % 3] * n, list(range(first, first + n)),
                          [1_777_636_800_000 + i for i in range(n)], [None] * n, values,
                          [None] * n).to_arrow()
    seal = SealInfo(number, "bench", f"raw/{number}.parquet", f"dead-letter/{number}.parquet",
                    1_777_636_900_000, n, batch_ranges(batch))
    return Segment(batch, seal, sum(len(v) for v in values if v))


def convert_and_encode(converter: Converter, segment: Segment) -> None:
    out = converter.convert([segment.batch], segment.seal)
    write_table(out.data, io.BytesIO(), footer_metadata(segment.seal, out.data))
    if out.dead_letters.num_rows:
        write_table(out.dead_letters, io.BytesIO(),
                    footer_metadata(segment.seal, out.dead_letters))


def reference(segment: Segment) -> None:
    """pyarrow's JSON reader and Parquet writer alone, one block, one thread."""
    data = b"\n".join(v for v in segment.batch.column("_value").to_pylist() if v)
    table = pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(
        use_threads=False, block_size=len(data) + 1))
    pq.write_table(table, io.BytesIO(), compression="snappy")


@dataclass
class Clock:
    """Wall and CPU seconds spent in one kind of work, added up over calls."""

    wall: float = 0.0
    cpu: float = 0.0

    def run(self, work: Callable[[], None]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu


def measure(pairs: list[tuple[Callable[[], None], Callable[[], None]]],
            best_of: bool) -> tuple[Clock, Clock]:
    """Run each (bridge, reference) pair in turn; sum them, or keep the best pair by CPU."""
    if not best_of:
        ours, ref = Clock(), Clock()
        for bridge_work, reference_work in pairs:
            ours.run(bridge_work)
            ref.run(reference_work)
        return ours, ref
    best = (Clock(float("inf"), float("inf")), Clock(float("inf"), float("inf")))
    for bridge_work, reference_work in pairs:
        ours, ref = Clock(), Clock()
        ours.run(bridge_work)
        ref.run(reference_work)
        if ours.cpu + ref.cpu < best[0].cpu + best[1].cpu:
            best = (ours, ref)
    return best


def row(name: str, records: int, payload: int, clock: Clock, ref: Clock) -> str:
    return (f"{name:<34} {records:>9,} {records / clock.wall:>11,.0f} "
            f"{payload / clock.wall / 1e6:>6.1f} {records / clock.cpu:>11,.0f} "
            f"{payload / clock.cpu / 1e6:>6.1f} {records / ref.cpu:>11,.0f} "
            f"{clock.cpu / ref.cpu:>6.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records in the long run")
    parser.add_argument("--segment", type=int, default=5_000, help="records per segment")
    parser.add_argument("--threads", type=int, default=1, help="DuckDB threads (service: 1)")
    parser.add_argument("--repeat", type=int, default=15, help="runs of the one-segment case")
    args = parser.parse_args()
    distinct = 20  # segments generated per scenario and cycled through in the long run
    print(f"{'':<34} {'records':>9} {'rec/s wall':>11} {'MB/s':>6} {'rec/s CPU':>11} "
          f"{'MB/s':>6} {'ref rec/s':>11} {'ratio':>7}")
    good = [make_segment(values_for("all-good", args.segment, s + 1), s + 1)
            for s in range(distinct)]
    for scenario in ("all-good", "1% bad", "schema drift"):
        schema = None
        if scenario == "schema drift":  # the pinned schema comes from undrifted first data
            store = SchemaStore()
            first = make_segment(values_for("all-good", args.segment, 0), 0)
            Converter(schema=store).convert([first.batch], first.seal)
            schema = store.schema
        segments = good if scenario == "all-good" else [
            make_segment(values_for(scenario, args.segment, s + 1), s + 1)
            for s in range(distinct)]
        converter = Converter(1024 * 1024, schema, threads=args.threads)
        convert_and_encode(converter, segments[0])  # pins the schema (once per WAL)

        def pair(k: int, segs: list[Segment] = segments,
                 conv: Converter = converter) -> tuple[Callable[[], None], Callable[[], None]]:
            return (lambda: convert_and_encode(conv, segs[k % distinct]),
                    lambda: reference(good[k % distinct]))

        ours, ref = measure([pair(0) for _ in range(args.repeat)], best_of=True)
        print(row(f"{scenario}: one segment (best)", args.segment, segments[0].payload_bytes,
                  ours, ref))
        count = args.records // args.segment
        payload = sum(segments[k % distinct].payload_bytes for k in range(count))
        ours, ref = measure([pair(k) for k in range(count)], best_of=False)
        print(row(f"{scenario}: {count} segments", count * args.segment, payload, ours, ref))
    print("ref: pyarrow's JSON reader + Parquet writer on the all-good records (CPU);"
          " ratio: the bridge's CPU time over the reference's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
