"""The harness's services behave like the real ones the bridge relies on."""

from __future__ import annotations

import io
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, NamedTuple

import pytest
import requests
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from google.api_core.exceptions import PreconditionFailed

from scripts.services import kafka_wire
from scripts.services.toxiproxy import ToxiproxyClient

if TYPE_CHECKING:
    from conftest import GcsHandle, KafkaHandle

RECORDS = 1_000
MIB = 1024 * 1024


def _consume(bootstrap: str, topic: str, expected: int, timeout: float) -> list[tuple[int, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"smoke-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise AssertionError(f"consumer error: {error}")
            value = message.value()
            partition = message.partition()
            assert value is not None
            assert partition is not None
            received.append((partition, value))
    finally:
        consumer.close()
    return received


def test_kafka_round_trips_a_thousand_records_over_three_partitions(
    kafka: KafkaHandle, topic: str
) -> None:
    """A thousand keyed records sent to a 3-partition topic all come back to a group consumer."""
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    sent = [f"record-{i}".encode() for i in range(RECORDS)]
    for i, value in enumerate(sent):
        producer.produce(topic, key=str(i).encode(), value=value)
    assert producer.flush(30) == 0, "records still queued after 30 s"

    received = _consume(kafka.bootstrap, topic, RECORDS, timeout=60)

    assert Counter(value for _, value in received) == Counter(sent)
    assert {partition for partition, _ in received} == {0, 1, 2}
    described = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(topic, timeout=10)
    assert len(described.topics[topic].partitions) == 3


def test_kafka_broker_is_a_kraft_node_of_the_cluster_the_harness_formatted(
    kafka: KafkaHandle,
) -> None:
    """The broker reports the formatted cluster id, itself as controller, and KRaft features."""
    if not kafka.managed:
        pytest.skip("only the harness's own broker is known to run KRaft")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})

    cluster = admin.describe_cluster(request_timeout=10).result()
    versions = kafka_wire.api_versions(kafka.bootstrap)

    assert cluster.cluster_id == kafka.cluster_id
    assert cluster.controller is not None
    assert cluster.controller.id == 1
    assert [node.id for node in cluster.nodes] == [1]
    # metadata.version exists only in KRaft; DescribeQuorum is served only by KRaft brokers.
    assert versions.finalized_features.get("metadata.version", 0) > 0
    assert kafka_wire.API_DESCRIBE_QUORUM in versions.apis


class Upload(NamedTuple):
    kind: str  # the uploadType the client must choose
    size: int
    chunk_size: int | None
    size_known: bool


@pytest.mark.parametrize(
    "upload",
    [
        # At most 8 MiB of known size: multipart, even when chunk_size is set.
        Upload("multipart", 64 * 1024, 256 * 1024, size_known=True),
        Upload("resumable", 9 * MIB, None, size_known=True),
        # A stream of unknown size: resumable, here in three chunks.
        Upload("resumable", 600 * 1024, 256 * 1024, size_known=False),
    ],
    ids=["multipart", "resumable-large", "resumable-stream"],
)
def test_emulator_refuses_a_second_create_only_upload(
    gcs: GcsHandle, bucket: str, upload: Upload
) -> None:
    """A create-only upload reads back; a second one of that name gets 412 and changes nothing."""
    first = uuid.uuid4().bytes * (upload.size // 16)
    second = b"x" + first[1:]
    blobs = gcs.client().bucket(bucket)

    def create(data: bytes) -> None:
        blobs.blob("object.bin", chunk_size=upload.chunk_size).upload_from_file(
            io.BytesIO(data),
            size=len(data) if upload.size_known else None,
            if_generation_match=0,
        )

    create(first)
    with pytest.raises(PreconditionFailed) as refused:
        create(second)

    assert f"uploadType={upload.kind}" in str(refused.value)
    assert blobs.blob("object.bin").download_as_bytes() == first


def test_toxiproxy_cuts_and_restores_uploads_to_the_emulator(
    gcs: GcsHandle, bucket: str, toxiproxy: ToxiproxyClient
) -> None:
    """Uploads through a proxy fail while it is cut or resets peers, and succeed once healed."""
    proxy = toxiproxy.create_proxy(f"gcs-{uuid.uuid4().hex[:8]}", gcs.url.removeprefix("http://"))
    through_proxy = gcs.client(proxy.url).bucket(bucket)

    def upload(name: str) -> None:
        through_proxy.blob(name).upload_from_string(
            name.encode(), if_generation_match=0, retry=None, timeout=5
        )

    toxiproxy.disable(proxy.name)
    with pytest.raises(requests.exceptions.ConnectionError):
        upload("while-disabled")
    toxiproxy.enable(proxy.name)
    upload("after-enable")

    toxic = toxiproxy.add_toxic(proxy.name, "reset_peer", {"timeout": 0}, stream="upstream")
    with pytest.raises(requests.exceptions.ConnectionError):
        upload("while-reset")
    toxiproxy.remove_toxic(proxy.name, toxic)
    upload("after-reset")

    stored = {blob.name: blob.download_as_bytes() for blob in gcs.client().list_blobs(bucket)}
    assert stored == {"after-enable": b"after-enable", "after-reset": b"after-reset"}
