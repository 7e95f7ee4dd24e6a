"""compose.yaml as the docker compose CLI sees it: loaded by compose-go (scripts/compose-check).

compose-go is the loader inside the docker compose CLI: what it accepts and how it interpolates,
merges and resolves ``env_file`` into ``environment`` is what ``docker compose up`` will see,
without needing a Docker engine. The checker is built once into a cache directory
($WAL_BRIDGE_CACHE or ~/.cache/wal-bridge), keyed by its compose-go version and source digest.

Shared by tests/unit/infra/test_compose.py (the structure of each profile) and
tests/integration/test_compose_stack.py (each profile's services run natively).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKER_SRC = ROOT / "scripts" / "compose-check"
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"


def _cache_dir() -> Path:
    configured = os.environ.get("WAL_BRIDGE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "wal-bridge"


def _compose_go_version() -> str:
    match = re.search(
        r"github\.com/compose-spec/compose-go/v2 (v[0-9][^\s]*)",
        (CHECKER_SRC / "go.mod").read_text(encoding="utf-8"),
    )
    assert match, "compose-go/v2 is not required in scripts/compose-check/go.mod"
    return match.group(1)


def clean_env() -> dict[str, str]:
    """The process environment without variables that compose.yaml would interpolate."""
    keep = ("PATH", "HOME", "GOPATH", "GOMODCACHE", "GOCACHE", "GOPROXY", "GOFLAGS", "TMPDIR")
    return {key: os.environ[key] for key in keep if key in os.environ}


def build_checker() -> Path:
    """Build scripts/compose-check once per source version and return the binary.

    Skips the calling test when ``go`` is not on PATH; fails it when the build fails.
    """
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not on PATH: cannot build scripts/compose-check (compose-go)")
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((CHECKER_SRC / name).read_bytes())
    binary = (
        _cache_dir() / "bin" / f"compose-check-{_compose_go_version()}-{digest.hexdigest()[:12]}"
    )
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
        result = subprocess.run(
            [go, "build", "-trimpath", "-o", str(partial), "."],
            cwd=CHECKER_SRC,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env=clean_env() | {"CGO_ENABLED": "0"},
        )
        assert result.returncode == 0, f"go build failed:\n{result.stderr}"
        partial.replace(binary)
    return binary


def make_project_dir(workdir: Path, env_overrides: dict[str, str] | None = None) -> Path:
    """Copy compose.yaml into ``workdir`` with .env.example as its .env, as the docs say to.

    ``env_overrides`` replace (or append) ``NAME=value`` lines of that .env, the way a user
    edits it. A placeholder credentials file is written where GCP_KEY_FILE points by default.
    Returns ``workdir``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(COMPOSE, workdir / "compose.yaml")
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    left = dict(env_overrides or {})
    for index, line in enumerate(lines):
        name = line.split("=", 1)[0]
        if not line.startswith("#") and "=" in line and name in left:
            lines[index] = f"{name}={left.pop(name)}"
    lines.extend(f"{name}={value}" for name, value in left.items())
    (workdir / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (workdir / "secrets").mkdir(exist_ok=True)
    (workdir / "secrets" / "gcp-key.json").write_text("{}\n", encoding="utf-8")
    return workdir


def run_checker(checker: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run compose-check on ``workdir``/compose.yaml with ``args`` (profile sets, -json)."""
    return subprocess.run(
        [str(checker), "-file", "compose.yaml", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(),
    )


def load_project(checker: Path, workdir: Path, profiles: str) -> dict[str, Any]:
    """compose-go's JSON model of the project in ``workdir`` for one profile set.

    ``profiles``: comma-separated names ("local,scale"), or "none". The model is what
    ``docker compose --profile ... config --format json`` prints: interpolated, merged, with
    ``env_file`` entries resolved into each service's ``environment``. Fails the test when the
    loader rejects the file.
    """
    result = run_checker(checker, workdir, "-json", profiles)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["services"] == sorted(document["project"]["services"])
    project: dict[str, Any] = document["project"]
    return project
