"""Just enough of the Kafka wire protocol to probe, describe and create topics, with the stdlib.

The harness needs it where no Kafka client library is installed (`scripts/dev-services` runs on
the system Python). Three requests, each at one fixed version that Kafka 4.x and Redpanda serve:

- ApiVersions v3 (flexible): the broker's API ranges and its finalized features; a KRaft broker
  finalizes ``metadata.version``.
- Metadata v4: brokers, cluster id, controller id, and per topic the partition leaders.
- CreateTopics v4.

Frames are ``int32 size`` + header + body, big-endian. Request header v1 is ``api_key int16,
api_version int16, correlation_id int32, client_id string``; v2 (flexible requests) appends an
empty tagged-field section. The response header is the correlation id (ApiVersions always uses
this v0 header, even at a flexible version).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

API_METADATA = 3
API_LEAVE_GROUP = 13
API_VERSIONS = 18
API_CREATE_TOPICS = 19
API_DESCRIBE_QUORUM = 55
ERROR_NONE = 0
ERROR_TOPIC_ALREADY_EXISTS = 36
CLIENT_ID = b"wal-bridge-harness"

T = TypeVar("T")


class KafkaWireError(Exception):
    """The broker could not be reached or answered something we cannot read."""


@dataclass(frozen=True)
class ApiVersions:
    apis: dict[int, tuple[int, int]]
    finalized_features: dict[str, int]


@dataclass(frozen=True)
class TopicMetadata:
    error_code: int
    partition_leaders: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterMetadata:
    brokers: dict[int, tuple[str, int]]
    cluster_id: str | None
    controller_id: int
    topics: dict[str, TopicMetadata]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, fmt: str) -> int:
        try:
            (value,) = struct.unpack_from(fmt, self.data, self.pos)
        except struct.error as exc:
            raise KafkaWireError(f"truncated response at byte {self.pos}") from exc
        self.pos += struct.calcsize(fmt)
        return int(value)

    def int8(self) -> int:
        return self._take(">b")

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def int64(self) -> int:
        return self._take(">q")

    def uvarint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.pos >= len(self.data):
                raise KafkaWireError(f"truncated response at byte {self.pos}")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def _bytes(self, length: int) -> bytes:
        if length < 0 or self.pos + length > len(self.data):
            raise KafkaWireError(f"truncated response at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + length]
        self.pos += length
        return chunk

    def _text(self, length: int) -> str:
        return self._bytes(length).decode(errors="replace")

    def string(self) -> str:
        return self._text(self.int16())

    def nullable_string(self) -> str | None:
        length = self.int16()
        return None if length < 0 else self._text(length)

    def compact_string(self) -> str:
        return self._text(self.uvarint() - 1)

    def array(self, item: Callable[[], T]) -> list[T]:
        count = self.int32()
        return [item() for _ in range(max(count, 0))]

    def compact_array(self, item: Callable[[], T]) -> list[T]:
        count = self.uvarint() - 1
        return [item() for _ in range(max(count, 0))]

    def skip(self, length: int) -> None:
        self._bytes(length)

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.skip(self.uvarint())


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _compact_string(value: str) -> bytes:
    raw = value.encode()
    return bytes([len(raw) + 1]) + raw  # lengths here stay below 127: one varint byte


def _address(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",", maxsplit=1)[0].strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _call(
    bootstrap: str, api_key: int, version: int, body: bytes, *, flexible: bool, timeout: float
) -> _Reader:
    header = struct.pack(">hhi", api_key, version, 1) + _string(CLIENT_ID.decode())
    if flexible:
        header += b"\x00"
    frame = header + body
    try:
        with socket.create_connection(_address(bootstrap), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(frame)) + frame)
            size = struct.unpack(">i", _recv_exact(sock, 4))[0]
            reader = _Reader(_recv_exact(sock, size))
    except (OSError, struct.error) as exc:
        raise KafkaWireError(f"{bootstrap}: {exc}") from exc
    if reader.int32() != 1:
        raise KafkaWireError(f"{bootstrap}: response to another request")
    return reader


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise KafkaWireError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


def api_versions(bootstrap: str, timeout: float = 5.0) -> ApiVersions:
    """ApiVersions v3: supported API ranges and finalized feature levels."""
    body = _compact_string("wal-bridge-harness") + _compact_string("1") + b"\x00"
    reader = _call(bootstrap, API_VERSIONS, 3, body, flexible=True, timeout=timeout)
    error = reader.int16()
    if error != ERROR_NONE:
        raise KafkaWireError(f"ApiVersions failed with error code {error}")
    apis: dict[int, tuple[int, int]] = {}

    def api() -> None:
        key, low, high = reader.int16(), reader.int16(), reader.int16()
        reader.skip_tagged_fields()
        apis[key] = (low, high)

    reader.compact_array(api)
    reader.int32()  # throttle_time_ms
    features: dict[str, int] = {}
    for _ in range(reader.uvarint()):
        tag, size = reader.uvarint(), reader.uvarint()
        if tag != 2:  # 0 supported features, 1 finalized epoch, 3 zk migration ready
            reader.skip(size)
            continue

        def feature() -> None:
            name, max_level, _min_level = reader.compact_string(), reader.int16(), reader.int16()
            reader.skip_tagged_fields()
            features[name] = max_level

        reader.compact_array(feature)
    return ApiVersions(apis, features)


def metadata(bootstrap: str, topics: list[str], timeout: float = 5.0) -> ClusterMetadata:
    """Metadata v4 for ``topics`` (an empty list asks for brokers only)."""
    body = struct.pack(">i", len(topics)) + b"".join(_string(t) for t in topics) + b"\x00"
    reader = _call(bootstrap, API_METADATA, 4, body, flexible=False, timeout=timeout)
    reader.int32()  # throttle_time_ms
    brokers: dict[int, tuple[str, int]] = {}

    def broker() -> None:
        node, host, port = reader.int32(), reader.string(), reader.int32()
        reader.nullable_string()  # rack
        brokers[node] = (host, port)

    reader.array(broker)
    cluster_id = reader.nullable_string()
    controller_id = reader.int32()
    result: dict[str, TopicMetadata] = {}

    def topic() -> None:
        error, name = reader.int16(), reader.string()
        reader.int8()  # is_internal
        leaders: dict[int, int] = {}

        def partition() -> None:
            reader.int16()  # error_code
            index, leader = reader.int32(), reader.int32()
            reader.array(reader.int32)  # replica nodes
            reader.array(reader.int32)  # in-sync replica nodes
            leaders[index] = leader

        reader.array(partition)
        result[name] = TopicMetadata(error, leaders)

    reader.array(topic)
    return ClusterMetadata(brokers, cluster_id, controller_id, result)


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int,
    *,
    replication_factor: int = 1,
    configs: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, str | None]:
    """CreateTopics v4 for one topic; returns the broker's (error_code, error_message)."""
    config_items = configs or {}
    topic = (
        _string(name)
        + struct.pack(">ihi", partitions, replication_factor, 0)  # no manual assignments
        + struct.pack(">i", len(config_items))
        + b"".join(_string(k) + _string(v) for k, v in config_items.items())
    )
    body = struct.pack(">i", 1) + topic + struct.pack(">ib", int(timeout * 1000), 0)
    reader = _call(bootstrap, API_CREATE_TOPICS, 4, body, flexible=False, timeout=timeout + 5)
    reader.int32()  # throttle_time_ms
    results = reader.array(lambda: (reader.string(), reader.int16(), reader.nullable_string()))
    if not results:
        raise KafkaWireError("CreateTopics returned no result")
    _, error, message = results[0]
    return error, message


def leave_group(bootstrap: str, group: str, instance_id: str, timeout: float = 10.0) -> int:
    """LeaveGroup v3 for a static member, by its group.instance.id; return the error code.

    What an operator does (``kafka-consumer-groups --delete-members``-style) instead of waiting
    out the session timeout. Sent to the bootstrap broker: the coordinator of a one-node cluster.
    """
    body = _string(group) + struct.pack(">i", 1) + _string("") + _string(instance_id)
    reader = _call(bootstrap, API_LEAVE_GROUP, 3, body, flexible=False, timeout=timeout)
    reader.int32()  # throttle_time_ms
    error = reader.int16()
    if error:
        return error
    member_error = 0
    for _ in range(reader.int32()):
        reader.nullable_string()  # member_id
        reader.nullable_string()  # group_instance_id
        member_error = reader.int16()
    return member_error
