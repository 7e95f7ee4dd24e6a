"""The broker stopped and started again under the bridge, gracefully and with kill -9."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.chaos.scenario import Scenario
from tests.support import wait_for

OUTAGE_S = 5.0  # how long the broker stays away each time


def test_a_broker_restart_mid_run_loses_nothing(scenario: Scenario) -> None:
    """With the broker stopped (then killed) and started again while records keep coming, the
    bridge rides it out without restarting and every record lands once."""
    kafka = scenario.kafka
    bridge = scenario.bridge()
    bridge.start()
    scenario.workload.start(150)

    def shipped_more(than: int) -> Callable[[], bool]:
        return lambda: len(bridge.events("segment_shipped")) > than

    wait_for(shipped_more(0), 60, "a first shipped segment", on_timeout=bridge.tail)
    outages = []
    for stop in (kafka.stop, kafka.kill):
        began = time.monotonic()
        stop()
        time.sleep(OUTAGE_S)  # the outage itself: the bridge must keep running meanwhile
        assert bridge.alive(), bridge.tail()
        kafka.start()
        outages.append(round(time.monotonic() - began, 1))
        shipped = len(bridge.events("segment_shipped"))
        wait_for(shipped_more(shipped), 120, "segments shipped after the broker came back",
                 on_timeout=bridge.tail)
    scenario.workload.stop()
    scenario.finish(broker_outages_s=outages, bridge_runs=bridge.runs)
