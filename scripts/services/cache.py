"""The provisioning cache: one directory, filled once, shared by every run.

Layout under ``$WAL_BRIDGE_CACHE`` (default ``~/.cache/wal-bridge``)::

    kafka-4.1.1/libs/*.jar          broker jars resolved by Maven
    apicurio-registry-3.0.9/        the registry's runner jar and lib/, from Maven's tar.gz
    bin/fake-gcs-server-v1.56.1     built with `go install`
    bin/toxiproxy-server-v2.12.0
    bin/bigquery-emulator-v0.8.1
    run/                            state of `scripts/dev-services up`
    .lock-<artifact>                one flock per artifact

Each artifact is built into a temporary name next to its final one and renamed into place,
so a half-built artifact is never seen; the lock makes concurrent runs wait for the first.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ProvisionError, ToolMissingError

CACHE_ENV = "WAL_BRIDGE_CACHE"
TMP_PREFIX = ".tmp-"
TOOL_OUTPUT_TAIL_LINES = 25


def cache_root() -> Path:
    """The cache directory, created if missing."""
    configured = os.environ.get(CACHE_ENV)
    root = Path(configured) if configured else Path.home() / ".cache" / "wal-bridge"
    root.mkdir(parents=True, exist_ok=True)
    return root


def log(message: str) -> None:
    """One progress line for a person, on stderr so stdout stays parseable."""
    sys.stderr.write(f"[services] {message}\n")  # one write: threads do not interleave lines
    sys.stderr.flush()


@contextmanager
def locked(root: Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock named ``name`` in the cache for the duration of the block."""
    with open(root / f".lock-{name}", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_artifact(
    root: Path,
    final: Path,
    what: str,
    build: Callable[[Path], None],
    preflight: Callable[[], object] = lambda: None,
) -> Path:
    """Return ``final``, building it first with ``build(tmp_dir)`` if it is not there.

    ``preflight`` runs before anything is printed or written (checks for the tools needed).

    ``build`` fills a fresh temporary directory inside the cache; ``final`` is then the path
    inside that directory with the same relative name, renamed into place atomically.
    """
    if final.exists():
        return final
    preflight()
    with locked(root, final.name):
        if final.exists():  # built by a concurrent run while we waited for the lock
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        for stray in final.parent.glob(f"{TMP_PREFIX}{final.name}-*"):
            shutil.rmtree(stray, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=final.parent))
        try:
            started = time.monotonic()
            log(f"provisioning {what} into {final} (first run only) ...")
            build(tmp)
            os.replace(tmp / final.name, final)
            log(f"provisioned {what} in {time.monotonic() - started:.1f} s (cold)")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def require_tool(tool: str, needed_for: str, install: str) -> str:
    """The absolute path of ``tool``, or a ToolMissingError that says how to get it."""
    found = shutil.which(tool)
    if found is None:
        raise ToolMissingError(tool, needed_for, install)
    return found


def run_tool(cmd: list[str], what: str, cwd: Path, env: dict[str, str] | None = None) -> None:
    """Run a provisioning command; on failure raise ProvisionError with its output's tail."""
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise ProvisionError(what, f"{cmd[0]}: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-TOOL_OUTPUT_TAIL_LINES:])
        raise ProvisionError(what, f"(exit code {done.returncode})\n{tail}")


GO_INSTALL_HINT = (
    "Go 1.26 or newer (the emulator's go.mod asks for it; with an older Go, "
    "GOTOOLCHAIN=auto fetches one): Debian/Ubuntu `apt-get install golang-go`, "
    "macOS `brew install go`, or the official tarball."
)


def go_binary(
    root: Path,
    package: str,
    version: str,
    built_name: str,
    name: str,
    *,
    module: str | None = None,
    flags: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Path:
    """Build ``package@version`` with `go install` into ``bin/{name}-{version}``.

    ``module``: build inside a scratch module instead, one that requires ``module version``
    and nothing else (`go mod tidy`, then `go build`); the same dependency versions, but it
    never asks the module proxy for the module's version list, which `go install pkg@version`
    does (for a deprecation notice) and which a proxy may refuse. ``flags``: extra build flags
    (``-p 1``); ``env``: extra variables for the build (``GOGC``), over CGO_ENABLED=0.
    """
    final = root / "bin" / f"{name}-{version}"
    what = f"{name} {version} (go {'build' if module else 'install'} {package}@{version})"

    def find_go() -> str:
        return require_tool("go", f"once to build {name} {version} into {root}", GO_INSTALL_HINT)

    def build(tmp: Path) -> None:
        build_env = {"CGO_ENABLED": "0", **(env or {})}
        if module is None:
            run_tool(
                [find_go(), "install", *flags, f"{package}@{version}"],
                what,
                cwd=tmp,
                env={"GOBIN": str(tmp), **build_env},
            )
            os.replace(tmp / built_name, tmp / final.name)
            return
        scratch = tmp / "module"
        scratch.mkdir()
        (scratch / "go.mod").write_text(
            f"module wal-bridge/build/{name}\n\ngo 1.21\n\nrequire {module} {version}\n"
        )
        # The one import that makes `go mod tidy` keep the requirement and fill go.sum.
        (scratch / "tools.go").write_text(
            f'//go:build tools\n\npackage tools\n\nimport _ "{package}"\n'
        )
        run_tool([find_go(), "mod", "tidy"], what, cwd=scratch, env=build_env)
        run_tool(
            [find_go(), "build", *flags, "-o", str(tmp / final.name), package],
            what,
            cwd=scratch,
            env=build_env,
        )

    return ensure_artifact(root, final, f"{name} {version}", build, preflight=find_go)
