"""Two bridge instances in one consumer group, one of them killed.

When an instance dies, another takes its partitions over from the group's committed offsets.
Records the dead instance had already made durable in its WAL but not yet committed are then
read a second time: the documented duplicate window. The dead instance's WAL is not lost (it
comes back with its volume, as a StatefulSet pod does) and ships what it held, so every record
lands, and every duplicate is one of those records: landed once from each instance.

Both instances use static membership (``group.instance.id``), so the group would wait out the
session timeout (45 s) before handing the dead member's partitions over. The test does what an
operator (or ``AdminClient.removeMembersFromConsumerGroup``) does instead: a LeaveGroup request
naming the dead instance, sent with the stdlib.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from scripts.services.kafka_wire import leave_group
from tests.chaos.scenario import ChaosBridge, Scenario
from tests.support import committed_offsets, wait_for
from wal_bridge.failpoints import EXIT_CODE
from wal_bridge.wal.codec import DecodeError
from wal_bridge.wal.segment import scan

SEED = int(os.environ.get("WAL_BRIDGE_CHAOS_SEED") or random.randrange(1 << 32))
SESSION_TIMEOUT_S = 45


def owned(bridge: ChaosBridge) -> set[int]:
    """The partitions the bridge holds according to its log (assigned minus revoked)."""
    held: set[int] = set()
    for line in bridge.run_log().splitlines():
        if '"partitions_' not in line:
            continue
        try:
            entry: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        names = {int(p.rpartition("[")[2].rstrip("]")) for p in entry.get("partitions", [])}
        if entry.get("event") == "partitions_assigned":
            held |= names
        elif entry.get("event") in ("partitions_revoked", "partitions_lost"):
            held -= names
    return held


def wal_next_offsets(wal_dir: Path) -> dict[int, int]:
    """Per partition, the offset after the last record a (stopped) WAL holds or shipped."""
    out: dict[int, int] = {}
    state = wal_dir / "state.json"
    if state.exists():
        for item in json.loads(state.read_text()).get("shipped", []):
            out[int(item["partition"])] = int(item["next_offset"])
    for path in (wal_dir / "segments").iterdir():
        if path.suffix not in (".open", ".sealed"):
            continue
        try:
            ranges = scan(path.read_bytes()).ranges
        except DecodeError:
            continue
        for (_, partition), rng in ranges.items():
            out[partition] = max(out.get(partition, 0), rng.last + 1)
    return out


@pytest.mark.parametrize("death", ["sigkill", "in_the_window"])
def test_one_of_two_instances_killed_loses_nothing(scenario: Scenario, death: str) -> None:
    """With two instances in one group and one of them killed (SIGKILL at a random moment, or
    by a failpoint between fsync and commit), every record lands, and each duplicate is a
    record the dead instance had made durable but not committed."""
    rng = random.Random(f"{SEED}-{death}")
    a, b = scenario.bridge("a"), scenario.bridge("b")
    if death == "sigkill":
        a.start()
        scenario.wait_assigned(a)
        b.start()
        wait_for(lambda: owned(b) and owned(a), 90, "both instances holding partitions",
                 on_timeout=scenario.logs)
        scenario.workload.start(200)
        wait_for(lambda: a.events("segment_shipped") and b.events("segment_shipped"), 90,
                 "both instances shipping", on_timeout=scenario.logs)
        time.sleep(rng.uniform(0.5, 3.0))  # a random moment of steady work
        a_partitions = owned(a)
        a.kill()
    else:
        # a joins a group where b does the work, and dies right after its first fsync: the
        # batch is durable in a's WAL, its offsets are not committed.
        b.start()
        scenario.wait_assigned(b)
        scenario.workload.start(200)
        wait_for(lambda: b.events("segment_shipped"), 90, "b shipping", on_timeout=b.tail)
        a.start(WAL_BRIDGE_FAILPOINT="after_fsync_before_commit")
        assert a.wait(timeout=90) == EXIT_CODE, a.tail()
        a_partitions = owned(a)
    at_kill = committed_offsets(scenario.kafka.bootstrap, scenario.group, scenario.topic)
    a_held = wal_next_offsets(scenario.wal_dir("a"))
    window = {p: max(0, a_held.get(p, 0) - at_kill[p]) for p in a_partitions}

    error = leave_group(scenario.kafka.bootstrap, scenario.group, "chaos-a")
    takeover = SESSION_TIMEOUT_S + 60 if error else 60
    wait_for(lambda: a_partitions <= owned(b), takeover,
             f"b taking over a's partitions {sorted(a_partitions)} (LeaveGroup error {error})",
             on_timeout=b.tail)
    shipped = len(b.events("segment_shipped"))
    wait_for(lambda: len(b.events("segment_shipped")) > shipped + 1, 60,
             "b shipping a's partitions", on_timeout=b.tail)
    a.start()  # a's WAL comes back with it, as a pod's volume does, and ships what it held
    scenario.workload.stop()
    verdict = scenario.finish(duplicates_allowed=True)

    # Every duplicate must be explained: a record of one of a's partitions at or past a's
    # last commit, held by a's WAL when it died, landed once from a and once from b.
    for (partition, offset), extra in verdict.duplicated.items():
        keys = verdict.duplicate_keys[(partition, offset)]
        assert extra == 1, f"{(partition, offset)} landed {extra + 1} times: {keys}"
        assert partition in a_partitions, f"duplicate on b's own partition: {keys}"
        assert at_kill[partition] <= offset < a_held.get(partition, 0), (
            f"duplicate {(partition, offset)} outside the window "
            f"[{at_kill[partition]}, {a_held.get(partition, 0)}): {keys}"
        )
        assert sorted(k.rpartition("-chaos-")[2].split("-")[0] for k in keys) == ["a", "b"], keys
    assert verdict.duplicates <= sum(window.values())
    if death == "in_the_window":  # the whole window comes back twice, and nothing else
        assert sum(window.values()) > 0, window
        assert verdict.duplicates == sum(window.values()), (verdict.duplicates, window)
    print(f"two instances, a killed: {verdict.produced} records, {verdict.lost} lost, "  # noqa: T201 - reported by design
          f"{verdict.duplicates} duplicated (window {sum(window.values())} records)")
    scenario.record(verdict, duplicate_window=sum(window.values()), leave_group_error=error,
                    a_partitions=sorted(a_partitions), death=death, seed=SEED)
