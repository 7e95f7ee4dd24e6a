"""Fixtures for tests against real services: Kafka (KRaft), fake-gcs-server, Toxiproxy,
bigquery-emulator, and a schema registry (Apicurio Registry).

Session fixtures start a service the first time a test asks for it, so tests/unit/ never starts
anything (and only the tests that ask for ``schema_registry`` start the registry). A service named
by WAL_BRIDGE_TEST_KAFKA / _GCS / _TOXIPROXY / _BIGQUERY / _SCHEMA_REGISTRY is used as it is
instead.
A provisioning or start-up failure fails the test (never a skip: CI must notice).

- ``kafka``: ``.bootstrap``, ``.cluster_id``, ``.managed``, ``.create_topic(name, partitions=3)``,
  and ``.start()``, ``.stop()``, ``.kill()``, ``.restart()``, ``.pause()``, ``.resume()``, which
  skip the test when the broker is external. A broker that a test left stopped or paused is
  brought back after that test.
- ``gcs``: ``.url`` (for STORAGE_EMULATOR_HOST), ``.create_bucket(name=None) -> name``,
  ``.client(url=None) -> google.cloud.storage.Client`` (``url``: e.g. a proxy in front of it).
- ``toxiproxy``: ``ToxiproxyClient``; toxics are reset and its proxies deleted after each test.
- ``bigquery``: ``.url``, ``.project``, ``.client() -> google.cloud.bigquery.Client``; its load
  jobs read ``gs://`` from the ``gcs`` emulator.
- ``schema_registry``: ``.url`` (the Confluent-compatible API: SCHEMA_REGISTRY_URL, and the
  ``url`` of ``SchemaRegistryClient``), ``.managed``, ``.client()`` (a fresh
  ``confluent_kafka.schema_registry.SchemaRegistryClient``), and ``.stop()``, ``.start()``,
  ``.kill()``, ``.restart()``, ``.pause()``, ``.resume()``, ``.alive()`` (schemas and ids
  survive a stop), which skip the test when the registry is external. A registry a test left
  stopped or paused is brought back after that test.
- ``subject_prefix``: a fresh name to put in front of subjects (registry state is per session).
- ``topic``: a fresh 3-partition topic; ``bucket``: a fresh bucket.

Nothing here sets environment variables: tests hand STORAGE_EMULATOR_HOST to subprocesses.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from scripts import services  # importable through pytest's `pythonpath = ["."]`
from scripts.services import bigquery as bigquery_service
from scripts.services import gcs as gcs_service
from scripts.services import kafka as kafka_service
from scripts.services import schema_registry as schema_registry_service
from scripts.services import toxiproxy as toxiproxy_service

ROOT = Path(__file__).resolve().parent.parent
# Applied below by directory; registered here too in case pyproject.toml lacks them.
MARKERS = {
    "integration": "talks to the real broker and emulator (tests/integration)",
    "chaos": "kills, cuts or slows the real services (tests/chaos)",
}
T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    registered = {line.split(":")[0].strip() for line in config.getini("markers")}
    for name, description in MARKERS.items():
        if name not in registered:
            config.addinivalue_line("markers", f"{name}: {description}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = ROOT / "tests"
    for item in items:
        path = Path(item.path)
        if path.is_relative_to(tests / "integration"):
            item.add_marker(pytest.mark.integration)
        elif path.is_relative_to(tests / "chaos"):
            item.add_marker(pytest.mark.chaos)


class _Server(Protocol):
    def start(self) -> object: ...
    def close(self) -> None: ...


S = TypeVar("S", bound=_Server)


def _launched(server: S) -> S:
    """Start ``server``, closing it again when it does not come up."""
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


def _start(what: str, make: Callable[[], T]) -> T:
    """Provision and start a service, turning a harness error into a clear test failure."""
    try:
        return make()
    except services.ServiceError as exc:
        message = f"{what}: {exc}"
    pytest.fail(message, pytrace=False)  # outside the except: no chained traceback


class KafkaHandle:
    """The session broker as tests see it; lifecycle calls skip when the broker is external."""

    def __init__(self, broker: kafka_service.Kafka) -> None:
        self._broker = broker
        self.bootstrap = broker.bootstrap
        self.managed = broker.managed
        self.cluster_id: str | None = getattr(broker, "cluster_id", None)

    def create_topic(
        self, name: str, partitions: int = 3, configs: dict[str, str] | None = None
    ) -> str:
        self._broker.create_topic(name, partitions, configs)
        return name

    def _lifecycle(self, action: Callable[[], None], name: str) -> None:
        if not self.managed:
            pytest.skip(
                f"kafka.{name}() needs a broker started by the harness, not "
                f"{services.KAFKA_ENV}={self.bootstrap}"
            )
        action()

    def start(self) -> None:
        self._lifecycle(self._broker.start, "start")

    def stop(self) -> None:
        self._lifecycle(self._broker.stop, "stop")

    def kill(self) -> None:
        self._lifecycle(self._broker.kill, "kill")

    def restart(self) -> None:
        self._lifecycle(self._broker.restart, "restart")

    def pause(self) -> None:
        """SIGSTOP the broker: it hangs with its connections open."""
        self._lifecycle(self._broker.pause, "pause")

    def resume(self) -> None:
        self._lifecycle(self._broker.resume, "resume")

    def alive(self) -> bool:
        return self._broker.alive()

    def heal(self) -> None:
        """Resume, or start again, a harness broker that a test left paused or stopped."""
        if not self.managed:
            return
        self._broker.resume()
        if not self._broker.alive():
            self._broker.start()


class GcsHandle:
    """The session emulator as tests see it."""

    def __init__(self, emulator: gcs_service.Gcs) -> None:
        self._emulator = emulator
        self.url = emulator.url
        self.managed = emulator.managed

    def create_bucket(self, name: str | None = None) -> str:
        bucket = name or f"test-{uuid.uuid4().hex[:16]}"
        self._emulator.create_bucket(bucket)
        return bucket

    def client(self, url: str | None = None) -> storage.Client:
        """A storage client for the emulator (or ``url``, e.g. a proxy in front of it)."""
        return storage.Client(
            project="test",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": url or self.url},
        )


class BigQueryHandle:
    """The session's BigQuery emulator as tests see it."""

    def __init__(
        self, emulator: bigquery_service.BigQueryEmulator | bigquery_service.ExternalBigQuery
    ) -> None:
        self.url = emulator.url
        self.project = emulator.project
        self.managed = emulator.managed

    def client(self) -> Any:
        """A ``google.cloud.bigquery.Client`` for the emulator, anonymous (imported here, so
        tests that never query BigQuery do not pay for the import)."""
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.url},
        )


class SchemaRegistryHandle:
    """The session's schema registry as tests see it; lifecycle calls skip when it is external."""

    def __init__(self, registry: schema_registry_service.Registry) -> None:
        self._registry = registry
        self.url = registry.ccompat_url
        self.managed = registry.managed

    def client(self) -> Any:
        """A new ``SchemaRegistryClient`` for the registry (imported here, so tests that never
        use a registry do not pay for the import)."""
        from confluent_kafka.schema_registry import SchemaRegistryClient

        return SchemaRegistryClient({"url": self.url})

    def _lifecycle(self, action: Callable[[], None], name: str) -> None:
        if not self.managed:
            pytest.skip(
                f"schema_registry.{name}() needs a registry started by the harness, not "
                f"{services.SCHEMA_REGISTRY_ENV}={self.url}"
            )
        action()

    def stop(self) -> None:
        """SIGTERM the registry and wait for it to exit: requests to it are refused."""
        self._lifecycle(self._registry.stop, "stop")

    def kill(self) -> None:
        """SIGKILL the registry (its schemas stay in its H2 file)."""
        self._lifecycle(self._registry.kill, "kill")

    def start(self) -> None:
        """Start a stopped registry on the same port and wait until it answers."""
        self._lifecycle(self._registry.start, "start")

    def restart(self) -> None:
        self._lifecycle(self._registry.restart, "restart")

    def pause(self) -> None:
        """SIGSTOP the registry: it hangs with its port open, so requests time out."""
        self._lifecycle(self._registry.pause, "pause")

    def resume(self) -> None:
        self._lifecycle(self._registry.resume, "resume")

    def alive(self) -> bool:
        return self._registry.alive()

    def heal(self) -> None:
        """Resume, or start again, a harness registry that a test left paused or stopped."""
        if not self.managed:
            return
        self._registry.resume()
        if not self._registry.alive():
            self._registry.start()


# Session fixtures that were set up, so per-test healing only touches what exists.
_ACTIVE: dict[str, Any] = {}


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaHandle]:
    """The session's Kafka broker (harness-run KRaft 4.1.1, or WAL_BRIDGE_TEST_KAFKA)."""
    address = services.external("kafka")
    if address:
        handle = KafkaHandle(kafka_service.ExternalKafka(address))
        _ACTIVE["kafka"] = handle
        yield handle
        return

    def make() -> kafka_service.KafkaBroker:
        return _launched(kafka_service.KafkaBroker(kafka_service.provision(services.cache_root())))

    broker = _start("Kafka", make)
    handle = KafkaHandle(broker)
    _ACTIVE["kafka"] = handle
    try:
        yield handle
    finally:
        _ACTIVE.pop("kafka", None)
        broker.close()


@pytest.fixture(scope="session")
def gcs() -> Iterator[GcsHandle]:
    """The session's GCS emulator (harness-run fake-gcs-server, or WAL_BRIDGE_TEST_GCS)."""
    address = services.external("gcs")
    if address:
        yield GcsHandle(gcs_service.ExternalGcs(address))
        return

    def make() -> gcs_service.FakeGcs:
        return _launched(gcs_service.FakeGcs(gcs_service.provision(services.cache_root())))

    emulator = _start("GCS emulator", make)
    try:
        yield GcsHandle(emulator)
    finally:
        emulator.close()


@pytest.fixture(scope="session")
def toxiproxy() -> Iterator[toxiproxy_service.ToxiproxyClient]:
    """A client for the session's Toxiproxy (harness-run, or WAL_BRIDGE_TEST_TOXIPROXY)."""
    address = services.external("toxiproxy")
    if address:
        client = toxiproxy_service.ToxiproxyClient(address)
        _ACTIVE["toxiproxy"] = client
        yield client
        return

    def make() -> toxiproxy_service.ToxiproxyServer:
        return _launched(toxiproxy_service.ToxiproxyServer(
            toxiproxy_service.provision(services.cache_root())
        ))

    server = _start("Toxiproxy", make)
    client = toxiproxy_service.ToxiproxyClient(server.url)
    _ACTIVE["toxiproxy"] = client
    try:
        yield client
    finally:
        _ACTIVE.pop("toxiproxy", None)
        server.close()


@pytest.fixture(scope="session")
def bigquery(gcs: GcsHandle) -> Iterator[BigQueryHandle]:
    """The session's BigQuery emulator (harness-run, or WAL_BRIDGE_TEST_BIGQUERY), reading
    ``gs://`` from the session's GCS emulator."""
    address = services.external("bigquery")
    if address:
        yield BigQueryHandle(bigquery_service.ExternalBigQuery(address))
        return

    def make() -> bigquery_service.BigQueryEmulator:
        return _launched(bigquery_service.BigQueryEmulator(
            bigquery_service.provision(services.cache_root()), storage_emulator_host=gcs.url
        ))

    emulator = _start("BigQuery emulator", make)
    try:
        yield BigQueryHandle(emulator)
    finally:
        emulator.close()


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[SchemaRegistryHandle]:
    """The session's schema registry (harness-run Apicurio Registry 3.0.9, or
    WAL_BRIDGE_TEST_SCHEMA_REGISTRY); ``.url`` is its Confluent-compatible API."""
    address = services.external("schema_registry")
    if address:
        handle = SchemaRegistryHandle(schema_registry_service.ExternalRegistry(address))
        yield handle
        return

    def make() -> schema_registry_service.ApicurioRegistry:
        return _launched(schema_registry_service.ApicurioRegistry(
            schema_registry_service.provision(services.cache_root())
        ))

    registry = _start("Schema registry", make)
    handle = SchemaRegistryHandle(registry)
    _ACTIVE["schema_registry"] = handle
    try:
        yield handle
    finally:
        _ACTIVE.pop("schema_registry", None)
        registry.close()


@pytest.fixture
def subject_prefix(request: pytest.FixtureRequest) -> str:
    """A fresh prefix for subject names, so tests sharing the session's registry never meet."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:40]
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _restore_services() -> Iterator[None]:
    """After each test: restart a broker or registry it stopped, and clear the proxies and
    toxics it made."""
    yield
    handle = _ACTIVE.get("kafka")
    if isinstance(handle, KafkaHandle):
        _start("Kafka (restart after the test)", handle.heal)
    registry = _ACTIVE.get("schema_registry")
    if isinstance(registry, SchemaRegistryHandle):
        _start("Schema registry (restart after the test)", registry.heal)
    client = _ACTIVE.get("toxiproxy")
    if isinstance(client, toxiproxy_service.ToxiproxyClient):
        client.cleanup()


@pytest.fixture
def topic(kafka: KafkaHandle, request: pytest.FixtureRequest) -> str:
    """A fresh 3-partition topic, named after the test."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60]
    return kafka.create_topic(f"{stem}-{uuid.uuid4().hex[:8]}", partitions=3)


@pytest.fixture
def bucket(gcs: GcsHandle) -> str:
    """A fresh, empty bucket in the emulator."""
    return gcs.create_bucket()
