"""Real services for wal-bridge's tests and for a developer: Kafka, a GCS emulator, Toxiproxy,
a BigQuery emulator; and LazyFS, the filesystem of the power-loss tests (``lazyfs.py``).

Used by ``tests/conftest.py`` (session fixtures) and by ``python -m scripts.services``
(``scripts/dev-services``, ``scripts/test``). Standard library only, so it runs on the system
Python. Provisioning fills one cache (see ``cache.py``) once; later runs start in seconds.

Each service can instead be named by an environment variable, for instance to run the tests
against the compose stack; nothing is provisioned or started for it then:

- ``WAL_BRIDGE_TEST_KAFKA``: bootstrap servers (``127.0.0.1:9092``)
- ``WAL_BRIDGE_TEST_GCS``: emulator URL (``http://127.0.0.1:4443``)
- ``WAL_BRIDGE_TEST_TOXIPROXY``: Toxiproxy API URL (``http://127.0.0.1:8474``)
- ``WAL_BRIDGE_TEST_BIGQUERY``: BigQuery emulator URL (``http://127.0.0.1:9050``), started with
  ``--project test`` and ``STORAGE_EMULATOR_HOST`` set to the GCS emulator above
- ``WAL_BRIDGE_TEST_SCHEMA_REGISTRY``: a Confluent-compatible schema registry URL
  (``http://127.0.0.1:8081``, Redpanda's; for Apicurio, ``http://HOST:PORT/apis/ccompat/v7``)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from . import bigquery, gcs, kafka, lazyfs, schema_registry, toxiproxy
from .cache import cache_root, log
from .errors import (
    NotManagedError,
    PortTakenError,
    ProvisionError,
    ServiceError,
    SetupError,
    StartError,
    ToolMissingError,
)

KAFKA_ENV = "WAL_BRIDGE_TEST_KAFKA"
GCS_ENV = "WAL_BRIDGE_TEST_GCS"
TOXIPROXY_ENV = "WAL_BRIDGE_TEST_TOXIPROXY"
BIGQUERY_ENV = "WAL_BRIDGE_TEST_BIGQUERY"
SCHEMA_REGISTRY_ENV = "WAL_BRIDGE_TEST_SCHEMA_REGISTRY"
SERVICES = ("kafka", "gcs", "toxiproxy", "bigquery", "schema_registry")

__all__ = [
    "BIGQUERY_ENV",
    "GCS_ENV",
    "KAFKA_ENV",
    "SCHEMA_REGISTRY_ENV",
    "SERVICES",
    "TOXIPROXY_ENV",
    "NotManagedError",
    "PortTakenError",
    "ProvisionError",
    "ServiceError",
    "SetupError",
    "StartError",
    "ToolMissingError",
    "bigquery",
    "cache_root",
    "external",
    "gcs",
    "kafka",
    "lazyfs",
    "provision_all",
    "schema_registry",
    "toxiproxy",
]


def external(service: str, env: Mapping[str, str] | None = None) -> str | None:
    """The address the environment gives for ``service``, or None if the harness runs it."""
    variable = {
        "kafka": KAFKA_ENV,
        "gcs": GCS_ENV,
        "toxiproxy": TOXIPROXY_ENV,
        "bigquery": BIGQUERY_ENV,
        "schema_registry": SCHEMA_REGISTRY_ENV,
    }[service]
    value = (os.environ if env is None else env).get(variable, "").strip()
    return value or None


def provision_all(
    services: tuple[str, ...] = SERVICES, env: Mapping[str, str] | None = None
) -> float:
    """Fill the cache for every service in ``services`` that the environment does not name.

    Maven (the Kafka jars, then the schema registry) and the Go builds run side by side (one is
    network-bound, the other CPU-bound); the Go builds run one after the other, then LazyFS's
    (where it can run: root and /dev/fuse; elsewhere a line says why not and the power-loss
    tests skip), the BigQuery emulator's (minutes, GiBs) last.
    Returns the seconds it took. Raises one SetupError that names every missing tool or failed
    step when all failures are of that kind (say, no `mvn` and no `go`).
    """
    started = time.monotonic()
    root = cache_root()
    wanted = [s for s in services if external(s, env) is None]

    def go_builds() -> None:
        if "gcs" in wanted:
            gcs.provision(root)
        if "toxiproxy" in wanted:
            toxiproxy.provision(root)
        if (reason := lazyfs.unavailable()) is None:
            lazyfs.provision()
        else:
            log(f"LazyFS not built ({reason}); the power-loss tests will skip (fail if CI=true)")
        if "bigquery" in wanted:
            bigquery.provision(root)

    def maven_artifacts() -> None:
        if "kafka" in wanted:
            kafka.require_java()
            kafka.provision(root)
        if "schema_registry" in wanted:
            schema_registry.require_java()
            schema_registry.provision(root)

    jobs: list[Callable[[], object]] = [go_builds]
    if "kafka" in wanted or "schema_registry" in wanted:
        jobs.append(maven_artifacts)
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [pool.submit(job) for job in jobs]
    failures = [error for f in futures if (error := f.exception()) is not None]
    setup_failures = [e for e in failures if isinstance(e, SetupError)]
    if setup_failures and len(setup_failures) == len(failures):
        raise SetupError.combine(setup_failures)
    if failures:
        raise failures[0]
    elapsed = time.monotonic() - started
    named = [s for s in services if s not in wanted]
    suffix = f"; named by the environment: {', '.join(named)}" if named else ""
    log(f"services provisioned in {elapsed:.1f} s (cache {root}){suffix}")
    return elapsed
