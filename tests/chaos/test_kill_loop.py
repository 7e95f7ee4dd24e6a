"""kill -9 at random moments, over and over, while a producer keeps writing."""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.chaos.scenario import Scenario
from tests.support import wait_for

SEED = int(os.environ.get("WAL_BRIDGE_CHAOS_SEED") or random.randrange(1 << 32))
RATE = 100  # records a second, produced all along


@pytest.mark.parametrize(
    "cycles",
    [pytest.param(30, id="30-cycles"),
     pytest.param(200, id="200-cycles", marks=pytest.mark.long)],
)
def test_kill_9_in_a_loop_loses_and_duplicates_nothing(scenario: Scenario, cycles: int) -> None:
    """Killed with SIGKILL at random moments many times under load, the bridge lands every
    record exactly once, intact."""
    rng = random.Random(SEED + cycles)
    bridge = scenario.bridge()
    scenario.workload.start(RATE)
    in_startup = shipping = 0
    for cycle in range(cycles):
        bridge.start()
        if rng.random() < 0.4:
            # Start-up: imports, recovery of what the last kill left, the group join.
            in_startup += 1
            time.sleep(rng.uniform(0.1, 2.0))
        else:
            # Steady work: appending, sealing, converting, shipping, committing.
            wait_for(lambda: bridge.events("partitions_assigned") or not bridge.alive(), 60,
                     "partitions assigned", on_timeout=bridge.tail)
            time.sleep(rng.uniform(0.0, 2.5))
        assert bridge.alive(), f"cycle {cycle}: the bridge exited on its own\n{bridge.tail()}"
        bridge.kill()
        shipping += bool(bridge.events("segment_shipped"))
    scenario.workload.stop()
    bridge.start()
    scenario.finish(cycles=cycles, seed=SEED, kills_in_startup=in_startup,
                    kills_while_working=cycles - in_startup, runs_that_shipped=shipping)
    # Enough runs must get as far as shipping, or the loop tested only start-up.
    assert shipping >= cycles // 5, f"only {shipping} of {cycles} runs shipped anything"
