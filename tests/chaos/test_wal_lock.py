"""A second process on a WAL directory that is in use."""

from __future__ import annotations

from tests.chaos.scenario import Scenario

WAL_LOCKED_EXIT = 3


def test_a_second_bridge_on_the_same_wal_is_refused(scenario: Scenario) -> None:
    """A second bridge started on a WAL directory in use exits 3 naming the holder's pid, and
    the first one goes on undisturbed."""
    first = scenario.bridge("a")
    first.start()
    scenario.wait_assigned(first)
    scenario.workload.produce(1_000)
    second = scenario.bridge("b", wal_dir=scenario.wal_dir("a"))
    second.start()
    code = second.wait(timeout=60)
    output = second.run_log()
    assert code == WAL_LOCKED_EXIT, f"exit {code}\n{output}"
    assert f"in use by pid {first.pid}" in output, output
    assert first.alive(), first.tail()
    scenario.workload.produce(500)
    message = output.strip().splitlines()[-1].replace(str(scenario.wal_dir("a")), "WAL_DIR")
    scenario.finish(refused_exit_code=code, message=message)
