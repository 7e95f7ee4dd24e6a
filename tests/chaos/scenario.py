"""The chaos suite's scenario: a fresh topic and bucket, a workload, the bridges under test.

Every scenario ends the same way (:meth:`Scenario.finish`): the faults are gone, every record
the topic holds must land, each bridge is stopped with SIGTERM and must exit 0 with its WAL
drained, and the oracle (:mod:`tests.chaos.oracle`) compares what landed with the topic, byte
for byte. Its figures (records, lost, duplicated, cycles...) go to the session's
:class:`Report`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.chaos.oracle import Landed, Verdict, Workload, judge, read_topic
from tests.support import BridgeProcess, bridge_env, log_events, wait_for
from wal_bridge.wal.codec import DecodeError
from wal_bridge.wal.segment import scan

if TYPE_CHECKING:
    from tests.conftest import GcsHandle, KafkaHandle

# Small segments and a short time trigger: a scenario of a few thousand records goes through
# many segments, so every fault meets segments in every state.
CHAOS_SETTINGS = {"BATCH_SIZE": "500", "BATCH_TIMEOUT": "1", "SHUTDOWN_GRACE": "30"}


class Report:
    """Figures per scenario, rewritten to the JSON file after each one (partial runs count)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.started = time.time()

    def add(self, name: str, figures: dict[str, Any]) -> None:
        self.scenarios[name] = figures
        self.path.parent.mkdir(parents=True, exist_ok=True)
        totals = {
            key: sum(int(s.get(key, 0)) for s in self.scenarios.values())
            for key in ("cycles", "records", "lost", "duplicated", "unexpected", "corrupted")
        }
        document = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "duration_s": round(time.time() - self.started, 1),
            "totals": totals,
            "scenarios": self.scenarios,
        }
        self.path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


@dataclass
class ChaosBridge(BridgeProcess):
    """A bridge process that knows where its current run's log starts."""

    run_start: int = 0

    def start(self, **overrides: str) -> ChaosBridge:
        self.run_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        super().start(**overrides)
        return self

    def run_log(self) -> str:
        with open(self.log_path, "rb") as handle:
            handle.seek(self.run_start)
            return handle.read().decode(errors="replace")

    def events(self, name: str, *, this_run: bool = True) -> list[dict[str, Any]]:
        """The JSON log lines with ``"event": name``, of this run or of every run."""
        return log_events(self.run_log() if this_run else self.log(), name)

    def tail(self, chars: int = 4000) -> str:
        return f"--- {self.log_path.name} ---\n{self.log()[-chars:]}"

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


def wal_files(wal_dir: Path) -> dict[str, list[str]]:
    """What a WAL directory holds, by kind of file."""
    def names(sub: str, suffix: str) -> list[str]:
        folder = wal_dir / sub
        return sorted(p.name for p in folder.glob(f"*{suffix}")) if folder.exists() else []

    return {
        "open": names("segments", ".open"), "sealed": names("segments", ".sealed"),
        "torn": names("segments", ".torn"), "parquet": names("outbox", ".parquet"),
        "quarantined": names("quarantine", ".reason.json"),
    }


def held_records(wal_dir: Path, states: tuple[str, ...] = ("open", "sealed")) -> int:
    """Records in the WAL's segments of the given states (a damaged segment counts 0)."""
    total = 0
    for state in states:
        for path in (wal_dir / "segments").glob(f"*.{state}"):
            try:
                total += scan(path.read_bytes(), ranges=False).records
            except DecodeError:
                continue
    return total


@dataclass
class Scenario:
    """One chaos scenario: a fresh topic and bucket, a workload, and the bridges under test."""

    name: str
    kafka: KafkaHandle
    gcs: GcsHandle
    topic: str
    bucket: str
    tmp: Path
    report: Report
    workload: Workload
    bridges: list[ChaosBridge] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    _landed: Landed | None = None

    @property
    def group(self) -> str:
        return f"g-{self.topic}"

    def wal_dir(self, name: str = "a") -> Path:
        return self.tmp / f"wal-{name}"

    def env(self, name: str = "a", *, emulator: str | None = None, wal_dir: Path | None = None,
            **extra: str) -> dict[str, str]:
        return bridge_env(
            bootstrap=self.kafka.bootstrap, topic=self.topic,
            destination=f"gs://{self.bucket}/raw", wal_dir=wal_dir or self.wal_dir(name),
            emulator=emulator or self.gcs.url,
            **{"INSTANCE_ID": f"chaos-{name}", **CHAOS_SETTINGS, **extra},
        )

    def bridge(self, name: str = "a", *, emulator: str | None = None,
               wal_dir: Path | None = None, **extra: str) -> ChaosBridge:
        """A bridge (not started) with its own WAL directory and log file."""
        bridge = ChaosBridge(self.env(name, emulator=emulator, wal_dir=wal_dir, **extra),
                             self.tmp / f"bridge-{name}.log")
        self.bridges.append(bridge)
        return bridge

    def logs(self, chars: int = 3000) -> str:
        return "\n".join(b.tail(chars) for b in self.bridges)

    @property
    def landed(self) -> Landed:
        if self._landed is None:
            self._landed = Landed(self.gcs.client(), self.bucket)
        return self._landed

    def wait_assigned(self, bridge: ChaosBridge, timeout: float = 60) -> None:
        wait_for(lambda: bridge.events("partitions_assigned") or bridge.exit_code() is not None,
                 timeout, "partitions assigned", on_timeout=self.logs)
        assert bridge.exit_code() is None, f"bridge exited early\n{bridge.tail()}"

    def wait_all_landed(self, timeout: float = 180) -> dict[Any, Any]:
        """Wait until every record the topic holds has landed; return the topic's records."""
        self.workload.flush()
        expected = read_topic(self.kafka.bootstrap, self.topic)
        wait_for(lambda: self.landed.covers(expected), timeout,
                 f"all {len(expected)} records in gs://{self.bucket}", interval=1.0,
                 on_timeout=lambda: self._missing(expected))
        return expected

    def _missing(self, expected: dict[Any, Any]) -> str:
        landed = self.landed.identities()
        missing = sorted(i for i in expected if i not in landed)
        return f"{len(missing)} missing, e.g. {missing[:10]}\n{self.logs()}"

    def drain(self, *bridges: ChaosBridge) -> None:
        """SIGTERM each running bridge: it must exit 0 and leave its WAL empty."""
        for bridge in bridges or tuple(self.bridges):
            if not bridge.alive():
                continue
            # Its signal handlers are in place once it logs bridge_starting; a SIGTERM before
            # that ends a process that has not opened anything yet, with no drain to check.
            wait_for(lambda b=bridge: b.events("bridge_starting") or not b.alive(), 60,
                     "bridge_starting before SIGTERM", on_timeout=bridge.tail)
            code = bridge.terminate(timeout=90)
            assert code == 0, f"graceful stop exited {code}\n{bridge.tail()}"
            left = wal_files(Path(bridge.env["WAL_DIR"]))
            pending = left["open"] + left["sealed"] + left["parquet"]
            assert not pending, f"WAL not drained after SIGTERM: {left}\n{bridge.tail()}"

    def verdict(self) -> Verdict:
        expected = read_topic(self.kafka.bootstrap, self.topic)
        return judge(expected, self.landed.refresh(), self.workload.acked)

    def finish(self, *, duplicates_allowed: bool = False, **figures: Any) -> Verdict:
        """The end of every scenario: all lands, the bridges drain, the oracle judges."""
        self.wait_all_landed()
        self.drain()
        verdict = self.verdict()
        self.record(verdict, **figures)
        problems = verdict.problems(duplicates_allowed=duplicates_allowed)
        assert not problems, "; ".join(problems) + f"\n{self.logs()}"
        return verdict

    def record(self, verdict: Verdict | None = None, **figures: Any) -> None:
        self.figures.update(figures)
        if verdict is not None:
            self.figures.update(verdict.figures())
        self.figures["duration_s"] = round(time.monotonic() - self.started, 1)
        self.report.add(self.name, dict(self.figures))
