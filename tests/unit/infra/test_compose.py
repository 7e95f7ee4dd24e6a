"""compose.yaml, loaded for each profile by compose-go (scripts/compose-check).

compose-go is the loader inside the docker compose CLI: what it accepts and how it interpolates
and merges is what `docker compose up` will see, without needing a Docker engine. The checker
and loader live in tests/compose_project.py (shared with the integration test that runs each
profile's services); here they run on a copy of compose.yaml with .env.example as its .env.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.compose_project import (
    COMPOSE,
    ENV_EXAMPLE,
    ROOT,
    build_checker,
    load_project,
    make_project_dir,
    run_checker,
)

WAL_DIR = "/var/lib/wal-bridge"
ALWAYS = {"redpanda", "redpanda-init", "producer"}
BRIDGES_LOCAL = {"bridge", "bridge-2", "bridge-3"}
AVRO = {"redpanda-init-avro", "producer-avro", "bridge-avro"}

Loader = Callable[[str], dict[str, Any]]


@pytest.fixture(scope="module")
def checker() -> Path:
    """scripts/compose-check, built once per source version."""
    return build_checker()


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of compose.yaml with .env.example as .env and a placeholder credentials file."""
    return make_project_dir(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def load(checker: Path, project_dir: Path) -> Loader:
    """Load the compose project for one profile set and return compose-go's JSON model."""
    cache: dict[str, dict[str, Any]] = {}

    def _load(profiles: str) -> dict[str, Any]:
        if profiles not in cache:
            cache[profiles] = load_project(checker, project_dir, profiles)
        return cache[profiles]

    return _load


@pytest.mark.parametrize(
    ("profiles", "expected"),
    [
        ("none", ALWAYS),
        ("local", ALWAYS | {"fake-gcs", "bridge"}),
        ("gcp", ALWAYS | {"bridge-gcp"}),
        ("local,scale", ALWAYS | {"fake-gcs"} | BRIDGES_LOCAL),
        ("avro", ALWAYS | {"fake-gcs"} | AVRO),
        ("local,avro", ALWAYS | {"fake-gcs", "bridge"} | AVRO),
    ],
)
def test_each_profile_yields_its_services(load: Loader, profiles: str, expected: set[str]) -> None:
    """Each profile set enables exactly the services the docs describe."""
    assert set(load(profiles)["services"]) == expected


def test_gcp_profile_has_no_emulator(load: Loader) -> None:
    """The gcp profile talks to real GCS: no fake-gcs and no emulator host anywhere."""
    services = load("gcp")["services"]
    assert "fake-gcs" not in services
    for service in services.values():
        # Blank, not merely unset: .env may carry the host's emulator URL for other tools.
        assert not (service.get("environment") or {}).get("STORAGE_EMULATOR_HOST")
    assert services["bridge-gcp"]["environment"]["STORAGE_EMULATOR_HOST"] == ""


def test_local_profile_loads_without_env_file(checker: Path, tmp_path: Path) -> None:
    """Without a .env the defaults written in compose.yaml are enough for the local profile."""
    shutil.copy(COMPOSE, tmp_path / "compose.yaml")
    result = run_checker(checker, tmp_path, "local")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "local:",
        "bridge",
        "fake-gcs",
        "producer",
        "redpanda",
        "redpanda-init",
    ]


def test_checker_reports_loader_errors(checker: Path, tmp_path: Path) -> None:
    """A compose file the loader rejects makes compose-check exit non-zero with the reason."""
    (tmp_path / "compose.yaml").write_text(
        "services:\n  a:\n    image: busybox\n    depends_on: [missing]\n", encoding="utf-8"
    )
    result = run_checker(checker, tmp_path, "none")
    assert result.returncode != 0
    assert "missing" in result.stderr


@pytest.mark.parametrize(("profiles", "bridge"), [("local", "bridge"), ("gcp", "bridge-gcp")])
def test_bridge_keeps_its_wal_on_a_named_volume(load: Loader, profiles: str, bridge: str) -> None:
    """The bridge's WAL_DIR is a named volume declared at the top level."""
    project = load(profiles)
    service = project["services"][bridge]
    wal_dir = service["environment"]["WAL_DIR"]
    assert wal_dir == WAL_DIR
    mounts = [m for m in service["volumes"] if m["target"] == wal_dir]
    assert len(mounts) == 1
    assert mounts[0]["type"] == "volume"
    assert mounts[0]["source"] in project["volumes"]
    assert not mounts[0].get("read_only", False)


def test_scaled_bridges_have_separate_wal_volumes_and_ids(load: Loader) -> None:
    """Each instance of the scale profile has its own WAL volume and INSTANCE_ID."""
    services = load("local,scale")["services"]
    volumes = set()
    instance_ids = set()
    for name in BRIDGES_LOCAL:
        service = services[name]
        (mount,) = [m for m in service["volumes"] if m["target"] == WAL_DIR]
        volumes.add(mount["source"])
        instance_ids.add(service["environment"]["INSTANCE_ID"])
        assert service["environment"]["DESTINATION"] == "gs://wal-bridge-local/raw"
        # A fixed container name makes `docker compose up --scale` refuse to share the volume.
        assert service["container_name"]
    assert len(volumes) == len(BRIDGES_LOCAL)
    assert len(instance_ids) == len(BRIDGES_LOCAL)


def test_gcp_credentials_are_a_read_only_secret_file(load: Loader) -> None:
    """bridge-gcp reads GOOGLE_APPLICATION_CREDENTIALS from a compose secret, not a variable."""
    project = load("gcp")
    service = project["services"]["bridge-gcp"]
    assert service["environment"]["GOOGLE_APPLICATION_CREDENTIALS"] == "/run/secrets/gcp-key.json"
    (secret,) = service["secrets"]
    assert secret["source"] == "gcp-key"
    assert secret["target"] == "gcp-key.json"
    assert project["secrets"]["gcp-key"]["file"].endswith("secrets/gcp-key.json")
    for mount in service["volumes"]:
        assert mount["type"] == "volume", "credentials must not come in as a bind mount"
    for value in service["environment"].values():
        assert "PRIVATE KEY" not in (value or "")


def test_local_bridge_writes_to_the_emulator(load: Loader) -> None:
    """The local bridge ships to the emulator's bucket once Redpanda's topic and fake-gcs exist."""
    service = load("local")["services"]["bridge"]
    environment = service["environment"]
    assert environment["DESTINATION"] == "gs://wal-bridge-local/raw"
    assert environment["STORAGE_EMULATOR_HOST"] == "http://fake-gcs:4443"
    assert environment["KAFKA_BOOTSTRAP_SERVERS"] == "redpanda:9092"
    assert environment["GOOGLE_APPLICATION_CREDENTIALS"] == ""
    assert service["depends_on"]["fake-gcs"]["condition"] == "service_healthy"
    assert service["depends_on"]["redpanda-init"]["condition"] == "service_completed_successfully"
    (env_file,) = service["env_file"]
    assert Path(env_file["path"]).name == ".env"
    assert env_file["required"] is False


def test_bridges_are_health_checked_and_hardened(load: Loader) -> None:
    """Every bridge has a readiness check, a read-only root filesystem and no capabilities."""
    services = load("local,scale")["services"] | load("gcp")["services"]
    for name in BRIDGES_LOCAL | {"bridge-gcp"}:
        service = services[name]
        test = " ".join(service["healthcheck"]["test"])
        assert "urllib" in test
        assert "127.0.0.1:9464/readyz" in test
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert service["build"]["dockerfile"] == "docker/Dockerfile"


def test_bridges_get_longer_to_stop_than_their_shutdown_grace(load: Loader) -> None:
    """stop_grace_period exceeds SHUTDOWN_GRACE, so compose does not kill a bridge mid-shutdown."""
    env_example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    shutdown_grace = int(env_example["SHUTDOWN_GRACE"])
    services = load("local")["services"] | load("gcp")["services"]
    for name in ("bridge", "bridge-gcp"):
        match = re.fullmatch(r"(\d+)s", services[name]["stop_grace_period"])
        assert match
        assert int(match.group(1)) > shutdown_grace


def test_redpanda_is_pinned_health_checked_and_reachable_from_the_host(load: Loader) -> None:
    """Redpanda runs a pinned image, reports health with rpk and exposes 19092 on loopback."""
    redpanda = load("none")["services"]["redpanda"]
    assert re.fullmatch(
        r"docker\.redpanda\.com/redpandadata/redpanda:v\d+\.\d+\.\d+", redpanda["image"]
    )
    assert "rpk cluster health" in " ".join(redpanda["healthcheck"]["test"])
    assert any("--mode=dev-container" in arg for arg in redpanda["command"])
    published = {(p["host_ip"], p["published"], p["target"]) for p in redpanda["ports"]}
    assert ("127.0.0.1", "19092", 19092) in published
    advertised = next(a for a in redpanda["command"] if a.startswith("--advertise-kafka-addr"))
    assert "external://127.0.0.1:19092" in advertised


def test_redpanda_serves_its_schema_registry_to_containers_and_the_host(load: Loader) -> None:
    """Redpanda's schema registry listens for containers (redpanda:8081) and the host
    (127.0.0.1:18081, published on loopback only)."""
    redpanda = load("none")["services"]["redpanda"]
    (listeners,) = [a.split("=", 1)[1] for a in redpanda["command"]
                    if a.startswith("--schema-registry-addr=")]
    assert set(listeners.split(",")) == {"internal://0.0.0.0:8081", "external://0.0.0.0:18081"}
    published = {(p["host_ip"], p["published"], p["target"]) for p in redpanda["ports"]}
    assert ("127.0.0.1", "18081", 18081) in published


def test_avro_profile_produces_and_reads_avro_through_the_registry(load: Loader) -> None:
    """producer-avro writes Avro to AVRO_TOPIC through Redpanda's registry; bridge-avro reads it
    with VALUE_FORMAT=avro into its own prefix, group and WAL volume."""
    services = load("local,avro")["services"]
    producer = services["producer-avro"]
    command = producer["command"]
    assert command[0] == "produce"
    assert command[command.index("--format") + 1] == "avro"
    assert command[command.index("--schema-registry-url") + 1] == "http://redpanda:8081"
    assert producer["environment"]["KAFKA_TOPIC"] == "events-avro"
    init = " ".join(services["redpanda-init-avro"]["command"])
    assert 'rpk topic create "events-avro"' in init
    assert producer["depends_on"]["redpanda-init-avro"]["condition"] == (
        "service_completed_successfully")
    bridge = services["bridge-avro"]["environment"]
    json_bridge = services["bridge"]["environment"]
    assert bridge["VALUE_FORMAT"] == "avro"
    assert bridge["SCHEMA_REGISTRY_URL"] == "http://redpanda:8081"
    assert bridge["KAFKA_TOPIC"] == "events-avro"
    assert bridge["DESTINATION"] == "gs://wal-bridge-local/avro/raw"
    assert bridge["KAFKA_GROUP_ID"] != json_bridge.get("KAFKA_GROUP_ID", "wal-bridge")
    assert json_bridge.get("VALUE_FORMAT", "json") == "json"  # the JSON path stays JSON
    volumes = {v["source"] for v in services["bridge-avro"]["volumes"]}
    assert volumes == {"wal-bridge-avro"}


def test_topic_is_created_with_six_partitions(load: Loader) -> None:
    """The one-shot init service creates events-stream with 6 partitions."""
    init = load("none")["services"]["redpanda-init"]
    script = " ".join(init["command"])
    assert 'rpk topic create "events-stream"' in script
    assert '--partitions "6"' in script
    producer = load("none")["services"]["producer"]
    assert producer["depends_on"]["redpanda-init"]["condition"] == "service_completed_successfully"
    assert producer["command"][0] == "produce"
    assert producer["healthcheck"]["disable"] is True


def test_emulator_is_pinned_and_creates_the_bucket(load: Loader) -> None:
    """fake-gcs-server 1.56.1 serves plain HTTP on loopback 4443 and creates the bucket."""
    fake_gcs = load("local")["services"]["fake-gcs"]
    assert fake_gcs["image"] == "fsouza/fake-gcs-server:1.56.1"
    script = " ".join(fake_gcs["command"])
    assert 'mkdir -p "/data/wal-bridge-local"' in script
    assert "-scheme http" in script
    assert "-public-host fake-gcs:4443" in script
    published = {(p["host_ip"], p["published"], p["target"]) for p in fake_gcs["ports"]}
    assert ("127.0.0.1", "4443", 4443) in published


def test_env_example_is_documented_line_by_line() -> None:
    """Every setting in .env.example has a comment right above it (or above its group)."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    settings = 0
    for index, line in enumerate(lines):
        if not line or line.startswith("#"):
            continue
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", line), line
        settings += 1
        assert index > 0
        assert lines[index - 1].startswith("#") or re.fullmatch(
            r"[A-Z][A-Z0-9_]*=.*", lines[index - 1]
        ), f"{line} has no comment above it"
    assert settings > 0
    assert "COMPOSE_PROFILES=local" in lines


def test_env_example_covers_every_compose_variable() -> None:
    """Each ${VARIABLE} that compose.yaml reads is listed in .env.example."""
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text(encoding="utf-8")))
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M))
    assert used
    assert used <= listed, used - listed


def test_env_file_and_secrets_are_git_ignored() -> None:
    """.env and the secrets folder are in .gitignore; the example is not."""
    patterns = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert ".env" in patterns
    assert "secrets/" in patterns
    assert ".env.example" not in patterns
