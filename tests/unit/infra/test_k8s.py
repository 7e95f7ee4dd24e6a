"""The Kubernetes manifests in infra/k8s: schema-valid, and shaped for a WAL per replica.

Every manifest is validated in strict mode (unknown fields are errors) with kubernetes-validate
against the oldest Kubernetes version the manifests rely on (1.32, where the StatefulSet PVC
retention policy is GA) and the newest whose schemas the package ships.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "infra" / "k8s"
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
NAMESPACE = "wal-bridge"
APP_LABELS = {"app.kubernetes.io/name": "wal-bridge"}
# A mount path inside the container, not a temporary file of ours.
SCRATCH_DIR = "/tmp"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        with path.open(encoding="utf-8") as handle:
            for document in yaml.safe_load_all(handle):
                if document:
                    found.append((path.name, document))
    return found


DOCUMENTS = _documents()


def _one(kind: str) -> dict[str, Any]:
    matches = [doc for _, doc in DOCUMENTS if doc["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


STATEFULSET = _one("StatefulSet")
POD = STATEFULSET["spec"]["template"]["spec"]
(CONTAINER,) = POD["containers"]
CONFIG = _one("ConfigMap")["data"]


def _probe_path(probe: dict[str, Any]) -> tuple[str, Any]:
    return probe["httpGet"]["path"], probe["httpGet"]["port"]


def _container_port(name: str) -> int:
    (port,) = [p["containerPort"] for p in CONTAINER["ports"] if p["name"] == name]
    return int(port)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("filename", "document"),
    DOCUMENTS,
    ids=[f"{name}:{doc['kind']}" for name, doc in DOCUMENTS],
)
def test_manifest_is_schema_valid(filename: str, document: dict[str, Any], version: str) -> None:
    """Each manifest validates strictly against the Kubernetes OpenAPI schema."""
    validated = kubernetes_validate.validate(document, version, strict=True)
    assert validated == version.rsplit(".", 1)[0], filename


def test_strict_validation_rejects_unknown_fields() -> None:
    """A misspelt field fails validation, so the schema check above can catch mistakes."""
    broken = copy.deepcopy(STATEFULSET)
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    """kustomization.yaml applies every manifest file in the folder."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    assert set(kustomization["resources"]) == {name for name, _ in DOCUMENTS}
    assert kustomization["namespace"] == NAMESPACE


def test_namespaced_objects_share_one_namespace_and_labels() -> None:
    """Every namespaced object lives in the wal-bridge namespace and carries the app label."""
    for _, document in DOCUMENTS:
        metadata = document["metadata"]
        if document["kind"] != "Namespace":
            assert metadata["namespace"] == NAMESPACE
        assert APP_LABELS.items() <= metadata["labels"].items()


def test_statefulset_runs_three_parallel_replicas() -> None:
    """Three replicas start and stop in parallel and are found through the headless service."""
    spec = STATEFULSET["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == _one("Service")["metadata"]["name"]
    assert spec["selector"]["matchLabels"] == APP_LABELS
    assert APP_LABELS.items() <= spec["template"]["metadata"]["labels"].items()


def test_each_replica_owns_a_wal_volume() -> None:
    """A volumeClaimTemplate gives every replica its own ReadWriteOnce WAL at WAL_DIR."""
    spec = STATEFULSET["spec"]
    (template,) = spec["volumeClaimTemplates"]
    assert template["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert template["spec"]["resources"]["requests"]["storage"]
    name = template["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in CONTAINER["volumeMounts"]}
    assert mounts[name] == CONFIG["WAL_DIR"] == "/var/lib/wal-bridge"
    # A pod volume of the same name would shadow the claim and share nothing per replica.
    assert name not in {v["name"] for v in POD.get("volumes", [])}
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }


def test_instance_id_is_the_pod_name() -> None:
    """INSTANCE_ID comes from metadata.name through the downward API."""
    (instance_id,) = [e for e in CONTAINER["env"] if e["name"] == "INSTANCE_ID"]
    assert instance_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "INSTANCE_ID" not in CONFIG


def test_settings_come_from_a_configmap_and_an_optional_secret() -> None:
    """envFrom reads the ConfigMap and the Kafka credentials Secret, which may be absent."""
    sources = CONTAINER["envFrom"]
    assert {"configMapRef": {"name": _one("ConfigMap")["metadata"]["name"]}} in sources
    (secret,) = [s["secretRef"] for s in sources if "secretRef" in s]
    assert secret["optional"] is True
    assert "KAFKA_SASL_PASSWORD" not in CONFIG
    assert CONFIG["DESTINATION"].startswith("gs://")
    assert CONFIG["DESTINATION"].endswith("/raw")


def test_probes_use_healthz_and_readyz_on_the_metrics_port() -> None:
    """Liveness and startup ask /healthz, readiness asks /readyz, on port 9464."""
    port = _container_port("metrics")
    assert port == int(CONFIG["METRICS_PORT"]) == 9464
    assert _probe_path(CONTAINER["livenessProbe"]) == ("/healthz", "metrics")
    assert _probe_path(CONTAINER["startupProbe"]) == ("/healthz", "metrics")
    assert _probe_path(CONTAINER["readinessProbe"]) == ("/readyz", "metrics")


def test_termination_grace_exceeds_shutdown_grace() -> None:
    """The pod gets longer to stop than the bridge's SHUTDOWN_GRACE."""
    assert POD["terminationGracePeriodSeconds"] > int(CONFIG["SHUTDOWN_GRACE"])


def test_resources_are_requested_and_memory_is_capped() -> None:
    """CPU and memory are requested and memory is limited to 512Mi."""
    resources = CONTAINER["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert resources["limits"]["memory"] == "512Mi"


def test_pod_runs_unprivileged_on_a_read_only_root() -> None:
    """Non-root uid 10001, read-only root filesystem, no privilege escalation, no capabilities."""
    pod_context = POD["securityContext"]
    assert pod_context["runAsNonRoot"] is True
    assert pod_context["runAsUser"] == 10001
    assert pod_context["fsGroup"] == 10001
    assert pod_context["seccompProfile"]["type"] == "RuntimeDefault"
    context = CONTAINER["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]


def test_tmp_is_a_writable_empty_dir() -> None:
    """The scratch directory is an emptyDir, the only writable path besides the WAL."""
    volumes = {v["name"]: v for v in POD["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in CONTAINER["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[SCRATCH_DIR]]
    assert set(mounts) == {SCRATCH_DIR, CONFIG["WAL_DIR"]}


def test_headless_service_selects_the_pods() -> None:
    """The governing service is headless and publishes the metrics port of every pod."""
    spec = _one("Service")["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["selector"] == APP_LABELS
    assert [p["port"] for p in spec["ports"]] == [9464]


def test_disruption_budget_allows_one_replica_down() -> None:
    """The PodDisruptionBudget lets voluntary disruptions take one replica at a time."""
    spec = _one("PodDisruptionBudget")["spec"]
    assert spec["maxUnavailable"] == 1
    assert spec["selector"]["matchLabels"] == APP_LABELS


def test_service_account_is_keyless_workload_identity() -> None:
    """The pods run as a service account annotated for GKE Workload Identity, with no token."""
    account = _one("ServiceAccount")
    annotation = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert annotation.endswith(".iam.gserviceaccount.com")
    assert account["automountServiceAccountToken"] is False
    assert POD["serviceAccountName"] == account["metadata"]["name"]
    assert POD["automountServiceAccountToken"] is False
    assert not [s for _, s in DOCUMENTS if s["kind"] == "Secret"], "no Secret is committed"
