"""The Sink contract, one suite for every sink: the local directory always, and GCS on the
fake-gcs-server emulator (those cases are marked ``integration``, as they start it).

What each case asserts is what :class:`wal_bridge.sink.Sink` promises its users: the uploader
(create-only puts), the schema store (put, then read what another instance stored), ``audit``
(list, then a ranged read of each file's tail) and ``query`` (list, read). What is particular
to one sink is tested beside it, in ``tests/unit/sink/``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from wal_bridge.config import Destination
from wal_bridge.errors import (
    DestinationNotFoundError,
    ObjectConflictError,
    ObjectNotFoundError,
    SinkError,
)
from wal_bridge.sink import ObjectInfo, PutResult, Sink, file_crc32c
from wal_bridge.sink.gcs import GcsSink
from wal_bridge.sink.local import LocalSink

KINDS = ["local", pytest.param("gcs", marks=pytest.mark.integration)]
CONTENT = bytes(range(256)) * 40  # 10,240 bytes, every byte value, no two windows alike

MakeSink = Callable[..., Sink]


@pytest.fixture(params=KINDS)
def make_sink(request: pytest.FixtureRequest, tmp_path: Path) -> MakeSink:
    """A factory of sinks of one kind: ``make_sink()`` over a fresh, existing destination,
    ``make_sink(exists=False)`` over one that cannot be used: no such bucket, or a local root
    with a file in its way (a local root merely not made yet is an empty destination)."""
    if request.param == "local":
        def local(*, exists: bool = True) -> Sink:
            root = tmp_path / f"root-{uuid.uuid4().hex[:8]}"
            if not exists:
                root.write_bytes(b"a file where the destination's directory should be")
                root = root / "landed"
            sink = LocalSink(Destination("file", str(root), "raw"))
            if exists:
                sink.check()
            return sink

        return local
    gcs = request.getfixturevalue("gcs")

    def on_emulator(*, exists: bool = True) -> Sink:
        bucket = gcs.create_bucket() if exists else f"absent-{uuid.uuid4().hex[:16]}"
        return GcsSink(Destination("gs", bucket, "raw"), None, gcs.url)

    return on_emulator


@pytest.fixture
def sink(make_sink: MakeSink) -> Sink:
    """A sink of the kind under test over a fresh, empty destination."""
    return make_sink()


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"upload-{uuid.uuid4().hex[:8]}.parquet"
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------- put


def test_put_creates_the_object_with_the_file_s_bytes(sink: Sink, tmp_path: Path) -> None:
    """A first put is CREATED; the object then reads back as the file, and lists with its size."""
    key = "raw/2026-01-01/a.parquet"
    assert sink.put(key, _file(tmp_path, CONTENT)) is PutResult.CREATED
    assert sink.read(key) == CONTENT
    assert list(sink.list("raw/")) == [ObjectInfo(key, len(CONTENT))]


def test_putting_the_same_content_again_is_already_present(sink: Sink, tmp_path: Path) -> None:
    """A retried upload that had landed counts as shipped: ALREADY_PRESENT, one object."""
    key = "raw/2026-01-01/a.parquet"
    sink.put(key, _file(tmp_path, CONTENT))
    assert sink.put(key, _file(tmp_path, CONTENT)) is PutResult.ALREADY_PRESENT
    assert [info.key for info in sink.list("raw/")] == [key]


def test_other_content_under_an_existing_key_is_a_conflict_and_never_overwrites(
        sink: Sink, tmp_path: Path) -> None:
    """ObjectConflictError (permanent) names the key and both checksums; the first object stays."""
    key = "raw/2026-01-01/a.parquet"
    sink.put(key, _file(tmp_path, CONTENT))
    other = _file(tmp_path, CONTENT[::-1])
    with pytest.raises(ObjectConflictError) as caught:
        sink.put(key, other)
    assert caught.value.key == key
    assert caught.value.transient is False
    assert caught.value.local_crc32c == file_crc32c(other)
    assert caught.value.remote_crc32c == file_crc32c(_file(tmp_path, CONTENT))
    assert sink.read(key) == CONTENT


# ------------------------------------------------------------------------------- list


def test_list_returns_the_keys_under_a_prefix_in_key_order(sink: Sink, tmp_path: Path) -> None:
    """A prefix is a plain string prefix, not a folder; keys come in string order."""
    keys = ["raw/a/2.parquet", "raw/a-b/1.parquet", "raw/b.parquet", "rawer/c.parquet",
            "dead-letter/d.parquet", "_wal_bridge/raw/schema.json"]
    for n, key in enumerate(keys):
        sink.put(key, _file(tmp_path, CONTENT[:n + 1]))
    sizes = {key: n + 1 for n, key in enumerate(keys)}

    def listed(prefix: str) -> list[str]:
        infos = list(sink.list(prefix))
        assert all(info.size == sizes[info.key] for info in infos)
        return [info.key for info in infos]

    assert listed("raw/") == ["raw/a-b/1.parquet", "raw/a/2.parquet", "raw/b.parquet"]
    assert listed("raw") == ["raw/a-b/1.parquet", "raw/a/2.parquet", "raw/b.parquet",
                             "rawer/c.parquet"]
    assert listed("raw/a") == ["raw/a-b/1.parquet", "raw/a/2.parquet"]
    assert listed("raw/a/") == ["raw/a/2.parquet"]
    assert listed("_wal_bridge/raw/schema.json") == ["_wal_bridge/raw/schema.json"]
    assert listed("nothing/") == []
    assert sorted(listed("")) == sorted(keys)


# ------------------------------------------------------------------------------- reads


@pytest.fixture
def stored(sink: Sink, tmp_path: Path) -> str:
    """The key of an object holding CONTENT in ``sink``."""
    key = "raw/2026-01-01/stored.parquet"
    sink.put(key, _file(tmp_path, CONTENT))
    return key


@pytest.mark.parametrize(("start", "length", "expected"), [
    (len(CONTENT) - 8, 8, CONTENT[-8:]),  # a tail: where a Parquet footer's length is
    (0, 4, CONTENT[:4]),  # the head
    (1000, 300, CONTENT[1000:1300]),  # the middle
    (len(CONTENT) - 5, 100, CONTENT[-5:]),  # past the end: what there is
    (0, len(CONTENT) + 1, CONTENT),  # longer than the object
    (len(CONTENT), 10, b""),  # starting at the end
    (len(CONTENT) + 10, 10, b""),  # starting past the end
    (100, 0, b""),  # nothing asked for
], ids=["tail", "head", "middle", "past-the-end", "longer", "at-the-end", "after-the-end",
        "empty"])
def test_read_range_returns_the_bytes_asked_for_or_what_there_is(
        sink: Sink, stored: str, start: int, length: int, expected: bytes) -> None:
    """``read_range(key, start, length)`` is ``content[start:start + length]``."""
    assert sink.read_range(stored, start, length) == expected


def test_a_negative_start_or_length_is_refused(sink: Sink, stored: str) -> None:
    """A tail is asked for from its start, never with a negative (suffix) offset."""
    with pytest.raises(ValueError, match="start >= 0"):
        sink.read_range(stored, -8, 8)
    with pytest.raises(ValueError, match="length >= 0"):
        sink.read_range(stored, 0, -1)


def test_a_missing_object_is_object_not_found(sink: Sink, stored: str) -> None:
    """read and read_range of a key that is not there: ObjectNotFoundError, permanent, keyed."""
    missing = "raw/2026-01-01/missing.parquet"
    reads: list[Callable[[], object]] = [lambda: sink.read(missing),
                                          lambda: sink.read_range(missing, 0, 8),
                                          lambda: sink.read_range(missing, 0, 0)]
    for read in reads:
        with pytest.raises(ObjectNotFoundError) as caught:
            read()
        assert not isinstance(caught.value, DestinationNotFoundError)
        assert caught.value.key == missing
        assert caught.value.transient is False


def test_a_folder_is_not_an_object(sink: Sink, stored: str) -> None:
    """A key that is only the start of other keys ("raw/2026-01-01") reads as not found."""
    with pytest.raises(ObjectNotFoundError):
        sink.read("raw/2026-01-01")


# ------------------------------------------------------------------------------- no destination


def test_a_missing_destination_is_destination_not_found(make_sink: MakeSink) -> None:
    """No bucket (or a file where the local root should be): list and both reads raise
    DestinationNotFoundError, permanent, never ObjectNotFoundError, which would send an
    operator after the wrong thing."""
    sink = make_sink(exists=False)
    calls: list[Callable[[], object]] = [lambda: list(sink.list("raw/")),
                                         lambda: sink.read("raw/a.parquet"),
                                         lambda: sink.read_range("raw/a.parquet", 0, 8)]
    for call in calls:
        with pytest.raises(DestinationNotFoundError) as caught:
            call()
        assert not isinstance(caught.value, ObjectNotFoundError)
        assert caught.value.transient is False
        assert isinstance(caught.value, SinkError)
