"""A crash at each step of a segment's life, and an injected fsync failure."""

from __future__ import annotations

import pytest

from tests.chaos.scenario import Scenario, wal_files
from wal_bridge.failpoints import CRASH_POINTS, EXIT_CODE, FAILPOINTS


@pytest.mark.parametrize("failpoint", sorted(FAILPOINTS))
def test_a_crash_at_any_step_loses_nothing(scenario: Scenario, failpoint: str) -> None:
    """Stopped dead at a failpoint (exit 86) or by an injected I/O error (exit 1), the bridge
    restarted without it lands every record exactly once."""
    scenario.workload.produce(1_500)
    bridge = scenario.bridge()
    bridge.start(WAL_BRIDGE_FAILPOINT=failpoint)
    code = bridge.wait(timeout=120)
    if failpoint in CRASH_POINTS:
        assert code == EXIT_CODE, f"exit {code}, not {EXIT_CODE}\n{bridge.tail()}"
        assert f"failpoint {failpoint}: exiting abruptly" in bridge.run_log()
    else:
        # An error point: the bridge handles the error it injects as it would the real one.
        assert code not in (0, EXIT_CODE), f"exit {code}\n{bridge.tail()}"
        assert bridge.events("fatal_error"), bridge.tail()
        error = next(line for line in bridge.run_log().splitlines()
                     if line.startswith("wal_bridge: error:"))
        assert f"failpoint {failpoint}: injected I/O error" in error, error
    left = wal_files(scenario.wal_dir())
    scenario.workload.produce(600)
    bridge.start()
    scenario.finish(failpoint=failpoint, exit_code=code,
                    left_after_crash=sum(len(v) for v in left.values()))
