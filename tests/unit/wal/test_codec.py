"""The WAL record codec: round trips and the corrupt inputs recovery must recognise."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wal_bridge.wal.codec import (
    FRAME_HEADER_SIZE,
    MAX_FRAME_BYTES,
    SEGMENT_HEADER_SIZE,
    DecodeError,
    FrameKind,
    RecordColumns,
    Truncated,
    decode_frame,
    decode_records,
    decode_segment_header,
    encode_frame,
    encode_records,
    encode_segment_header,
)

optional_bytes = st.one_of(st.none(), st.binary(max_size=64))
headers = st.one_of(
    st.none(),
    st.lists(st.tuples(st.text(max_size=8), optional_bytes), max_size=3),
)
record = st.tuples(
    st.sampled_from(["events-stream", "other", "ü-topic"]),
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**63 - 1),
    st.one_of(st.just(-1), st.integers(0, 2**50)),
    optional_bytes,
    optional_bytes,
    headers,
)


def columns(records: list[tuple]) -> RecordColumns:  # type: ignore[type-arg]
    return RecordColumns(*(list(col) for col in zip(*records, strict=True)))


@settings(max_examples=150, deadline=None)
@given(st.lists(record, min_size=1, max_size=40))
def test_records_frame_round_trips(records: list[tuple]) -> None:  # type: ignore[type-arg]
    """Any batch of records comes back from a frame field for field, nulls included."""
    batch = columns(records).to_arrow()
    frame = decode_frame(memoryview(encode_frame(FrameKind.RECORDS, encode_records(batch))), 0)
    back = decode_records(frame)
    assert frame.kind is FrameKind.RECORDS
    assert back.column("_topic").dictionary_decode().to_pylist() == [r[0] for r in records]
    assert back.column("_partition").to_pylist() == [r[1] for r in records]
    assert back.column("_offset").to_pylist() == [r[2] for r in records]
    assert back.column("_kafka_timestamp").to_pylist() == [r[3] for r in records]
    assert back.column("_key").to_pylist() == [r[4] for r in records]
    assert back.column("_value").to_pylist() == [r[5] for r in records]
    expected_headers = [
        None if h is None else [{"key": k, "value": v} for k, v in h] for *_, h in records
    ]
    assert back.column("_headers").to_pylist() == expected_headers


def test_segment_header_round_trips() -> None:
    """A segment header keeps its sequence number and creation time."""
    assert decode_segment_header(encode_segment_header(42, 1_700_000_000_123)) == (
        42, 1_700_000_000_123,
    )


def _frame() -> bytes:
    batch = columns([("t", 0, 7, 1, None, b'{"a":1}', None)]).to_arrow()
    return encode_frame(FrameKind.RECORDS, encode_records(batch))


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


CORRUPT_FRAMES = [
    ("torn header", lambda f: f[: FRAME_HEADER_SIZE - 3], Truncated, "frame header"),
    ("torn body", lambda f: f[:-5], Truncated, "runs past the end"),
    ("flipped bit in body", lambda f: _flip(f, len(f) - 10), DecodeError, "checksum"),
    ("flipped bit in length", lambda f: _flip(f, 8), DecodeError, None),
    ("bad magic", lambda f: b"XXXX" + f[4:], DecodeError, "bad frame magic"),
    (
        "absurd length",
        lambda f: f[:8] + struct.pack("<I", MAX_FRAME_BYTES + 1) + f[12:],
        DecodeError,
        "exceeds",
    ),
    ("unknown kind", lambda f: f[:4] + b"\x09" + f[5:], DecodeError, "unknown frame kind"),
    ("zero-filled", lambda f: b"\x00" * len(f), DecodeError, "bad frame magic"),
]


@pytest.mark.parametrize(
    ("damage", "expected", "message"),
    [case[1:] for case in CORRUPT_FRAMES],
    ids=[case[0] for case in CORRUPT_FRAMES],
)
def test_corrupt_frames_are_rejected(damage, expected, message) -> None:  # type: ignore[no-untyped-def]
    """Each kind of damage raises the decode error recovery relies on, never records."""
    with pytest.raises(expected, match=message):
        decode_frame(memoryview(damage(_frame())), 0)


def test_a_torn_length_is_truncation_not_corruption() -> None:
    """A frame whose declared body runs past the file's end is reported as truncated."""
    frame = _frame()
    with pytest.raises(Truncated):
        decode_frame(memoryview(frame[: FRAME_HEADER_SIZE + 1]), 0)


@pytest.mark.parametrize(
    "damage",
    [lambda h: b"NOTAWAL!" + h[8:], lambda h: _flip(h, 12), lambda h: h[:20]],
    ids=["bad magic", "flipped bit", "torn"],
)
def test_bad_segment_headers_are_rejected(damage) -> None:  # type: ignore[no-untyped-def]
    """A segment header with wrong magic, a bad checksum or missing bytes does not decode."""
    header = encode_segment_header(3, 5)
    assert len(header) == SEGMENT_HEADER_SIZE
    with pytest.raises(DecodeError):
        decode_segment_header(damage(header))


def test_oversized_frame_bodies_are_refused_when_writing() -> None:
    """The writer never produces a frame that the reader would call absurd."""
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(FrameKind.SEAL, memoryview(bytearray(MAX_FRAME_BYTES + 1)))
