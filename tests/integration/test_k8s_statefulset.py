"""infra/k8s run, not only validated: the StatefulSet's replicas as native processes.

The manifests are read the way ``kubectl apply -k infra/k8s`` reads them: the resources that
kustomization.yaml lists, in its namespace. Each replica of the StatefulSet runs as a child
process with the container's command line and environment built as the kubelet builds them
(tests/native.py): the image's ENTRYPOINT (no ``command`` is set) with the container's
``args``; the image's ENV, then ``envFrom`` in order (the ConfigMap's data; the optional
Secret, which is not part of the kustomization, skipped as the kubelet skips it), then
``env``, where INSTANCE_ID comes from the downward API: the pod name, ``<statefulset>-<n>``.

What changes, as the kustomize overlay that kustomization.yaml asks for would change it:
the ConfigMap's broker address becomes the test broker, the ``BUCKET`` placeholder of
DESTINATION a fresh bucket in the emulator, KAFKA_TOPIC and KAFKA_GROUP_ID fresh names; and
STORAGE_EMULATOR_HOST is added, because the pods otherwise reach real GCS through Workload
Identity. Each replica's WAL volume claim is its own temporary directory, and METRICS_PORT a
free port per replica (pods have their own network namespace; processes here share one). No
timing setting changes: with the ConfigMap's BATCH_TIMEOUT of 60 s and BATCH_SIZE of 5000,
the records reach the bucket through the SIGTERM drain.

The topic is created as compose's redpanda-init creates it (KAFKA_PARTITIONS of
.env.example); events come from ``wal_bridge produce``. Then: every replica becomes ready
(assigned partitions), none exits early, SIGTERM makes each exit 0 within the pod's
terminationGracePeriodSeconds, and every record of the topic lands exactly once.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from tests.compose_project import ENV_EXAMPLE
from tests.conftest import GcsHandle, KafkaHandle
from tests.native import (
    Image,
    NativeProcess,
    TopicWatch,
    describe,
    free_port,
    k8s_argv,
    k8s_expand,
    landed_identities,
    landed_objects,
    native_executable,
    native_path,
    topic_identities,
    wait_while_running,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
RECORDS = 3000
APPENDED = "wal_bridge_records_appended_total"


def _kustomization() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """kustomization.yaml and the documents of the resources it lists, namespace applied."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    documents = []
    for resource in kustomization["resources"]:
        with (K8S / resource).open(encoding="utf-8") as handle:
            documents.extend(d for d in yaml.safe_load_all(handle) if d)
    for document in documents:
        if document["kind"] != "Namespace" and "namespace" in kustomization:
            document["metadata"]["namespace"] = kustomization["namespace"]
    return kustomization, documents


def _find(documents: list[dict[str, Any]], kind: str, name: str | None = None,
          ) -> list[dict[str, Any]]:
    return [d for d in documents
            if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def _source_data(documents: list[dict[str, Any]], kind: str, ref: Mapping[str, Any],
                 ) -> dict[str, str] | None:
    """The data of the ConfigMap or Secret ``ref`` names; None when it is absent and optional."""
    (found,) = _find(documents, kind, ref["name"]) or [None]
    if found is None:
        assert ref.get("optional"), f"{kind} {ref['name']} is required but not in the manifests"
        return None
    data = {k: str(v) for k, v in (found.get("data") or {}).items()}
    if kind == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in data.items()}
    return data | {k: str(v) for k, v in (found.get("stringData") or {}).items()}


def _container_env(image: Image, container: Mapping[str, Any], documents: list[dict[str, Any]],
                   pod: Mapping[str, str]) -> dict[str, str]:
    """The environment the kubelet gives ``container`` of the pod ``pod`` (name, namespace)."""
    env = dict(image.env)
    for source in container.get("envFrom") or []:
        kind, ref = (("ConfigMap", source["configMapRef"]) if "configMapRef" in source
                     else ("Secret", source["secretRef"]))
        data = _source_data(documents, kind, ref)
        env.update({source.get("prefix", "") + k: v for k, v in (data or {}).items()})
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = k8s_expand(entry["value"], env)
            continue
        value_from = entry["valueFrom"]
        if "fieldRef" in value_from:
            field_path = value_from["fieldRef"]["fieldPath"]
            assert field_path in pod, f"fieldRef {field_path} is not emulated here"
            env[entry["name"]] = pod[field_path]
        else:
            kind, key = (("ConfigMap", "configMapKeyRef") if "configMapKeyRef" in value_from
                         else ("Secret", "secretKeyRef"))
            ref = value_from[key]
            data = _source_data(documents, kind, ref)
            if data is not None and ref["key"] in data:
                env[entry["name"]] = data[ref["key"]]
            else:
                assert ref.get("optional"), f"{entry['name']}: {kind} key {ref['key']} missing"
    return env


def _partitions() -> int:
    """KAFKA_PARTITIONS of .env.example: what redpanda-init creates the topic with."""
    match = re.search(r"^KAFKA_PARTITIONS=(\d+)$", ENV_EXAMPLE.read_text(encoding="utf-8"),
                      re.M)
    assert match
    return int(match.group(1))




def test_statefulset_replicas_run_and_land_every_record_once(
    kafka: KafkaHandle, gcs: GcsHandle, tmp_path: Path
) -> None:
    """Every replica runs with its own WAL and pod name, exits 0 on SIGTERM, and the topic lands
    exactly once across them."""
    kustomization, documents = _kustomization()
    (statefulset,) = _find(documents, "StatefulSet")
    pod_spec = statefulset["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    image_names = {i["name"]: i.get("newName", i["name"]) for i in kustomization["images"]}
    assert image_names[container["image"]].rsplit("/", 1)[-1] == "wal-bridge", (
        "the container does not run the image of docker/Dockerfile"
    )
    image = Image.from_dockerfile(base_env={"PATH": os.environ.get("PATH", "")})

    # The overlay: the test's broker, bucket, topic and group; the emulator.
    suffix = uuid.uuid4().hex[:10]
    bucket = gcs.create_bucket(f"k8s-{suffix}")
    topic = kafka.create_topic(f"k8s-{suffix}", _partitions())
    (config_map,) = [d for d in documents if d["kind"] == "ConfigMap"
                     and {"configMapRef": {"name": d["metadata"]["name"]}}
                     in container["envFrom"]]
    data = config_map["data"]
    assert urlparse(data["DESTINATION"]).netloc == "BUCKET", "the placeholder moved"
    data |= {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "DESTINATION": data["DESTINATION"].replace("BUCKET", bucket),
        "KAFKA_TOPIC": topic,
        "KAFKA_GROUP_ID": f"k8s-{suffix}",
        "STORAGE_EMULATOR_HOST": gcs.url,
    }

    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    # All of the manifest's replicas (3), at most three to keep the test short.
    replicas = min(int(statefulset["spec"]["replicas"]), 3)
    processes = []
    for ordinal in range(replicas):
        pod = {"metadata.name": f"{statefulset['metadata']['name']}-{ordinal}",
               "metadata.namespace": statefulset["metadata"]["namespace"]}
        mounts = {}
        for mount in container["volumeMounts"]:
            if mount["name"] in claims:  # the PVC <claim>-<pod>, one per replica
                mounts[mount["mountPath"]] = tmp_path / f"{mount['name']}-{pod['metadata.name']}"

        def local(value: str, mounts: Mapping[str, Path] = mounts) -> str:
            for target, path in mounts.items():
                if value == target or value.startswith(f"{target}/"):
                    return str(path) + value[len(target):]
            return value

        env = _container_env(image, container, documents, pod)
        argv = k8s_argv(image, container, env)
        env = {k: local(v) for k, v in env.items() if k != "PATH"}
        port = free_port()
        env |= {"METRICS_PORT": str(port), "PATH": native_path(),
                "HOME": str(tmp_path / "nonexistent")}
        assert env["WAL_DIR"] != data["WAL_DIR"], "the WAL is not on the claim's volume"
        workdir = Path(local(container.get("workingDir") or image.workdir))
        processes.append(NativeProcess(pod["metadata.name"], native_executable(argv), env,
                                       workdir, tmp_path / f"{pod['metadata.name']}.log", port))
    assert len({p.env["WAL_DIR"] for p in processes}) == replicas
    assert [p.env["INSTANCE_ID"] for p in processes] == [p.name for p in processes]

    watch = TopicWatch(kafka.bootstrap, topic)
    try:
        for process in processes:
            process.start()
        wait_while_running("every replica to be ready",
                           lambda: all(p.ready() for p in processes), processes, timeout=90)
        produced = subprocess.run(
            [*native_executable(["wal_bridge"]), "produce", "--count", str(RECORDS), "--quiet",
             "--bootstrap-servers", kafka.bootstrap, "--topic", topic],
            env={k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")},
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert produced.returncode == 0, produced.stderr
        assert watch.size() == RECORDS
        # Every record is in some replica's WAL (their own count, from /metrics): SIGTERM must
        # now ship all of it.
        wait_while_running("the replicas to append every record to their WALs",
                           lambda: sum(p.metric(APPENDED) for p in processes) >= RECORDS,
                           processes, timeout=90)
        for process in processes:  # the kubelet stops the pods of a StatefulSet in parallel
            assert process.proc is not None
            process.proc.send_signal(signal.SIGTERM)
        grace = pod_spec.get("terminationGracePeriodSeconds", 30)
        for process in processes:
            assert process.proc is not None
            assert process.proc.wait(grace) == 0, describe(processes)
    finally:
        for process in processes:
            process.kill()
        watch.close()

    client = gcs.client()
    expected = topic_identities(kafka.bootstrap, topic)
    landed = landed_identities(client, bucket)
    missing, extra = expected - landed, landed - expected
    summary = (f"{sum(missing.values())} records missing, {sum(extra.values())} extra or "
               f"duplicated rows, of {RECORDS}\n{describe(processes)}")
    assert sum(expected.values()) == RECORDS
    assert not missing, summary
    assert not extra, summary
    objects = landed_objects(client, bucket)
    for process in processes:  # each replica shipped its partitions under its pod name
        assert any(f"-{process.name}-" in name for name in objects), (process.name, objects)

