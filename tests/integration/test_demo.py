"""`wal_bridge demo` end to end: embedded broker, the real bridge, SQL over what landed.

The demo needs no service: its broker is librdkafka's mock cluster inside the demo process.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_lands_every_event_and_prints_the_query_result(tmp_path: Path) -> None:
    """Exit 0; the printed counts per event type equal what the landed files hold; the audit
    is clean; the WAL is empty; the run folder is where it says."""
    result = subprocess.run(
        [sys.executable, "-m", "wal_bridge.cli", "demo", "--output-dir", str(tmp_path),
         "--count", "3000", "--seed", "11", "--malformed-ratio", "0.03"],
        capture_output=True, text=True, timeout=240, check=False, cwd=ROOT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    (run_dir,) = tmp_path.glob("run-*")
    landed = {p: pq.read_table(p) for p in (run_dir / "landed" / "raw").rglob("*.parquet")}
    dead = [pq.read_table(p) for p in (run_dir / "landed" / "dead-letter").rglob("*.parquet")]
    events = sum(t.num_rows for t in landed.values())
    dead_letters = sum(t.num_rows for t in dead)
    assert events + dead_letters == 3000
    assert dead_letters > 0
    assert f"Landed {events:,} events and {dead_letters:,} dead letters" in result.stdout
    assert str(run_dir / "landed") in result.stdout

    # The query table: one row per event type, "event_type events users amount first_ts".
    expected = Counter(t for table in landed.values()
                       for t in table.column("event_type").to_pylist())
    printed = {m.group(1): int(m.group(2)) for m in
               re.finditer(r"^(page_view|click|search|add_to_cart|purchase|signup)\s+(\d+)\s",
                           result.stdout, re.MULTILINE)}
    assert printed == dict(expected)
    assert "OK: no gaps, no duplicates" in result.stdout
    assert "everything produced has landed" in result.stderr
    assert list((run_dir / "wal" / "segments").iterdir()) == []


def test_scripts_demo_is_valid_bash_and_runs_the_demo_command() -> None:
    """The wrapper parses and hands its arguments to `wal_bridge demo`."""
    script = ROOT / "scripts" / "demo"
    assert script.stat().st_mode & 0o111, "scripts/demo must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert 'demo "$@"' in text
