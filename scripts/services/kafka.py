"""Apache Kafka 4.1.1, one combined broker+controller in KRaft mode, run from Maven jars.

``provision`` resolves ``org.apache.kafka:kafka_2.13`` and a Log4j 2 backend with Maven into
``kafka-4.1.1/libs`` in the cache. ``KafkaBroker`` writes ``server.properties`` into its own
directory, formats the storage with a fresh cluster id and runs ``kafka.Kafka`` on two free
loopback ports (PLAINTEXT and CONTROLLER); its data survives ``restart``. ``ExternalKafka`` wraps
bootstrap servers given by the environment: it can create topics but never stops anything.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Protocol

from . import kafka_wire
from .cache import ensure_artifact, require_tool, run_tool
from .errors import ServiceError, StartError
from .procs import (
    LOOPBACK,
    ExternalService,
    Lifecycle,
    ServiceProcess,
    ensure_port_free,
    free_port,
)

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.25.3"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
# Kafka 4 logs through SLF4J 1.7, so the Log4j binding is log4j-slf4j-impl (not -slf4j2-).
POM = f"""\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.wal-bridge</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""
LOG4J2_PROPERTIES = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
"""
JAVA_INSTALL_HINT = (
    "a JDK or JRE 17+: Debian/Ubuntu `apt-get install openjdk-17-jre-headless`, "
    "macOS `brew install openjdk@17`."
)
MAVEN_INSTALL_HINT = (
    "Maven 3.6+: Debian/Ubuntu `apt-get install maven`, macOS `brew install maven`."
)
JVM_OPTIONS = ["-Xms128m", "-Xmx512m", "-Djava.awt.headless=true"]
READY_TIMEOUT = 120.0


def provision(root: Path) -> Path:
    """The directory of broker jars in the cache, resolved by Maven on first use."""
    final = root / f"kafka-{KAFKA_VERSION}"

    def find_mvn() -> str:
        needed_for = f"once to fetch the Kafka {KAFKA_VERSION} jars into {root}"
        return require_tool("mvn", needed_for, MAVEN_INSTALL_HINT)

    def build(tmp: Path) -> None:
        mvn = find_mvn()
        (tmp / "pom.xml").write_text(POM)
        run_tool(
            [
                mvn,
                "--batch-mode",
                "--quiet",
                "-Dstyle.color=never",
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                f"-DoutputDirectory={tmp / final.name / 'libs'}",
            ],
            f"Kafka {KAFKA_VERSION} jars (mvn dependency:copy-dependencies)",
            cwd=tmp,
        )
        shutil.copy(tmp / "pom.xml", tmp / final.name / "pom.xml")

    return ensure_artifact(root, final, f"Kafka {KAFKA_VERSION} jars", build, preflight=find_mvn)


def require_java() -> str:
    """The `java` to run the broker with, or a ToolMissingError saying how to get one."""
    return require_tool("java", "to run the Kafka broker", JAVA_INSTALL_HINT)


def new_cluster_id() -> str:
    """A cluster id as Kafka's ``Uuid.randomUuid`` makes it: URL-safe base64, no padding."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class Kafka(Lifecycle, Protocol):
    """What tests use of a broker, whether the harness started it or not."""

    bootstrap: str

    def create_topic(
        self, name: str, partitions: int = 3, configs: dict[str, str] | None = None
    ) -> None: ...


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 3,
    *,
    configs: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create ``name`` and wait until every partition has a leader; raise ServiceError if not."""
    error, message = kafka_wire.create_topic(
        bootstrap, name, partitions, configs=configs, timeout=timeout
    )
    if error not in (kafka_wire.ERROR_NONE, kafka_wire.ERROR_TOPIC_ALREADY_EXISTS):
        raise ServiceError(f"creating topic {name!r} failed: error {error}: {message}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topic = kafka_wire.metadata(bootstrap, [name]).topics.get(name)
        if (
            topic is not None
            and topic.error_code == kafka_wire.ERROR_NONE
            and len(topic.partition_leaders) == partitions
            and all(leader >= 0 for leader in topic.partition_leaders.values())
        ):
            return
        time.sleep(0.1)
    raise ServiceError(f"topic {name!r} has no leader for every partition after {timeout} s")


def broker_ready(bootstrap: str) -> bool:
    """Whether a Metadata request on ``bootstrap`` lists at least one broker."""
    try:
        return bool(kafka_wire.metadata(bootstrap, [], timeout=2.0).brokers)
    except kafka_wire.KafkaWireError:
        return False


class ExternalKafka(ExternalService):
    """Bootstrap servers named by the environment; the harness neither starts nor stops them."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.described = f"the broker at {bootstrap}"

    def create_topic(
        self, name: str, partitions: int = 3, configs: dict[str, str] | None = None
    ) -> None:
        create_topic(self.bootstrap, name, partitions, configs=configs)

    def alive(self) -> bool:
        return broker_ready(self.bootstrap)


class KafkaBroker:
    """A single-node KRaft broker+controller owned by the harness."""

    managed = True

    def __init__(
        self,
        libs: Path,
        workdir: Path | None = None,
        *,
        port: int = 0,
        controller_port: int = 0,
        auto_create_topics: bool = False,
        detached: bool = False,
    ) -> None:
        self.libs = libs
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="wal-bridge-kafka-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.owns_workdir = workdir is None
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.bootstrap = f"{LOOPBACK}:{self.port}"
        self.cluster_id = new_cluster_id()
        self.auto_create_topics = auto_create_topics
        self.config = self.workdir / "server.properties"
        self.broker_log = self.workdir / "broker.log"
        self.data_dir = self.workdir / "data"
        self._process = ServiceProcess(
            "Kafka",
            self._java_command("kafka.Kafka", str(self.config)),
            self.workdir / "stdout.log",
            detached,
        )
        self.log_path = self.broker_log

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def _java_command(self, main: str, *args: str) -> list[str]:
        java = require_java()
        log4j = f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}"
        return [java, *JVM_OPTIONS, log4j, "-cp", f"{self.libs / 'libs'}/*", main, *args]

    def _write_config(self) -> None:
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{LOOPBACK}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{self.port},"
            f"CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "3",
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # The log cleaner looks for compactable logs every second (default 15 s), so a
            # compacted topic's superseded records go within a test's patience.
            "log.cleaner.backoff.ms": "1000",
            # After a kill -9 the controller refuses the new incarnation until the old
            # one's session expires (default 9 s); shorter, so kill+start takes less.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "1000",
        }
        self.config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        (self.workdir / "log4j2.properties").write_text(
            LOG4J2_PROPERTIES.format(log=self.broker_log)
        )

    def _format(self) -> None:
        command = self._java_command(
            "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c", str(self.config)
        )
        try:
            done = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=READY_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = str(exc.stdout or "")
            raise StartError("Kafka", "formatting its storage timed out", output) from exc
        if done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
            raise StartError("Kafka", "formatting its storage failed", output)

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start the broker (formatting its storage the first time) and wait until it serves."""
        if self._process.alive():
            return
        ensure_port_free(self.port, "Kafka (PLAINTEXT listener)")
        ensure_port_free(self.controller_port, "Kafka (CONTROLLER listener)")
        if not (self.data_dir / "meta.properties").exists():
            self._write_config()
            self._format()
        self._process.start()
        self._process.wait_ready(lambda: broker_ready(self.bootstrap), timeout, [self.broker_log])

    def alive(self) -> bool:
        return self._process.alive()

    def stop(self) -> None:
        """Controlled shutdown (SIGTERM), SIGKILL after 30 s."""
        self._process.stop()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a controlled shutdown."""
        self._process.kill()

    def pause(self) -> None:
        """SIGSTOP: the broker hangs with its connections open."""
        self._process.pause()

    def resume(self) -> None:
        self._process.resume()

    def restart(self, timeout: float = READY_TIMEOUT) -> None:
        """Stop and start again on the same ports, with the same data."""
        self.stop()
        self.start(timeout)

    def create_topic(
        self, name: str, partitions: int = 3, configs: dict[str, str] | None = None
    ) -> None:
        create_topic(self.bootstrap, name, partitions, configs=configs)

    def close(self) -> None:
        """Stop the broker and remove its directory if the harness made it."""
        self.stop()
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
