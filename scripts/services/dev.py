"""`scripts/dev-services up|status|down`: the services in the background, for a person.

``up`` starts Kafka, the GCS emulator, Toxiproxy, the BigQuery emulator (reading ``gs://``
from that GCS emulator) and the schema registry (Apicurio) detached from the terminal, under
``run/`` in the cache, creates the default topic and a bucket, and records pids, ports and
logs in ``run/state.json``. ``status`` reads that file and checks each process; ``down`` stops
them and removes ``run/``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from . import bigquery, gcs, kafka, provision_all, schema_registry, toxiproxy
from .cache import cache_root, locked, log
from .errors import ServiceError
from .procs import pid_alive, port_open, stop_pid

STATE_FILE = "state.json"


@dataclass(frozen=True)
class Running:
    """One service started by ``up``."""

    name: str
    pid: int
    port: int
    address: str
    log: str
    cmd_fragment: str


def _run_dir() -> Path:
    return cache_root() / "run"


def _load() -> list[Running]:
    path = _run_dir() / STATE_FILE
    if not path.exists():
        return []
    return [Running(**item) for item in json.loads(path.read_text())["services"]]


def _save(services: list[Running]) -> None:
    path = _run_dir() / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"services": [asdict(s) for s in services]}, indent=2) + "\n")
    os.replace(tmp, path)


def _is_up(service: Running) -> bool:
    return pid_alive(service.pid, service.cmd_fragment) and port_open(service.port)


def _exports(services: list[Running]) -> str:
    by_name = {s.name: s.address for s in services}
    return (
        f"export KAFKA_BOOTSTRAP_SERVERS={by_name['kafka']} "
        f"STORAGE_EMULATOR_HOST={by_name['gcs']}\n"
        "# to run the tests against these instead of starting their own:\n"
        f"export WAL_BRIDGE_TEST_KAFKA={by_name['kafka']} WAL_BRIDGE_TEST_GCS={by_name['gcs']} "
        f"WAL_BRIDGE_TEST_TOXIPROXY={by_name['toxiproxy']}"
        # state written by an `up` from before the BigQuery emulator has no such entry
        + (f" WAL_BRIDGE_TEST_BIGQUERY={by_name['bigquery']}" if "bigquery" in by_name else "")
        + (
            f"\nexport SCHEMA_REGISTRY_URL={by_name['schema_registry']} "
            f"WAL_BRIDGE_TEST_SCHEMA_REGISTRY={by_name['schema_registry']}"
            if "schema_registry" in by_name
            else ""
        )
    )


def _show(services: list[Running]) -> bool:
    labels = {
        "kafka": "Kafka 4.1.1 (KRaft)",
        "gcs": "GCS emulator",
        "toxiproxy": "Toxiproxy API",
        "bigquery": "BigQuery emulator",
        "schema_registry": "Schema registry",
    }
    all_up = True
    for service in services:
        up = _is_up(service)
        all_up = all_up and up
        state = "up" if up else "DOWN"
        print(
            f"{labels[service.name]:<20} {service.address:<40} {state:<5} "
            f"pid {service.pid}  log {service.log}"
        )
    return all_up


def up(
    kafka_port: int,
    gcs_port: int,
    toxiproxy_port: int,
    topic: str,
    bucket: str,
    *,
    bigquery_port: int = 0,
    schema_registry_port: int = 0,
) -> int:
    """Start the five services detached; print where they are and the export lines."""
    root = cache_root()
    with locked(root, "run"):
        existing = _load()
        if existing and all(_is_up(s) for s in existing):
            print("already up:")
            _show(existing)
            print(_exports(existing))
            return 0
        _stop(existing)  # a half-dead earlier `up`: start afresh
        run = _run_dir()
        shutil.rmtree(run, ignore_errors=True)
        provision_all(env={})
        run.mkdir(parents=True)
        started: list[Running] = []
        try:
            broker = kafka.KafkaBroker(
                kafka.provision(root),
                run / "kafka",
                port=kafka_port,
                auto_create_topics=True,
                detached=True,
            )
            log(f"starting Kafka on {broker.bootstrap} ...")
            broker.start()
            started.append(_running("kafka", broker, broker.bootstrap, "kafka.Kafka"))
            broker.create_topic(topic, partitions=3)
            emulator = gcs.FakeGcs(gcs.provision(root), run / "gcs", port=gcs_port, detached=True)
            emulator.start()
            started.append(_running("gcs", emulator, emulator.url, "fake-gcs-server"))
            emulator.create_bucket(bucket)
            proxy = toxiproxy.ToxiproxyServer(
                toxiproxy.provision(root), run / "toxiproxy", port=toxiproxy_port, detached=True
            )
            proxy.start()
            started.append(_running("toxiproxy", proxy, proxy.url, "toxiproxy-server"))
            warehouse = bigquery.BigQueryEmulator(
                bigquery.provision(root),
                run / "bigquery",
                storage_emulator_host=emulator.url,
                port=bigquery_port,
                detached=True,
            )
            warehouse.start()
            started.append(_running("bigquery", warehouse, warehouse.url, "bigquery-emulator"))
            registry = schema_registry.ApicurioRegistry(
                schema_registry.provision(root),
                run / "schema-registry",
                port=schema_registry_port,
                detached=True,
            )
            log(f"starting the schema registry on {registry.url} ...")
            registry.start()
            started.append(
                _running(
                    "schema_registry",
                    registry,
                    registry.ccompat_url,
                    schema_registry.RUNNER_JAR,
                )
            )
        except BaseException:
            _stop(started)
            shutil.rmtree(run, ignore_errors=True)
            raise
        _save(started)
    _show(started)
    print(f"topic {topic} (3 partitions), bucket gs://{bucket}")
    print(_exports(started))
    return 0


class _Started(Protocol):
    port: int
    log_path: Path

    @property
    def pid(self) -> int | None: ...


def _running(name: str, service: _Started, address: str, cmd_fragment: str) -> Running:
    if service.pid is None:
        raise ServiceError(f"{name} has no process id after starting")
    return Running(name, service.pid, service.port, address, str(service.log_path), cmd_fragment)


def status(env_only: bool) -> int:
    """Print the running services (or only the export lines); exit 1 unless all are up."""
    services = _load()
    if not services:
        print("not running (start them with: scripts/dev-services up)", file=sys.stderr)
        return 1
    if env_only:
        print(_exports(services))
        return 0 if all(_is_up(s) for s in services) else 1
    all_up = _show(services)
    print(_exports(services))
    return 0 if all_up else 1


def _stop(services: list[Running]) -> None:
    for service in reversed(services):
        stop_pid(service.pid, service.cmd_fragment)


def down() -> int:
    """Stop what ``up`` started and remove its state."""
    with locked(cache_root(), "run"):
        services = _load()
        _stop(services)
        shutil.rmtree(_run_dir(), ignore_errors=True)
    print("stopped" if services else "nothing was running")
    return 0
