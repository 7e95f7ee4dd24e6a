"""compose.yaml run, not only loaded: each profile's wal-bridge containers, natively.

For each profile set, compose-go (tests/compose_project.py) loads compose.yaml with .env.example
as its .env, as the docs say to start. Every service built from docker/Dockerfile then runs as a
child process: the image's ENTRYPOINT and the service's ``command`` (tests/native.py builds the
line the way a container runtime does), the image's ENV overlaid by the service's
``environment`` exactly as compose resolved it, with these substitutions only:

- redpanda, redpanda-init (and redpanda-init-avro) and fake-gcs are not run: the session's
  Kafka and fake-gcs-server stand in for them, and for Redpanda's schema registry the session's
  (Apicurio, through its Confluent-compatible API; started only for the avro profile). The test
  creates the topics that the redpanda-init services' commands name, with their partition
  counts, and the bucket that fake-gcs's command creates (or, for gcp, the bucket of
  GCP_DESTINATION, which Terraform would have created);
- addresses of those services (``redpanda:9092``, ``http://redpanda:8081``,
  ``http://fake-gcs:4443`` and their host-side twins) become the test broker's, registry's and
  emulator's;
- named volumes, the image's anonymous VOLUME and the working directory become temporary
  directories, the secret file its host file, METRICS_PORT a free port;
- the ``gcp`` profile's ``bridge-gcp`` needs real Google credentials: it runs against the
  emulator instead, by setting its blank STORAGE_EMULATOR_HOST to the emulator's URL;
- the .env names a fresh topic, bucket and consumer group per test (KAFKA_TOPIC,
  LOCAL_BUCKET, KAFKA_GROUP_ID, GCP_DESTINATION, GCP_KAFKA_GROUP_ID, AVRO_TOPIC,
  AVRO_KAFKA_GROUP_ID), as a user may edit it.
  No timing setting is changed: BATCH_TIMEOUT is the 10 s of .env.example, the producer's
  rate the 200/s of compose.yaml.

Then: nothing exits early; Parquet files land; SIGTERM makes every process exit 0; and every
record in the topics is in the bucket exactly once, by (_kafka_topic, _kafka_partition,
_kafka_offset), over all bridges of the profile (scale: three in one consumer group). For the
avro profile the Avro records land as data rows with the events' columns, not dead letters.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from tests.compose_project import build_checker, load_project, make_project_dir
from tests.conftest import GcsHandle, KafkaHandle, SchemaRegistryHandle
from tests.native import (
    Image,
    NativeProcess,
    TopicWatch,
    compose_argv,
    describe,
    free_port,
    landed_identities,
    landed_objects,
    native_executable,
    native_path,
    topic_identities,
    wait_while_running,
)

PROFILES = ("none", "local", "gcp", "local,scale", "local,avro")
# Services of other images, and who stands in for them.
STAND_INS = {"redpanda": "kafka", "redpanda-init": "kafka", "redpanda-init-avro": "kafka",
             "fake-gcs": "gcs"}
PROJECT_DOCKERFILE = "docker/Dockerfile"
# Records the producer sends before it is stopped: 10 s at compose's 200/s.
RECORDS = 2000
SECRETS_DIR = "/run/secrets"
APPENDED = "wal_bridge_records_appended_total"


@pytest.fixture(scope="module")
def checker() -> Path:
    """scripts/compose-check (compose-go), built once."""
    return build_checker()


@pytest.fixture(scope="module")
def image() -> Image:
    """docker/Dockerfile's runtime stage."""
    return Image.from_dockerfile(base_env={"PATH": os.environ.get("PATH", "")})


@dataclass
class Stack:
    """One profile's project, the stand-ins' addresses, and the native processes."""

    project: dict[str, Any]
    kafka: KafkaHandle
    gcs: GcsHandle
    root: Path
    registry: SchemaRegistryHandle | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    deviations: dict[str, list[str]] = field(default_factory=dict)
    processes: dict[str, NativeProcess] = field(default_factory=dict)

    @property
    def services(self) -> dict[str, Any]:
        services: dict[str, Any] = self.project["services"]
        return services

    def ours(self) -> list[str]:
        """Services built from the project's Dockerfile."""
        return sorted(name for name, s in self.services.items()
                      if (s.get("build") or {}).get("dockerfile") == PROJECT_DOCKERFILE)

    def map_addresses(self) -> None:
        """The in-network and host-side addresses of redpanda and fake-gcs -> the stand-ins'."""
        redpanda = self.services["redpanda"]
        (advertised,) = [a.split("=", 1)[1] for a in redpanda["command"]
                         if a.startswith("--advertise-kafka-addr=")]
        for listener in advertised.split(","):
            self.addresses[listener.split("://", 1)[1]] = self.kafka.bootstrap
        if self.registry is not None:  # Redpanda's schema registry, in-network and host-side
            (listeners,) = [a.split("=", 1)[1] for a in redpanda["command"]
                            if a.startswith("--schema-registry-addr=")]
            for listener in listeners.split(","):
                port = listener.rpartition(":")[2]
                host = "redpanda" if listener.startswith("internal://") else "127.0.0.1"
                self.addresses[f"http://{host}:{port}"] = self.registry.url
        fake_gcs = self.services.get("fake-gcs")
        if fake_gcs is None:
            return
        words = shlex.split(" ".join(fake_gcs["command"]))
        flags = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("-")}
        emulator = urlparse(self.gcs.url)
        assert emulator.scheme == flags["-scheme"], (self.gcs.url, flags)
        # Longest first: the full URLs before the bare host:port they contain.
        self.addresses[flags["-external-url"]] = self.gcs.url
        self.addresses[f"{flags['-scheme']}://fake-gcs:{flags['-port']}"] = self.gcs.url
        self.addresses[flags["-public-host"]] = emulator.netloc
        self.addresses[f"fake-gcs:{flags['-port']}"] = emulator.netloc

    def rewrite(self, value: str) -> str:
        for old in sorted(self.addresses, key=len, reverse=True):
            value = value.replace(old, self.addresses[old])
        return value

    def topics(self) -> dict[str, int]:
        """The topics, and their partition counts, that the redpanda-init services create."""
        found = {}
        for name in sorted(n for n in self.services if n.startswith("redpanda-init")):
            words = shlex.split(" ".join(self.services[name]["command"]))
            create = next(i for i, w in enumerate(words[:-2])
                          if words[i:i + 2] == ["topic", "create"])
            found[words[create + 2]] = int(words[words.index("--partitions", create) + 1])
        return found

    def create_topics_and_buckets(self) -> tuple[dict[str, int], set[str]]:
        """Create what redpanda-init and fake-gcs (or Terraform) would; return them."""
        topics = self.topics()
        for topic, partitions in topics.items():
            self.kafka.create_topic(topic, partitions)
        buckets = self.buckets()
        for bucket in buckets:
            self.gcs.create_bucket(bucket)
        return topics, buckets

    def buckets(self) -> set[str]:
        """Buckets fake-gcs creates at start, and those the bridges' DESTINATION names."""
        found = set()
        fake_gcs = self.services.get("fake-gcs")
        if fake_gcs is not None:
            words = shlex.split(" ".join(fake_gcs["command"]))
            data = words[words.index("-data") + 1]
            found |= {w[len(data) + 1:] for w in words if w.startswith(f"{data}/")}
        for name in self.ours():
            destination = self.services[name]["environment"].get("DESTINATION") or ""
            if destination.startswith("gs://"):
                found.add(urlparse(destination).netloc)
        return found

    def native(self, name: str, image: Image) -> NativeProcess:
        """Service ``name`` as a native process (not started)."""
        service = self.services[name]
        notes = self.deviations.setdefault(name, [])
        mounts: dict[str, Path] = {}
        for mount in service.get("volumes") or []:
            assert mount["type"] == "volume", mount  # bind mounts would need no mapping
            mounts[mount["target"]] = self.root / "volumes" / mount["source"]
        for index, target in enumerate(image.volumes):  # anonymous volumes of the image
            mounts.setdefault(target, self.root / "volumes" / f"{name}-anonymous-{index}")
        for secret in service.get("secrets") or []:
            target = secret.get("target") or secret["source"]
            path = target if target.startswith("/") else f"{SECRETS_DIR}/{target}"
            mounts[path] = Path(self.project["secrets"][secret["source"]]["file"])

        def local(value: str) -> str:
            for target, path in mounts.items():
                if value == target or value.startswith(f"{target}/"):
                    return str(path) + value[len(target):]
            return value

        env = {k: v for k, v in image.env.items() if k != "PATH"}
        env.update({k: v for k, v in (service.get("environment") or {}).items()
                    if v is not None})
        env = {k: local(self.rewrite(v)) for k, v in env.items()}
        metrics_port = None
        if "METRICS_PORT" in env:
            metrics_port = free_port()
            env["METRICS_PORT"] = str(metrics_port)
        if env.get("STORAGE_EMULATOR_HOST") == "" and env.get("DESTINATION", "").startswith("gs:"):
            env["STORAGE_EMULATOR_HOST"] = self.gcs.url
            notes.append("STORAGE_EMULATOR_HOST set to the emulator instead of real GCS")
        # The image's user has HOME=/nonexistent; PATH finds this environment's console script.
        env |= {"PATH": native_path(), "HOME": str(self.root / "nonexistent")}
        argv = [self.rewrite(a) for a in compose_argv(image, service)]
        for value in [*argv, *env.values()]:
            for replaced in STAND_INS.keys() & self.services.keys():
                assert f"{replaced}:" not in value, f"{name}: {value!r} names {replaced}"
                assert f"//{replaced}" not in value, f"{name}: {value!r} names {replaced}"
        return NativeProcess(name, native_executable(argv), env, Path(local(image.workdir)),
                             self.root / f"{name}.log", metrics_port)




def _grace(service: dict[str, Any]) -> float:
    """Seconds compose waits after the stop signal before SIGKILL: stop_grace_period (a Go
    duration in compose-go's model, such as "45s" or "1m30s"), 10 by default."""
    text = service.get("stop_grace_period") or "10s"
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert "".join(n + u for n, u in parts) == text, text
    return sum(float(n) * units[u] for n, u in parts)


def _stop_producers(stack: Stack, producers: list[NativeProcess],
                    watches: dict[str, TopicWatch], processes: list[NativeProcess]) -> int:
    """SIGTERM each producer; each exits 0 within compose's grace, having delivered all it sent
    (what its topic holds). Returns the records delivered over all of them."""
    delivered = 0
    for producer in producers:
        assert producer.terminate(_grace(stack.services[producer.name])) == 0, describe(processes)
        done, sent = _produced(producer.log())
        assert done == sent == watches[producer.env["KAFKA_TOPIC"]].size()
        delivered += done
    return delivered


def _data_rows(client: Any, buckets: set[str], topic: str) -> int:
    """Rows of ``topic`` in data files (not dead letters) that carry the events' event_id."""
    import io

    import pyarrow.parquet as pq

    rows = 0
    for bucket in buckets:
        for name in landed_objects(client, bucket):
            if "dead-letter" in name:
                continue
            data = client.bucket(bucket).blob(name).download_as_bytes()
            table = pq.read_table(io.BytesIO(data))
            if "event_id" not in table.column_names:
                continue
            topics = table.column("_kafka_topic").to_pylist()
            ids = table.column("event_id").to_pylist()
            rows += sum(1 for t, i in zip(topics, ids, strict=True) if t == topic and i)
    return rows


def _produced(log: str) -> tuple[int, int]:
    """(delivered, sent) from the producer's summary line."""
    match = re.search(r"produced (\d+) of (\d+) records", log)
    assert match, f"no summary line in the producer's output:\n{log[-2000:]}"
    return int(match.group(1)), int(match.group(2))


@pytest.mark.parametrize("profiles", PROFILES)
def test_profile_runs_and_lands_every_record_once(
    profiles: str, checker: Path, image: Image, kafka: KafkaHandle, gcs: GcsHandle,
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """Each profile's producers and bridges run until SIGTERM, exit 0, and land the topics
    once."""
    suffix = uuid.uuid4().hex[:10]
    names = {
        "KAFKA_TOPIC": f"compose-{suffix}",
        "LOCAL_BUCKET": f"compose-local-{suffix}",
        "KAFKA_GROUP_ID": f"compose-{suffix}",
        "GCP_DESTINATION": f"gs://compose-gcp-{suffix}/raw",
        "GCP_KAFKA_GROUP_ID": f"compose-gcp-{suffix}",
        "AVRO_TOPIC": f"compose-avro-{suffix}",
        "AVRO_KAFKA_GROUP_ID": f"compose-avro-{suffix}",
    }
    project = load_project(checker, make_project_dir(tmp_path / "project", names), profiles)
    avro = "avro" in profiles.split(",")
    # The registry is started only for the profile that uses it.
    registry = request.getfixturevalue("schema_registry") if avro else None
    stack = Stack(project, kafka, gcs, tmp_path, registry)
    ours = stack.ours()
    assert set(stack.services) - set(ours) <= STAND_INS.keys(), "a service nobody runs"
    assert "producer" in ours
    assert ("producer-avro" in ours) == avro

    stack.map_addresses()
    topics, buckets = stack.create_topics_and_buckets()
    assert set(topics) == {names["KAFKA_TOPIC"]} | ({names["AVRO_TOPIC"]} if avro else set())
    client = gcs.client()
    processes = [stack.native(name, image) for name in ours]
    producers = [p for p in processes if p.name.startswith("producer")]
    bridges = [p for p in processes if p not in producers]
    # Only the cloud bridge is pointed somewhere compose does not point it.
    assert {n for n, notes in stack.deviations.items() if notes} == {"bridge-gcp"} & set(ours)
    for topic in topics:  # one consumer group per topic: bridges of a topic never split
        groups = {p.env["KAFKA_GROUP_ID"] for p in bridges if p.env["KAFKA_TOPIC"] == topic}
        assert len(groups) <= 1, f"the bridges of {topic} split over groups {groups}"

    watches = {topic: TopicWatch(kafka.bootstrap, topic) for topic in topics}
    try:
        for process in processes:
            process.start()
        seen_ready: set[str] = set()

        def running() -> bool:
            seen_ready.update(p.name for p in bridges if p.name not in seen_ready and p.ready())
            landed = not bridges or any(landed_objects(client, b) for b in buckets)
            return (all(w.size() >= RECORDS for w in watches.values()) and landed
                    and len(seen_ready) == len(bridges))

        wait_while_running(f"{RECORDS} records per topic, ready bridges and a first Parquet "
                           "file", running, processes, timeout=150)

        # Each process must exit 0 within the grace compose gives it before SIGKILL.
        delivered = _stop_producers(stack, producers, watches, processes)
        if not bridges:
            return

        # Every record is in some bridge's WAL (the bridges' own count, from their /metrics):
        # SIGTERM must now ship all of it.
        wait_while_running("the bridges to append every record to their WALs",
                           lambda: sum(b.metric(APPENDED) for b in bridges) >= delivered,
                           bridges, timeout=90)
        for bridge in bridges:
            assert bridge.proc is not None
            bridge.proc.send_signal(signal.SIGTERM)
        for bridge in bridges:
            assert bridge.proc is not None
            assert bridge.proc.wait(_grace(stack.services[bridge.name])) == 0, describe(processes)

        produced: Counter[tuple[str, int, int]] = Counter()
        for topic in topics:
            produced += topic_identities(kafka.bootstrap, topic)
        landed: Counter[tuple[str, int, int]] = Counter()
        for bucket in buckets:
            landed += landed_identities(client, bucket)
        assert sum(produced.values()) == delivered
        missing = produced - landed
        extra = landed - produced
        summary = (f"{sum(missing.values())} records missing, {sum(extra.values())} extra or "
                   f"duplicated rows, of {delivered}\n{describe(processes)}")
        assert not missing, summary
        assert not extra, summary
        objects = [o for b in buckets for o in landed_objects(client, b)]
        for bridge in bridges:  # each instance shipped its share, under its own name
            assert any(f"-{bridge.env['INSTANCE_ID']}-" in o for o in objects), (bridge.name,
                                                                               objects)
        if avro:  # decoded through the registry: data rows with the events' fields
            rows = _data_rows(client, buckets, names["AVRO_TOPIC"])
            assert rows == watches[names["AVRO_TOPIC"]].size(), describe(processes)
    finally:
        for process in processes:
            process.kill()
        for watch in watches.values():
            watch.close()
