"""Storage faults: GCS cut off, slow and fragmented connections, 429/500/503 answers."""

from __future__ import annotations

import time
from urllib.parse import urlparse

from scripts.services.toxiproxy import ToxiproxyClient
from tests.chaos.faulty_proxy import FaultyProxy
from tests.chaos.scenario import Scenario, wal_files
from tests.support import wait_for


def test_gcs_unreachable_for_a_while_loses_nothing(
    scenario: Scenario, toxiproxy: ToxiproxyClient
) -> None:
    """With the emulator cut off mid-run while records keep coming, segments pile up in the
    WAL, uploads retry without end, and all of it lands once the emulator is back."""
    proxy = toxiproxy.create_proxy(f"gcs-{scenario.topic[-8:]}", urlparse(scenario.gcs.url).netloc)
    bridge = scenario.bridge(emulator=proxy.url)
    bridge.start()
    scenario.workload.start(200)
    wait_for(lambda: bridge.events("segment_shipped"), 60, "a first shipped segment",
             on_timeout=bridge.tail)
    toxiproxy.disable(proxy.name)
    cut_at = time.monotonic()
    wait_for(lambda: len(bridge.events("segment_upload_retrying")) >= 4
             and len(wal_files(scenario.wal_dir())["parquet"]) >= 3, 90,
             "retries and converted segments piling up", on_timeout=bridge.tail)
    piled = len(wal_files(scenario.wal_dir())["parquet"])
    toxiproxy.enable(proxy.name)
    outage = round(time.monotonic() - cut_at, 1)
    scenario.workload.stop()
    scenario.finish(retries=len(bridge.events("segment_upload_retrying")), piled_up=piled,
                    outage_s=outage)


def test_slow_and_fragmented_connections_lose_nothing(
    scenario: Scenario, toxiproxy: ToxiproxyClient
) -> None:
    """Latency, connections sliced into small pieces and a narrow bandwidth between the bridge
    and the emulator slow the uploads down but every record lands once."""
    proxy = toxiproxy.create_proxy(f"gcs-{scenario.topic[-8:]}", urlparse(scenario.gcs.url).netloc)
    for stream in ("upstream", "downstream"):
        toxiproxy.add_toxic(proxy.name, "latency", {"latency": 150, "jitter": 100},
                            stream=stream)
        toxiproxy.add_toxic(proxy.name, "slicer",
                            {"average_size": 200, "size_variation": 150, "delay": 500},
                            stream=stream)
        toxiproxy.add_toxic(proxy.name, "bandwidth", {"rate": 96}, stream=stream)  # KB/s
    bridge = scenario.bridge(emulator=proxy.url)
    bridge.start()
    scenario.workload.produce(2_500)
    scenario.wait_all_landed()
    slowest = max(e["duration_ms"] for e in bridge.events("segment_shipped"))
    scenario.finish(toxics="latency 150±100 ms, slicer ~200 B, bandwidth 96 KB/s, both ways",
                    slowest_upload_ms=slowest)


def test_http_429_500_503_are_retried_and_lose_nothing(scenario: Scenario) -> None:
    """Uploads answered 429, 500 and 503 (one of them after the object was in fact stored) are
    retried; the stored one is recognised by its checksum, and every record lands once."""
    # The first upload stores the table's schema (before any segment's file); then the faults
    # hit the segments' uploads. -500: stored, then answered 500 anyway.
    plan = [None, 429, None, -500, None, 503, 503]
    with FaultyProxy(scenario.gcs.url, plan, match="POST /upload/") as proxy:
        bridge = scenario.bridge(emulator=proxy.url)
        bridge.start()
        scenario.workload.produce(2_500)
        scenario.wait_all_landed()
        assert sorted({status for status, _ in proxy.failed}) == [429, 500, 503], proxy.failed
        retried = " ".join(e["error"] for e in bridge.events("segment_upload_retrying"))
        for status in (429, 500, 503):
            assert f"HTTP {status}" in retried, bridge.tail()
        results = [e["result"] for e in bridge.events("segment_shipped")]
        assert "already_present" in results, bridge.tail()
        scenario.finish(injected=[status for status, _ in proxy.failed],
                        already_present=results.count("already_present"))
