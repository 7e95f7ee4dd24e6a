"""The WAL record codec: pure functions from columns to bytes and from bytes back to records.

Byte layout (all integers little-endian). This comment is the one place it is written down.

A segment file is a header followed by frames::

    segment header, 32 bytes
      0   8  magic         b"WALBSEG1"
      8   8  u64           segment sequence number
      16  8  i64           created at, Unix milliseconds
      24  4  u32           CRC32C (Castagnoli) of bytes 0..23
      28  4  u32           zero

    frame, 16-byte header + body
      0   4  magic         b"WALF"
      4   1  u8            kind: 1 = records, 2 = seal
      5   3                zero
      8   4  u32           body length in bytes (at most MAX_FRAME_BYTES)
      12  4  u32           CRC32C of header bytes 0..11 followed by the body
      16  n                body

A *records* frame holds one polled batch (group commit: one frame, one fsync) as an Arrow IPC
stream with a single record batch of :data:`BATCH_SCHEMA`. Arrow keeps the hot path free of
per-record Python: the consumer hands over column lists, and conversion reads the columns back
without copying. A *seal* frame is the last frame of a sealed segment: a UTF-8 JSON object with
the object key and the offset ranges (see :class:`wal_bridge.wal.segment.SealInfo`).

Because the CRC covers the header too, a zero-filled tail never parses as a frame (the magic is
wrong, and the CRC of a zero header is not zero).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import google_crc32c
import pyarrow as pa

SEGMENT_MAGIC = b"WALBSEG1"
SEGMENT_HEADER = struct.Struct("<8sQqII")
SEGMENT_HEADER_SIZE = SEGMENT_HEADER.size  # 32

FRAME_MAGIC = b"WALF"
FRAME_HEADER = struct.Struct("<4sB3xII")
FRAME_HEADER_SIZE = FRAME_HEADER.size  # 16
MAX_FRAME_BYTES = 256 * 1024 * 1024

HEADER_TYPE = pa.list_(pa.struct([("key", pa.string()), ("value", pa.binary())]))
BATCH_SCHEMA = pa.schema(
    [
        ("_topic", pa.dictionary(pa.int32(), pa.string())),
        ("_partition", pa.int32()),
        ("_offset", pa.int64()),
        ("_kafka_timestamp", pa.int64()),  # Unix ms; -1 when the broker gave none
        ("_key", pa.binary()),
        ("_value", pa.binary()),
        ("_headers", HEADER_TYPE),
    ]
)


class FrameKind(enum.IntEnum):
    RECORDS = 1
    SEAL = 2


class DecodeError(ValueError):
    """Bytes that are not a valid frame or segment header; ``offset`` is where they start."""

    def __init__(self, offset: int, reason: str) -> None:
        self.offset = offset
        self.reason = reason
        super().__init__(f"at byte {offset}: {reason}")


class Truncated(DecodeError):
    """The bytes end before the frame does: what a crash in the middle of a write leaves."""


def crc32c(data: bytes | memoryview, start: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``start``. The C extension takes only
    ``bytes``; copying a slice runs at several GB/s, far above what recovery needs."""
    raw = data if isinstance(data, bytes) else bytes(data)
    return int(google_crc32c.extend(start, raw)) if start else int(google_crc32c.value(raw))


def encode_segment_header(seq: int, created_ms: int) -> bytes:
    head = struct.pack("<8sQq", SEGMENT_MAGIC, seq, created_ms)
    return head + struct.pack("<II", crc32c(head), 0)


def decode_segment_header(data: bytes | memoryview) -> tuple[int, int]:
    """Return ``(sequence, created_ms)`` of a segment header, or raise DecodeError."""
    if len(data) < SEGMENT_HEADER_SIZE:
        raise Truncated(0, f"segment header needs {SEGMENT_HEADER_SIZE} bytes, got {len(data)}")
    magic, seq, created_ms, crc, _ = SEGMENT_HEADER.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        raise DecodeError(0, f"bad segment magic {bytes(magic)!r}")
    if crc != crc32c(bytes(data[:24])):
        raise DecodeError(0, "segment header checksum mismatch")
    return seq, created_ms


def encode_frame(kind: FrameKind, body: bytes | memoryview) -> bytes:
    if len(body) > MAX_FRAME_BYTES:
        raise ValueError(f"frame body of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    head = struct.pack("<4sB3xI", FRAME_MAGIC, kind, len(body))
    crc = crc32c(body, crc32c(head))
    return head + struct.pack("<I", crc) + bytes(body)


@dataclass(frozen=True)
class Frame:
    kind: FrameKind
    offset: int  # byte position of the frame header in the segment
    body: memoryview

    @property
    def end(self) -> int:
        return self.offset + FRAME_HEADER_SIZE + len(self.body)


def decode_frame(data: memoryview, offset: int) -> Frame:
    """Decode the frame that starts at ``offset`` of ``data``, verifying its checksum."""
    available = len(data) - offset
    if available < FRAME_HEADER_SIZE:
        raise Truncated(offset, f"frame header needs {FRAME_HEADER_SIZE} bytes, {available} left")
    magic, kind, length = struct.unpack_from("<4sB3xI", data, offset)
    if magic != FRAME_MAGIC:
        raise DecodeError(offset, f"bad frame magic {bytes(magic)!r}")
    if length > MAX_FRAME_BYTES:
        raise DecodeError(offset, f"frame length {length} exceeds the {MAX_FRAME_BYTES} limit")
    if kind not in FrameKind._value2member_map_:
        raise DecodeError(offset, f"unknown frame kind {kind}")
    end = offset + FRAME_HEADER_SIZE + length
    if end > len(data):
        raise Truncated(offset, f"frame of {length} bytes runs past the end of the file")
    (stored,) = struct.unpack_from("<I", data, offset + 12)
    body = data[offset + FRAME_HEADER_SIZE : end]
    if stored != crc32c(body, crc32c(data[offset : offset + 12])):
        raise DecodeError(offset, "frame checksum mismatch")
    return Frame(FrameKind(kind), offset, body)


@dataclass(frozen=True)
class RecordColumns:
    """One polled batch, column by column, as the consumer extracts it from Kafka messages."""

    topics: Sequence[str]
    partitions: Sequence[int]
    offsets: Sequence[int]
    timestamps: Sequence[int]
    keys: Sequence[bytes | None]
    values: Sequence[bytes | None]
    headers: Sequence[Sequence[tuple[str, bytes | None]] | None]

    def __len__(self) -> int:
        return len(self.offsets)

    def slice(self, start: int, stop: int) -> RecordColumns:
        return RecordColumns(
            self.topics[start:stop], self.partitions[start:stop], self.offsets[start:stop],
            self.timestamps[start:stop], self.keys[start:stop], self.values[start:stop],
            self.headers[start:stop],
        )

    def to_arrow(self) -> pa.RecordBatch:
        """The batch as Arrow. The common cases (one topic, no keys, no headers) skip the
        per-record conversion of those columns: a third of this call's cost otherwise."""
        n = len(self.offsets)
        topics = self.topics
        if n and topics.count(topics[0]) == n:
            topic = pa.DictionaryArray.from_arrays(
                pa.nulls(n, pa.int32()).fill_null(0), pa.array([topics[0]], pa.string())
            )
        else:
            topic = pa.array(topics, pa.string()).dictionary_encode()
        keys = self.keys
        headers = self.headers
        arrays: list[Any] = [
            topic,
            pa.array(self.partitions, pa.int32()),
            pa.array(self.offsets, pa.int64()),
            pa.array(self.timestamps, pa.int64()),
            pa.nulls(n, pa.binary()) if keys.count(None) == n else pa.array(keys, pa.binary()),
            pa.array(self.values, pa.binary()),
            pa.nulls(n, HEADER_TYPE) if headers.count(None) == n
            else pa.array(headers, HEADER_TYPE),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=BATCH_SCHEMA)


def encode_records(batch: pa.RecordBatch) -> bytes:
    """The body of a records frame: ``batch`` as an Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, BATCH_SCHEMA) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue())


def decode_records(frame: Frame) -> pa.RecordBatch:
    """The record batch of a records frame (zero-copy over the frame's bytes)."""
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(frame.body))
        batches = list(reader)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DecodeError(frame.offset, f"records frame does not decode: {exc}") from exc
    if len(batches) != 1 or not batches[0].schema.equals(BATCH_SCHEMA):
        raise DecodeError(frame.offset, "records frame does not hold one batch of the WAL schema")
    return batches[0]
