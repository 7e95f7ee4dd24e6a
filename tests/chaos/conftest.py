"""Fixtures of the chaos suite: a scenario per test, and the session's figures report.

The figures of each scenario go to a JSON file: the one named by ``WAL_BRIDGE_CHAOS_REPORT``,
or ``chaos-report.json`` in pytest's base temporary directory; they are also printed at the end
of the session. ``python -m tests.chaos.figures FILE`` renders them as the table of
docs/reliability.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.chaos.oracle import Workload
from tests.chaos.scenario import Report, Scenario

if TYPE_CHECKING:
    from tests.conftest import GcsHandle, KafkaHandle

REPORT_ENV = "WAL_BRIDGE_CHAOS_REPORT"
_REPORT: list[Report] = []


@pytest.fixture(scope="session")
def chaos_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """The session's figures report."""
    path = Path(os.environ.get(REPORT_ENV) or tmp_path_factory.getbasetemp() / "chaos-report.json")
    report = Report(path)
    _REPORT.append(report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for report in _REPORT:
        terminalreporter.section("chaos figures")
        for name, figures in sorted(report.scenarios.items()):
            shown = ", ".join(f"{k}={v}" for k, v in sorted(figures.items())
                              if k not in ("duration_s",))
            terminalreporter.write_line(f"{name} ({figures.get('duration_s', 0)}s): {shown}")
        terminalreporter.write_line(f"report: {report.path}")


@pytest.fixture
def scenario(kafka: KafkaHandle, gcs: GcsHandle, topic: str, bucket: str, tmp_path: Path,
             chaos_report: Report, request: pytest.FixtureRequest) -> Iterator[Scenario]:
    """A fresh topic, bucket and workload; bridges made through it are killed at teardown."""
    workload = Workload(kafka.bootstrap, topic)
    scene = Scenario(request.node.name, kafka, gcs, topic, bucket, tmp_path, chaos_report,
                     workload)
    try:
        yield scene
    finally:
        for bridge in scene.bridges:
            bridge.stop()
        workload.close()  # a test that failed may have left the producer running
