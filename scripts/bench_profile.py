"""Where the bridge's time goes: a summary of py-spy's collapsed stacks, thread by thread.

py-spy (``record --format raw --threads --idle``) writes one line per distinct stack::

    thread (1234): MainThread;<module> (wal_bridge/cli.py:76);...;step (consumer.py:105) 812

frames from the root to the leaf, then the sample count. With ``--idle`` a thread is sampled
whether it runs or waits, so a thread's samples add up to its wall time and a leaf line inside
our code that calls into C (``consume``, ``os.fsync``, ``read_json``) gets the time spent in
that call. Standard library only; :func:`summarize` is what the report prints.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_THREAD = re.compile(r"^thread \((?P<tid>(?:0x)?[0-9A-Fa-f]+)\)(?::\s*(?P<name>.*))?$")
_LINE = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_OUR_PATH = re.compile(r"\((?:[^()]*/)?((?:wal_bridge|scripts)/[^()]*)\)$")


def _short(frame: str) -> str:
    """Drop the checkout's location from our own files (``/x/wal_bridge/a.py``)."""
    return _OUR_PATH.sub(r"(\1)", frame)


@dataclass
class ThreadProfile:
    name: str
    samples: int = 0
    leaf_lines: Counter[str] = field(default_factory=Counter)  # "func (file:line)" -> samples
    inclusive: Counter[str] = field(default_factory=Counter)  # "func (file)" -> samples


def function_of(frame: str) -> str:
    """``"step (wal_bridge/consumer.py:105)"`` -> ``"step (wal_bridge/consumer.py)"``."""
    match = _LINE.match(frame)
    if not match:
        return frame
    return f"{match['func']} ({match['file']})"


def parse(text: str) -> dict[str, ThreadProfile]:
    """Collapsed stacks by thread name (threads of one name are added together)."""
    threads: dict[str, ThreadProfile] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        name = "process"
        thread = _THREAD.match(frames[0])
        if thread:
            name = (thread["name"] or "unnamed").strip()
            frames = frames[1:]
            if frames and frames[0] == name:  # py-spy repeats the name as a frame
                frames = frames[1:]
        profile = threads.setdefault(name, ThreadProfile(name))
        profile.samples += count
        if frames:
            profile.leaf_lines[frames[-1]] += count
        for function in {function_of(f) for f in frames}:  # once per stack: recursion
            profile.inclusive[function] += count
    return threads


def thread_ids(text: str) -> dict[int, str]:
    """Thread id -> Python thread name, as py-spy printed them (its ids are the OS's)."""
    names: dict[int, str] = {}
    for raw in text.splitlines():
        head, sep, _ = raw.strip().partition(";")
        if not sep:  # a thread sampled with no frame: "thread (1): name 12"
            head = head.rsplit(" ", 1)[0]
        match = _THREAD.match(head.strip())
        if match and match["name"]:
            tid = match["tid"]
            names[int(tid, 16) if tid.startswith("0x") else int(tid)] = match["name"].strip()
    return names


def cpu_by_thread(cpu: dict[int, tuple[str, float]], names: dict[int, str],
                  main_tid: int) -> list[dict[str, Any]]:
    """Per-thread CPU seconds labelled with Python thread names where known (else the OS
    thread name, e.g. librdkafka's ``rdk:broker1``), threads of one label added together,
    busiest first."""
    totals: dict[str, float] = {}
    for tid, (comm, seconds) in cpu.items():
        label = names.get(tid) or ("MainThread" if tid == main_tid else comm)
        totals[label] = totals.get(label, 0.0) + seconds
    return [{"thread": k, "cpu_s": round(v, 2)}
            for k, v in sorted(totals.items(), key=lambda kv: -kv[1]) if v > 0]


def summarize(text: str, *, top: int = 12, focus: tuple[str, ...] = ("wal_bridge/",),
              min_share: float = 0.01) -> dict[str, Any]:
    """Per thread: its samples, the leaf lines that take the most of them, and the functions
    of ``focus`` files with the most inclusive time, each with its share of the thread."""
    result: dict[str, Any] = {}
    for name, profile in sorted(parse(text).items(), key=lambda kv: -kv[1].samples):
        if not profile.samples:
            continue
        total = profile.samples

        def rows(counter: Counter[str], keep: Any, total: int = total) -> list[dict[str, Any]]:
            picked = [(k, v) for k, v in counter.most_common() if keep(k)]
            return [{"frame": k, "samples": v, "share": round(v / total, 4)}
                    for k, v in picked[:top] if v / total >= min_share]

        result[name] = {
            "samples": total,
            "leaf_lines": rows(profile.leaf_lines, lambda _k: True),
            "functions": rows(profile.inclusive, lambda k: any(f in k for f in focus)),
        }
    return result


def format_summary(summary: dict[str, Any], rate_hz: float, *, top: int = 8,
                   wall_s: float | None = None) -> str:
    """The summary as text for a terminal or a Markdown code block. With ``wall_s`` (how
    long the sampled run took) each thread also shows its samples as a share of that time."""
    out: list[str] = []
    for name, thread in summary.items():
        seconds = thread["samples"] / rate_hz
        share = f", {seconds / wall_s:.0%} of the run" if wall_s else ""
        out.append(f"thread {name}: {thread['samples']} samples ({seconds:.1f} s{share})")
        out.append("  leaf lines (share of this thread's samples):")
        out.extend(f"    {row['share']:6.1%}  {row['frame']}" for row in thread["leaf_lines"][:top])
        if thread["functions"]:
            out.append("  inclusive, in wal_bridge:")
            out.extend(f"    {row['share']:6.1%}  {row['frame']}"
                       for row in thread["functions"][:top])
    return "\n".join(out)
