"""The benchmark's py-spy summary (scripts/bench_profile.py): collapsed stacks to shares."""

from __future__ import annotations

from scripts import bench_profile

STACKS = "\n".join([
    "thread (100): MainThread;<module> (/x/y/wal_bridge/cli.py:76);"
    "step (/x/y/wal_bridge/consumer.py:110) 60",
    "thread (100): MainThread;<module> (/x/y/wal_bridge/cli.py:76);"
    "append (wal_bridge/wal/log.py:400) 40",
    "thread (200): sealer;run (threading.py:1);convert (wal_bridge/sealer.py:60);"
    "convert (wal_bridge/sealer.py:61) 30",
    "thread (200): sealer 10",
])


def test_profile_summary_splits_threads_and_shares_their_samples() -> None:
    """Each thread's leaf lines are shares of that thread's own samples."""
    summary = bench_profile.summarize(STACKS)
    assert list(summary) == ["MainThread", "sealer"]
    main = summary["MainThread"]
    assert main["samples"] == 100
    assert main["leaf_lines"][0] == {"frame": "step (wal_bridge/consumer.py:110)",
                                     "samples": 60, "share": 0.6}


def test_profile_summary_counts_a_recursive_function_once_per_stack() -> None:
    """A function twice on one stack still gets that stack's samples once."""
    sealer = bench_profile.summarize(STACKS)["sealer"]
    convert = next(r for r in sealer["functions"] if r["frame"].startswith("convert"))
    assert convert["samples"] == 30
    assert sealer["samples"] == 40


def test_profile_drops_the_checkout_location_from_our_files() -> None:
    """Frames name wal_bridge/... files, never the directory they were run from."""
    text = bench_profile.format_summary(bench_profile.summarize(STACKS), 100.0, wall_s=2.0)
    assert "/x/y" not in text
    assert "50% of the run" in text


def test_profile_maps_thread_ids_to_names_for_cpu_accounting() -> None:
    """OS thread CPU is labelled with the Python thread's name, librdkafka's with its own."""
    names = bench_profile.thread_ids(STACKS)
    assert names == {100: "MainThread", 200: "sealer"}
    cpu = {100: ("python3", 1.5), 200: ("python3", 3.0), 300: ("rdk:broker1", 0.2),
           301: ("rdk:main", 0.0)}
    assert bench_profile.cpu_by_thread(cpu, names, main_tid=100) == [
        {"thread": "sealer", "cpu_s": 3.0}, {"thread": "MainThread", "cpu_s": 1.5},
        {"thread": "rdk:broker1", "cpu_s": 0.2},
    ]
