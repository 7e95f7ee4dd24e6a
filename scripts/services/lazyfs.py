"""LazyFS: a FUSE filesystem that keeps unsynced writes in its own cache and drops them on command.

LazyFS (github dsrhaslab/lazyfs, 0.3.0) is in no package registry. Its source and a ``build``
script sit beside the repository, in ``../shared/lazyfs/`` (relative to the repository root):
the script installs the Debian packages it needs with apt-get (root, first use only), builds in
about half a minute on two cores, caches the build (``$LAZYFS_CACHE``, default
``~/.cache/lazyfs``) and prints the binary's path. That directory's README gives the
configuration, the FIFO commands and the limits observed.

:class:`LazyFs` is one mount: the data lives in ``<workdir>/data``, the application uses
``<workdir>/mnt``. Writes stay in LazyFS's cache (``cache_size``, RAM) until fsync or fdatasync;
:meth:`LazyFs.clear_cache` drops every unsynced write, which is what a power cut does to them;
:meth:`LazyFs.power_cut` also unmounts and mounts again, as a machine would reboot.
Directory operations (create, rename, unlink) are always kept, so LazyFS shows a missing *file*
fsync (a renamed file comes back empty) but never a missing *directory* fsync.

Mounting needs root (``/dev/fuse`` is 0600); :func:`unavailable` says why it cannot run here.
A command is acknowledged by LazyFS on a second FIFO (``finished::...``), so
:meth:`LazyFs.command` returns only once it was carried out.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .cache import log
from .errors import ProvisionError, ServiceError, SetupError, StartError
from .procs import ServiceProcess, tail

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT.parent / "shared" / "lazyfs" / "build"
BUILD_SCRIPT_NAME = "../shared/lazyfs/build"
DEFAULT_CACHE_SIZE = "64mb"
FSTYPE = "fuse.lazyfs"


def unavailable() -> str | None:
    """Why LazyFS cannot be built or mounted on this machine, or None when it can."""
    if not BUILD_SCRIPT.exists():
        return (f"{BUILD_SCRIPT_NAME} (beside the repository, relative to its root) is missing: "
                "it holds LazyFS's source and build script")
    if os.geteuid() != 0:
        return "LazyFS needs root: /dev/fuse is 0600 and the first build runs apt-get"
    if not Path("/dev/fuse").exists():
        return "LazyFS needs /dev/fuse (a container needs --device /dev/fuse)"
    return None


def provision() -> Path:
    """The LazyFS binary, built by ``../shared/lazyfs/build`` on first use (then cached).

    Raises SetupError when :func:`unavailable` gives a reason, ProvisionError when the build
    fails (its output's tail in the message).
    """
    reason = unavailable()
    if reason is not None:
        raise SetupError(f"LazyFS cannot run here: {reason}")
    started = time.monotonic()
    try:
        done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                              timeout=1800, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProvisionError(f"LazyFS ({BUILD_SCRIPT_NAME})", str(exc)) from exc
    binary = Path(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    if done.returncode != 0 or binary is None or not os.access(binary, os.X_OK):
        output = "\n".join(done.stderr.splitlines()[-25:])
        raise ProvisionError(f"LazyFS ({BUILD_SCRIPT_NAME}, exit code {done.returncode})",
                             output)
    elapsed = time.monotonic() - started
    if elapsed > 1:
        log(f"built LazyFS in {elapsed:.1f} s (cold): {binary}")
    return binary


def mounted(path: Path) -> bool:
    """Whether ``/proc/mounts`` lists a LazyFS mount at ``path`` (never trust the directory
    alone: a mount that failed leaves a plain directory that keeps every write)."""
    target = str(path)
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and _unescape(fields[1]) == target and fields[2] == FSTYPE:
                return True
    return False


def _unescape(field: str) -> str:
    """A /proc/mounts field with its octal escapes (``\\040`` for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class LazyFs:
    """One LazyFS mount owned by the harness: ``mountpoint`` for the application, ``data`` for
    what LazyFS has written through, ``fifo`` for commands. Use :meth:`start`, then
    :meth:`close` (unmount, and remove ``workdir`` when it made it)."""

    name = "lazyfs"

    def __init__(self, binary: Path, workdir: Path | None = None, *,
                 cache_size: str = DEFAULT_CACHE_SIZE) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="wal-bridge-lazyfs-"))
        self.owns_workdir = workdir is None
        self.workdir = self.workdir.resolve()
        self.data = self.workdir / "data"
        self.mountpoint = self.workdir / "mnt"
        self.fifo = self.workdir / "faults.fifo"
        self.done_fifo = self.workdir / "done.fifo"
        self.config = self.workdir / "lazyfs.toml"
        self.log_path = self.workdir / "lazyfs.log"
        self.cache_size = cache_size
        self._binary = binary
        self._done_fd: int | None = None
        self._process = ServiceProcess(
            self.name,
            # The config path is given relative to the work directory: LazyFS's argument
            # parser takes a path containing "-o", in any case (pytest's "pytest-of-<user>"
            # has one), for an option and falls back to config/default.toml.
            [str(binary), str(self.mountpoint), "--config-path", self.config.name,
             "-o", "allow_other", "-o", "modules=subdir", "-o", f"subdir={self.data}", "-f"],
            self.workdir / "lazyfs.out", detached=False, cwd=self.workdir,
        )

    def _write_config(self) -> None:
        self.config.write_text(
            "[faults]\n"
            f'fifo_path="{self.fifo}"\n'
            f'fifo_path_completed="{self.done_fifo}"\n'
            "[cache]\n"
            "apply_eviction=false\n"
            "[cache.simple]\n"
            f'custom_size="{self.cache_size}"\n'
            "blocks_per_page=1\n"
            "[filesystem]\n"
            "log_all_operations=false\n"
            f'logfile="{self.log_path}"\n'
        )

    def start(self, timeout: float = 30.0) -> LazyFs:
        """Mount, and return once ``/proc/mounts`` lists the mount. Raises StartError."""
        if mounted(self.mountpoint):
            return self
        for directory in (self.data, self.mountpoint):
            directory.mkdir(parents=True, exist_ok=True)
        for fifo in (self.fifo, self.done_fifo):
            if not fifo.exists():
                os.mkfifo(fifo)
        self._write_config()
        # LazyFS writes its answers to the second FIFO and blocks until someone reads it: keep
        # it open for reading for the mount's whole life (O_RDWR: never an end of file).
        if self._done_fd is None:
            self._done_fd = os.open(self.done_fifo, os.O_RDWR | os.O_NONBLOCK)
        self._process.start()
        logs = [self._process.log_path, self.log_path]
        try:
            self._process.wait_ready(lambda: mounted(self.mountpoint), timeout, logs)
        except StartError:
            self.close()
            raise
        return self

    def alive(self) -> bool:
        return self._process.alive() and mounted(self.mountpoint)

    def command(self, line: str, timeout: float = 30.0) -> str:
        """Send one FIFO command (``lazyfs::clear-cache``, ...) and wait for LazyFS's answer
        (``finished::...``); return it. Raises ServiceError when the mount is gone or no
        answer comes within ``timeout`` seconds."""
        if not self.alive() or self._done_fd is None:
            raise ServiceError(f"LazyFS at {self.mountpoint} is not mounted; cannot send {line!r}"
                               f"\n{tail([self._process.log_path, self.log_path])}")
        self._drain_answers(self._done_fd)
        deadline = time.monotonic() + timeout
        fd = self._open_fifo(deadline)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)
        answer = b""
        while b"\n" not in answer:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([self._done_fd], [], [], max(0.0, left))
            if not readable:
                raise ServiceError(f"LazyFS did not answer {line!r} within {timeout:.0f} s"
                                   f"\n{tail([self._process.log_path, self.log_path])}")
            with contextlib.suppress(BlockingIOError):
                answer += os.read(self._done_fd, 4096)
        return answer.decode(errors="replace").strip()

    def _open_fifo(self, deadline: float) -> int:
        """The command FIFO, opened for writing once LazyFS reads it."""
        while True:
            try:
                return os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: no reader yet
                if time.monotonic() > deadline or not self._process.alive():
                    raise ServiceError(f"LazyFS does not read {self.fifo}: {exc}") from exc
                time.sleep(0.01)

    @staticmethod
    def _drain_answers(fd: int) -> None:
        """Throw away answers nobody waited for (a command that timed out before)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(fd, 4096):
                pass

    def clear_cache(self) -> float:
        """Drop every write not yet fsynced (the power cut); return the seconds it took.
        Stop every process writing here first: one that keeps an O_APPEND descriptor across
        it would write at the old end of the file, leaving a gap no real power cut leaves."""
        started = time.monotonic()
        answer = self.command("lazyfs::clear-cache")
        if "clear-cache" not in answer:
            raise ServiceError(f"LazyFS answered {answer!r} to lazyfs::clear-cache")
        return time.monotonic() - started

    def power_cut(self) -> float:
        """Drop every unsynced write, then unmount and mount again (the reboot): what a power
        cut leaves, with none of LazyFS's own state carried over. Return the seconds it took.

        The reboot matters: right after the writer was killed, a start on the same mount has
        seen an ``ftruncate`` of an existing file fail with ENOENT, which no disk does.
        """
        started = time.monotonic()
        self.clear_cache()
        self.unmount()
        self.start()
        return time.monotonic() - started

    def unmount(self, timeout: float = 15.0) -> None:
        """Unmount (retrying while busy, then lazily) and wait for LazyFS to exit."""
        deadline = time.monotonic() + timeout
        while mounted(self.mountpoint):
            done = subprocess.run(["fusermount3", "-u", str(self.mountpoint)],
                                  capture_output=True, text=True, check=False)
            if done.returncode == 0 or not mounted(self.mountpoint):
                break
            if time.monotonic() > deadline:
                subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)],
                               capture_output=True, check=False)
                break
            time.sleep(0.1)
        # After an unmount LazyFS exits by itself (status 134, harmless); otherwise end it.
        self._process.stop(grace=5.0)

    def close(self) -> None:
        """Unmount, close the answer FIFO, and remove the work directory if it was made here."""
        if shutil.which("fusermount3") is not None:
            self.unmount()
        else:
            self._process.stop(grace=5.0)
        if self._done_fd is not None:
            os.close(self._done_fd)
            self._done_fd = None
        if self.owns_workdir and not mounted(self.mountpoint):
            shutil.rmtree(self.workdir, ignore_errors=True)
