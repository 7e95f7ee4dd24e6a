"""bigquery-emulator v0.8.1: BigQuery's REST API and GoogleSQL, run on a free loopback port.

Built from its Go module like fake-gcs-server (pure Go at v0.8.1: the GoogleSQL analyzer is
WebAssembly translated to Go, SQLite is github.com/ncruces/go-sqlite3's WebAssembly build, and
JavaScript UDFs run in modernc.org/quickjs, so no cgo and no C++ toolchain;
its go.mod has no ``replace``). It is built in a scratch module (see ``cache.go_binary``)
rather than with `go install ...@v0.8.1`, which asks the module proxy for the module's version
list and fails where the proxy refuses that. The build is long and large once (BUILD_FLAGS);
afterwards the emulator starts in about a second from ``bin/bigquery-emulator-v0.8.1``.

It has no external tables, so tests load the landed Parquet into a native table with a load
job. A load job from ``gs://`` reads through the GCS client of the emulator process, which
honours ``STORAGE_EMULATOR_HOST`` (``server/handler.go``, ``gcsClientOptions``): the harness
starts it with that variable set to the session's fake-gcs-server. An emulator named by
``WAL_BRIDGE_TEST_BIGQUERY`` must have been started with ``--project test`` and with
``STORAGE_EMULATOR_HOST`` pointing at the GCS emulator the tests use.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from .cache import go_binary
from .procs import LOOPBACK, LoopbackServer, free_port

MODULE = "github.com/goccy/bigquery-emulator"
PACKAGE = f"{MODULE}/cmd/bigquery-emulator"
VERSION = "v0.8.1"
PROJECT = "test"
# The GoogleSQL analyzer is a dozen generated packages of 40 MB of Go each; compiling one takes
# 3 to 5 GiB. Go's defaults (one package per core) keep a 2-core machine near 10 GiB for a few
# minutes; `-p 1` with GOGC=50 halves the peak but took 22 minutes on a busy machine, so the
# defaults stay. It is a one-time cost: the binary is cached.
BUILD_FLAGS: tuple[str, ...] = ()
BUILD_ENV: dict[str, str] = {}


def provision(root: Path) -> Path:
    """The emulator binary in the cache, built on first use in a scratch module."""
    return go_binary(
        root,
        PACKAGE,
        VERSION,
        "bigquery-emulator",
        "bigquery-emulator",
        module=MODULE,
        flags=BUILD_FLAGS,
        env=BUILD_ENV,
    )


def emulator_ready(url: str, project: str = PROJECT) -> bool:
    """Whether the emulator at ``url`` answers the datasets list of ``project``."""
    request = urllib.request.Request(f"{url}/bigquery/v2/projects/{project}/datasets")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            json.loads(response.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


class ExternalBigQuery:
    """An emulator named by the environment (``WAL_BRIDGE_TEST_BIGQUERY``)."""

    managed = False
    project = PROJECT

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def alive(self) -> bool:
        return emulator_ready(self.url)


class BigQueryEmulator(LoopbackServer):
    """A bigquery-emulator process with in-memory storage, owned by the harness.

    ``storage_emulator_host``: the GCS emulator's URL (``http://127.0.0.1:PORT``) that load
    jobs from ``gs://`` read; without it they would go to the real Cloud Storage.
    """

    name = "bigquery-emulator"
    project = PROJECT

    def __init__(
        self,
        binary: Path,
        workdir: Path | None = None,
        *,
        storage_emulator_host: str | None = None,
        port: int = 0,
        detached: bool = False,
    ) -> None:
        self.storage_emulator_host = storage_emulator_host
        self.grpc_port = free_port()  # the Storage Read API's port; unused by tests
        super().__init__(binary, workdir, port=port, detached=detached)

    def command(self, binary: Path) -> list[str]:
        return [
            str(binary),
            "--project", self.project,
            "--host", LOOPBACK,
            "--port", str(self.port),
            "--grpc-port", str(self.grpc_port),
            "--log-level", "warn",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        if self.storage_emulator_host is None:
            return {}
        return {"STORAGE_EMULATOR_HOST": self.storage_emulator_host}

    def ready(self) -> bool:
        return emulator_ready(self.url, self.project)
