"""Ports and child processes: the pieces every service shares."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from .errors import NotManagedError, PortTakenError, StartError

LOOPBACK = "127.0.0.1"
LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_port_free(port: int, service: str) -> None:
    """Raise PortTakenError if ``port`` on loopback cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortTakenError(service, port) from exc
            raise


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(paths: Sequence[Path], lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of each existing file, labelled, for error messages."""
    parts = []
    for path in paths:
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path} ---\n" + "\n".join(text))
    return "\n".join(parts) or "(no log written)"


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec hook that has Linux kill the child when the test process dies.

    Without it a `kill -9` of pytest would leave a JVM running. The prctl function is looked
    up before the fork so the child only makes the one C call.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return hook


class ServiceProcess:
    """One child process with its log, started attached (tests) or detached (dev-services)."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        log_path: Path,
        detached: bool,
        env: dict[str, str] | None = None,
        *,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.cmd = cmd
        self.log_path = log_path
        self.detached = detached
        self.env = env or {}
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # preexec_fn is unsafe with threads in general; here the child makes one C call.
        hook = None if self.detached else _die_with_parent()
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
                cwd=self.cwd,
                start_new_session=self.detached,
                preexec_fn=hook,  # noqa: PLW1509 (see above)
            )

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait_ready(
        self, probe: Callable[[], bool], timeout: float, logs: Sequence[Path] = ()
    ) -> None:
        """Poll ``probe`` until true; raise StartError if the process dies or time runs out."""
        all_logs = [*logs, self.log_path]
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                text = tail(all_logs)
                reason = f"the process exited with code {code}"
                if "Address already in use" in text or "address already in use" in text:
                    reason += " because a port is already taken"
                raise StartError(self.name, reason, text)
            if probe():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise StartError(self.name, f"not ready after {timeout:.0f} s", tail(all_logs))
            time.sleep(0.2)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``grace`` seconds."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL and reap: the crash a chaos test wants."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.kill()
        self._proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the process hangs with its sockets open."""
        if self.alive() and self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.alive() and self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)


def pid_alive(pid: int, cmd_fragment: str) -> bool:
    """Whether ``pid`` runs and its command line contains ``cmd_fragment`` (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        return cmd_fragment in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return True


def stop_pid(pid: int, cmd_fragment: str, grace: float = 30.0) -> None:
    """SIGTERM a process we started earlier (checked by ``cmd_fragment``), then SIGKILL."""
    if not pid_alive(pid, cmd_fragment):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid, cmd_fragment):
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


class LoopbackServer:
    """A server process the harness owns: a loopback port, a work directory and a log file.

    Subclasses say how to run it (:meth:`command`) and when it is ready (:meth:`ready`).
    """

    managed = True
    name = "server"

    def __init__(
        self, binary: Path, workdir: Path | None = None, *, port: int = 0, detached: bool = False
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"wal-bridge-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.owns_workdir = workdir is None
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = self.workdir / f"{self.name}.log"
        self._process = ServiceProcess(
            self.name, self.command(binary), self.log_path, detached, self.environment()
        )

    def command(self, binary: Path) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Variables to set for the process, over the inherited environment."""
        return {}

    def ready(self) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self, timeout: float = 30.0) -> None:
        if self._process.alive():
            return
        ensure_port_free(self.port, self.name)
        self._process.start()
        self._process.wait_ready(self.ready, timeout)

    def alive(self) -> bool:
        return self._process.alive()

    def stop(self) -> None:
        self._process.stop(grace=10.0)

    def close(self) -> None:
        self.stop()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class ExternalService:
    """A service named by the environment (``WAL_BRIDGE_TEST_*``): the harness never starts,
    stops or pauses it, and says so (NotManagedError) when a test asks it to; a test that
    needs that skips. Subclasses give :meth:`alive` and :attr:`described` ("the broker at
    ...")."""

    managed = False
    described = "the service"

    def alive(self) -> bool:
        raise NotImplementedError

    def _refuse(self, action: str) -> None:
        raise NotManagedError(
            f"cannot {action} {self.described}: it was named by the environment, not started "
            "by the harness"
        )

    def start(self) -> None:
        if not self.alive():
            self._refuse("start")

    def stop(self) -> None:
        self._refuse("stop")

    def kill(self) -> None:
        self._refuse("kill")

    def restart(self) -> None:
        self._refuse("restart")

    def pause(self) -> None:
        self._refuse("pause")

    def resume(self) -> None:
        self._refuse("resume")


class Lifecycle(Protocol):
    """What tests may do with a service, whether the harness started it (``managed``) or the
    environment named it (then each of these but ``alive`` raises NotManagedError)."""

    managed: bool

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...

    def restart(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def alive(self) -> bool: ...
