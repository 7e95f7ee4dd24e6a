"""Apicurio Registry 3.0.9 as the schema registry, run with Java from Maven Central's build.

``provision`` resolves ``io.apicurio:apicurio-registry-app:3.0.9:tar.gz:all`` (the runnable
build: a runner jar and its ``lib/``) with Maven and unpacks it once into
``apicurio-registry-3.0.9/`` in the cache. ``ApicurioRegistry`` runs the runner jar on a free
loopback port with its storage in an H2 file under its own directory, so ``stop`` and ``start``
(a registry outage in the middle of a test) keep every schema and its id. The
Confluent-compatible API, the one ``confluent_kafka.schema_registry`` speaks, is at
``{url}/apis/ccompat/v7`` (``ccompat_url``). ``ExternalRegistry`` wraps a registry named by the
environment (``WAL_BRIDGE_TEST_SCHEMA_REGISTRY``, a Confluent-compatible base URL such as
``http://127.0.0.1:8081`` for Redpanda's): it is used as it is and never stopped.

Maven's dependency plugin 3.x reads the artifact's POM before copying it, and the POM's parent
(``io.apicurio:apicurio-registry:3.0.9``) is not on Maven Central, so the copy fails there;
plugin 2.10 copies the artifact alone, which is all we want from it.
"""

from __future__ import annotations

import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

from .cache import ensure_artifact, require_tool, run_tool
from .errors import ProvisionError
from .kafka import JAVA_INSTALL_HINT, MAVEN_INSTALL_HINT
from .procs import LOOPBACK, ExternalService, Lifecycle, LoopbackServer

VERSION = "3.0.9"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{VERSION}:tar.gz:all"
# 2.10, not 3.x: see the module docstring (the artifact's parent POM is not on Central).
COPY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:2.10"
RUNNER_JAR = f"apicurio-registry-app-{VERSION}-runner.jar"
CCOMPAT_PATH = "/apis/ccompat/v7"
JVM_OPTIONS = ["-Xmx256m", "-Djava.awt.headless=true"]
READY_TIMEOUT = 90.0


def provision(root: Path) -> Path:
    """The unpacked registry (``RUNNER_JAR`` and ``lib/``) in the cache, fetched on first use."""
    final = root / f"apicurio-registry-{VERSION}"

    def find_mvn() -> str:
        needed_for = f"once to fetch Apicurio Registry {VERSION} into {root}"
        return require_tool("mvn", needed_for, MAVEN_INSTALL_HINT)

    what = f"Apicurio Registry {VERSION} (mvn dependency:copy {ARTIFACT})"

    def build(tmp: Path) -> None:
        download = tmp / "download"
        run_tool(
            [
                find_mvn(),
                "--batch-mode",
                "--quiet",
                "-Dstyle.color=never",
                f"{COPY_PLUGIN}:copy",
                f"-Dartifact={ARTIFACT}",
                f"-DoutputDirectory={download}",
            ],
            what,
            cwd=tmp,
        )
        archives = list(download.glob("*.tar.gz"))
        if len(archives) != 1:
            found = ", ".join(a.name for a in archives) or "nothing"
            raise ProvisionError(what, f"expected one .tar.gz from Maven, found {found}")
        with tarfile.open(archives[0]) as archive:
            archive.extractall(tmp / final.name, filter="data")
        if not (tmp / final.name / RUNNER_JAR).is_file():
            raise ProvisionError(what, f"{RUNNER_JAR} is not in {archives[0].name}")
        shutil.rmtree(download)

    return ensure_artifact(
        root, final, f"Apicurio Registry {VERSION}", build, preflight=find_mvn
    )


def require_java() -> str:
    """The `java` to run the registry with, or a ToolMissingError saying how to get one."""
    return require_tool("java", "to run the schema registry", JAVA_INSTALL_HINT)


def registry_ready(ccompat_url: str) -> bool:
    """Whether the Confluent-compatible API at ``ccompat_url`` lists its subjects (HTTP 200)."""
    try:
        with urllib.request.urlopen(f"{ccompat_url}/subjects", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class Registry(Lifecycle, Protocol):
    """What tests use of a schema registry, whether the harness started it or not."""

    ccompat_url: str

    def close(self) -> None: ...


class ExternalRegistry(ExternalService):
    """A Confluent-compatible registry named by the environment; never started or stopped."""

    def __init__(self, url: str) -> None:
        self.ccompat_url = url.rstrip("/")
        self.url = self.ccompat_url
        self.described = f"the schema registry at {self.ccompat_url}"

    def alive(self) -> bool:
        return registry_ready(self.ccompat_url)

    def close(self) -> None:
        """Nothing to close: the harness did not start it."""


class ApicurioRegistry(LoopbackServer):
    """An Apicurio Registry process (H2 file storage in its directory), owned by the harness."""

    name = "apicurio-registry"

    def __init__(
        self, home: Path, workdir: Path | None = None, *, port: int = 0, detached: bool = False
    ) -> None:
        self.home = home
        super().__init__(home / RUNNER_JAR, workdir, port=port, detached=detached)
        self.ccompat_url = f"{self.url}{CCOMPAT_PATH}"

    def command(self, binary: Path) -> list[str]:
        database = self.workdir / "registry-db"
        return [
            require_java(),
            *JVM_OPTIONS,
            f"-Dquarkus.http.host={LOOPBACK}",
            f"-Dquarkus.http.port={self.port}",
            # A file, not the default in-memory database: schemas and ids survive a restart.
            f"-Dapicurio.datasource.url=jdbc:h2:file:{database};DB_CLOSE_ON_EXIT=FALSE",
            f"-Dapicurio.storage.snapshot.location={self.workdir}",
            "-Dquarkus.log.console.json=false",
            "-jar",
            str(binary),
        ]

    def ready(self) -> bool:
        return registry_ready(self.ccompat_url)

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the registry and wait until its Confluent-compatible API answers."""
        super().start(timeout)

    def kill(self) -> None:
        """SIGKILL: the registry vanishes; what it stored is kept in its H2 file."""
        self._process.kill()

    def restart(self, timeout: float = READY_TIMEOUT) -> None:
        """Stop and start again on the same port, with the same schemas and ids."""
        self.stop()
        self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP: the registry hangs with its port open (requests time out, not refused)."""
        self._process.pause()

    def resume(self) -> None:
        self._process.resume()
