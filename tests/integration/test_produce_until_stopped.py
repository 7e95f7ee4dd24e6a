"""`wal_bridge produce --rate R` runs until SIGTERM or SIGINT, then flushes and exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import KafkaHandle
from tests.native import TopicWatch


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_produce_at_a_rate_runs_until_a_signal(
    signum: signal.Signals, kafka: KafkaHandle, topic: str, tmp_path: Path
) -> None:
    """It keeps sending until the signal, exits 0, and every record it sent is in the topic."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    command = [str(Path(sys.prefix) / "bin" / "wal_bridge"), "produce", "--rate", "400",
               "--bootstrap-servers", kafka.bootstrap, "--topic", topic, "--json"]
    watch = TopicWatch(kafka.bootstrap, topic)
    with (tmp_path / "stderr").open("wb") as stderr:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while watch.size() < 1200:  # 3 s at 400/s: past any fixed-length default
            assert proc.poll() is None, (tmp_path / "stderr").read_text()
            assert time.monotonic() < deadline, "the producer did not send 1,200 records"
            time.sleep(0.2)
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, (tmp_path / "stderr").read_text()
        report = json.loads(out)
        assert report["sent"] == report["delivered"] >= 1200
        assert report["failed"] == {}
        assert watch.size() == report["delivered"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        watch.close()
