"""Measuring a child process: wall time, CPU time, peak and sampled RSS, from /proc and wait4.

Standard library only. :class:`Child` starts a command, samples its resident set size and
its peak (VmRSS, VmHWM) from ``/proc/PID/status`` while it runs, and reaps it with
``os.wait4`` for its CPU time (``ru_utime + ru_stime``, that one child's own).

The peak is VmHWM, read while the child runs, and not wait4's ``ru_maxrss``: Linux counts in
``ru_maxrss`` the memory image the child had before its exec, a copy of the parent's, so a
child of a 300 MiB benchmark process reports at least 300 MiB whatever it used itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int | None:
    """Current resident set size of ``pid`` (VmRSS), or None if it is gone."""
    return _status_kib(pid, "VmRSS")


def hwm_bytes(pid: int) -> int | None:
    """Peak resident set size of a running ``pid`` so far (VmHWM), or None."""
    return _status_kib(pid, "VmHWM")


def _status_kib(pid: int, field_name: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by ``pid`` (its own threads, not its children)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces; the fields after its closing ')' do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of each thread of ``pid``: ``{tid: (comm, seconds)}``. librdkafka
    names its threads (``rdk:main``, ``rdk:broker1``); Python threads keep the program's name,
    and the main thread's tid is the pid."""
    out: dict[int, tuple[str, float]] = {}
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except (FileNotFoundError, ProcessLookupError):
        return out
    for tid in tids:
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[tid] = (comm, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return out


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def filesystem_of(path: Path) -> str:
    """The type of the file system that holds ``path`` (ext4, xfs, tmpfs, overlay ...)."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    target = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3:
            mount = parts[1]
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, parts[2]
    return kind


@dataclass
class Usage:
    """What a finished child used."""

    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    exit_code: int
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (s since start, bytes)


class Child:
    """A child process measured from spawn to reaping.

    ``on_line`` receives each stdout line (decoded, stripped) with the monotonic time it was
    read; without it stdout goes to ``log`` like stderr.
    """

    def __init__(
        self,
        cmd: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log: Path,
        on_line: Callable[[str, float], None] | None = None,
        cwd: Path | None = None,
        sample_every: float = 0.25,
    ) -> None:
        self.cmd = list(cmd)
        self.log_path = log
        self.on_line = on_line
        self.sample_every = sample_every
        self.samples: list[tuple[float, int]] = []
        self.peak_bytes = 0  # the highest VmHWM read
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log, "ab")  # noqa: SIM115 - open for the child's lifetime
        self.started = time.monotonic()
        self.started_epoch = time.time()
        self.proc = subprocess.Popen(
            self.cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if on_line else self._log, stderr=self._log,
        )
        self.pid = self.proc.pid
        self._stop_sampling = threading.Event()
        self._threads = [threading.Thread(target=self._sample, daemon=True)]
        if on_line:
            self._threads.append(threading.Thread(target=self._read, daemon=True))
        for thread in self._threads:
            thread.start()

    def _sample(self) -> None:
        while not self._stop_sampling.is_set():
            rss = rss_bytes(self.pid)
            if rss is not None:
                self.samples.append((round(time.monotonic() - self.started, 3), rss))
            self._read_peak()
            self._stop_sampling.wait(self.sample_every)

    def _read(self) -> None:
        if self.proc.stdout is None or self.on_line is None:
            return
        for raw in self.proc.stdout:
            now = time.monotonic()
            self._log.write(raw)
            line = raw.decode(errors="replace").strip()
            if line:
                self.on_line(line, now)

    def _read_peak(self) -> None:
        peak = hwm_bytes(self.pid)
        if peak is not None:
            self.peak_bytes = max(self.peak_bytes, peak)

    def alive(self) -> bool:
        """Whether the child still runs; never reaps it (``finish`` needs its wait4 usage)."""
        if self.proc.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return False

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def finish(self, *, stop: bool = True, grace: float = 60.0) -> Usage:
        """SIGTERM the child (unless ``stop`` is False), wait, SIGKILL after ``grace`` seconds,
        and return what it used. Wall time runs from spawn to exit."""
        self._read_peak()
        if stop:
            self.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        status, usage = 0, None
        while True:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                break
            if time.monotonic() > deadline:
                self.signal(signal.SIGKILL)
                _, status, usage = os.wait4(self.pid, 0)
                break
            time.sleep(0.05)
        wall = time.monotonic() - self.started
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self._stop_sampling.set()
        for thread in self._threads:
            thread.join(5)
        self._log.close()
        if usage is None:
            raise RuntimeError(f"no resource usage for pid {self.pid}")
        peak = max([self.peak_bytes] + [rss for _, rss in self.samples])
        return Usage(
            wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, peak_rss_bytes=peak,
            exit_code=self.proc.returncode, rss_samples=list(self.samples),
        )


@dataclass
class CpuWatch:
    """CPU seconds used by long-running processes (broker, emulator) between two points."""

    pids: dict[str, int]
    _start: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        self._start = {name: cpu for name, pid in self.pids.items()
                       if (cpu := cpu_seconds(pid)) is not None}

    def stop(self) -> dict[str, float]:
        used = {}
        for name, pid in self.pids.items():
            now = cpu_seconds(pid)
            if now is not None and name in self._start:
                used[name] = round(now - self._start[name], 2)
        return used


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)
