"""Fixtures of the chaos suite: a scenario per test, the session's figures report, and a WAL
directory on LazyFS (``lazyfs``, ``lazyfs_wal_dir``) for the power-loss tests.

LazyFS is built once by ``../shared/lazyfs/build`` (relative to the repository root) and needs
root and /dev/fuse: where it cannot run, its tests skip with the reason, or fail under
``CI=true``, where a skip would hide that power loss was never tested.

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

from scripts.services import ServiceError
from scripts.services import lazyfs as lazyfs_service
from tests.chaos.oracle import Workload
from tests.chaos.scenario import Report, Scenario
from tests.support import missing

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


@pytest.fixture(scope="session")
def lazyfs_binary() -> Path:
    """The LazyFS binary, built on first use; skip (fail under CI=true) where it cannot run."""
    reason = lazyfs_service.unavailable()
    if reason is not None:
        missing(reason)
    try:
        return lazyfs_service.provision()
    except ServiceError as exc:
        message = f"LazyFS: {exc}"
    pytest.fail(message, pytrace=False)


@pytest.fixture
def lazyfs(lazyfs_binary: Path, scenario: Scenario, tmp_path: Path
           ) -> Iterator[lazyfs_service.LazyFs]:
    """A fresh LazyFS mount (64 MB cache) under the test's temporary directory; the
    scenario's bridges are killed before it is unmounted."""
    mount = lazyfs_service.LazyFs(lazyfs_binary, tmp_path / "lazyfs", cache_size="64mb")
    failure = None
    try:
        mount.start()
    except ServiceError as exc:
        failure = f"LazyFS: {exc}"
    if failure is not None:  # outside the except: no chained traceback
        pytest.fail(failure, pytrace=False)
    try:
        yield mount
    finally:
        for bridge in scenario.bridges:
            bridge.stop()
        mount.close()


@pytest.fixture
def lazyfs_wal_dir(lazyfs: lazyfs_service.LazyFs) -> Path:
    """A WAL_DIR on the test's LazyFS mount (not created: the bridge makes it)."""
    return lazyfs.mountpoint / "wal"
