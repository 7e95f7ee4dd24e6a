"""The WAL directory: the one module that names its files, and read-only readers of its state.

Layout of ``WAL_DIR``::

    LOCK                         flock held by the running process (its pid inside)
    instance.json                this instance's identity, fixed at first start
    state.json                   per partition, the next offset after what was shipped
    subscription.json            the topics the consumer last ran with (KAFKA_TOPIC)
    segments/N.open              the active segment, appended and fsynced per polled batch
    segments/N.sealed            sealed: immutable, its seal frame names its object key
    segments/N.torn              damaged tail bytes cut off an open segment at recovery, or
                                 bytes after a sealed segment's seal frame (N.2.torn, ... when
                                 a segment was cut more than once)
    segments/N.damaged           a damaged sealed segment as it was, before recovery rewrote
                                 it with the frames that verify (kept for reference; N.2.damaged
                                 ... when it was damaged again)
    segments/M.refetch.json      offsets the damaged frames of a segment held, to be read again
                                 from Kafka into segment M (see wal_bridge.refetch) ...
    segments/M.refetched.json    ... and, once read, what came back and what was lost (kept)
    outbox/N.parquet             converted, waiting for upload
    outbox/N.dead.parquet        the segment's dead letters, shipped with it
    outbox/N.status.json         upload attempts and last error of a segment that failed
    quarantine/N.open|sealed     a segment with damage before its end ...
    quarantine/N.reason.json     ... and why, where, and which offsets it held
    quarantine/N.replayed.json   what ``wal_bridge replay`` rebuilt from it; the files it set
    quarantine/*.replayed        aside keep their name with ``.replayed`` added

``N`` is the segment's sequence number, ten digits (see :mod:`wal_bridge.wal.segment`).

The writers (:mod:`~wal_bridge.wal.lock`, :mod:`~wal_bridge.wal.outbox`,
:mod:`~wal_bridge.wal.quarantine`, :mod:`~wal_bridge.wal.recovery`, :mod:`~wal_bridge.wal.log`)
take every path from :class:`WalLayout`. The readers here never take the lock and never write,
so ``inspect``, the benchmark and anything else may call them while a bridge runs; they cope
with files the bridge renames or deletes between listing and reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wal_bridge.wal.segment import OPEN, SEALED, TopicPartition, parse_segment_name, segment_name

REPLAYED_SUFFIX = ".replayed"


@dataclass(frozen=True)
class WalLayout:
    """Every path of one WAL directory, named once."""

    root: Path

    @property
    def lock(self) -> Path:
        return self.root / "LOCK"

    @property
    def identity(self) -> Path:
        return self.root / "instance.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def subscription(self) -> Path:
        return self.root / "subscription.json"

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def directories(self) -> tuple[Path, Path, Path, Path]:
        """The root and its three subdirectories, each created at open."""
        return self.root, self.segments, self.outbox, self.quarantine

    def segment(self, seq: int, state: str) -> Path:
        return self.segments / segment_name(seq, state)

    def torn(self, seq: int) -> Path:
        return self.segments / f"{seq:010d}.torn"

    def free_torn(self, seq: int) -> Path:
        """Where the next cut-off tail of segment ``seq`` is kept: ``N.torn``, or ``N.2.torn``
        and so on when earlier cuts are kept already."""
        path, n = self.torn(seq), 1
        while path.exists():
            n += 1
            path = self.segments / f"{seq:010d}.{n}.torn"
        return path

    def damaged(self, seq: int) -> Path:
        return self.segments / f"{seq:010d}.damaged"

    def free_damaged(self, seq: int, data: bytes) -> Path:
        """Where segment ``seq``'s damaged file ``data`` is kept: ``N.damaged``, or
        ``N.2.damaged`` and so on when an earlier, different one is kept already (the same
        bytes, from an interrupted recovery, go where they went)."""
        path, n = self.damaged(seq), 1
        while path.exists() and _read(path) != data:
            n += 1
            path = self.segments / f"{seq:010d}.{n}.damaged"
        return path

    def refetch(self, seq: int) -> Path:
        return self.segments / f"{seq:010d}.refetch.json"

    def refetched(self, seq: int) -> Path:
        return self.segments / f"{seq:010d}.refetched.json"

    def parquet(self, seq: int) -> Path:
        return self.outbox / f"{seq:010d}.parquet"

    def dead_letters(self, seq: int) -> Path:
        return self.outbox / f"{seq:010d}.dead.parquet"

    def upload_status(self, seq: int) -> Path:
        return self.outbox / f"{seq:010d}.status.json"

    def outbox_files(self, seq: int) -> tuple[Path, Path, Path]:
        """The Parquet file, the dead-letter file and the upload status of segment ``seq``."""
        return self.parquet(seq), self.dead_letters(seq), self.upload_status(seq)

    def quarantined(self, name: str) -> Path:
        """Where a segment file (or one of its outbox files) named ``name`` is set aside."""
        return self.quarantine / name

    def reason(self, seq: int) -> Path:
        return self.quarantine / f"{seq:010d}.reason.json"

    def replay_report(self, seq: int) -> Path:
        return self.quarantine / f"{seq:010d}.replayed.json"

    def replayed(self, path: Path) -> Path:
        """Where replay sets ``path`` (a quarantined file, or an outbox file of that segment)
        aside once it is rebuilt: in the quarantine, with ``.replayed`` added."""
        return self.quarantine / f"{path.name}{REPLAYED_SUFFIX}"

    def relative(self, path: Path) -> str:
        """``path`` as shown to people: relative to the WAL directory."""
        return path.relative_to(self.root).as_posix()

    # ----------------------------------------------------------------------------- readers

    def list_segments(self) -> list[tuple[int, str]]:
        """``(seq, state)`` of every segment file, in sequence order (a segment being renamed
        can be listed in both states)."""
        try:
            names = os.listdir(self.segments)
        except FileNotFoundError:
            return []
        return sorted(parsed for name in names if (parsed := parse_segment_name(name)) is not None)

    def read_segments(self) -> Iterator[tuple[int, str, bytes]]:
        """``(seq, state, bytes)`` of every segment, each read once, in sequence order.

        A segment sealed between listing and reading is read as sealed; one shipped meanwhile
        is left out.
        """
        seen: set[int] = set()
        for seq, listed in self.list_segments():
            if seq in seen:
                continue  # listed as open and as sealed while it was being renamed
            state = listed
            data = _read(self.segment(seq, state))
            if data is None and state == OPEN:  # sealed since the directory was listed
                state = SEALED
                data = _read(self.segment(seq, SEALED))
            if data is None:
                continue  # shipped since the directory was listed
            seen.add(seq)
            yield seq, state, data

    def torn_files(self) -> list[tuple[int, Path]]:
        """The torn tails recovery cut off and kept, by segment."""
        if not self.segments.is_dir():
            return []
        return [(int(p.name.split(".")[0]), p) for p in sorted(self.segments.glob("*.torn"))]

    def damaged_files(self) -> list[tuple[int, Path]]:
        """The damaged sealed segments recovery rewrote, as they were, by segment."""
        return [(int(p.name.split(".")[0]), p) for p in _glob(self.segments, "*.damaged")]

    def read_refetch(self) -> list[tuple[int, dict[str, Any]]]:
        """The pending re-fetches: ``(M, job)`` of every ``M.refetch.json`` (``of_segment``,
        ``ranges`` as offset runs, ``reason``, ``byte_offset``, ``created_at_ms``)."""
        out = []
        for path in _glob(self.segments, "*.refetch.json"):
            stem = path.name.split(".")[0]
            info = read_json(path)
            if stem.isdigit() and info is not None:
                out.append((int(stem), info))
        return out

    def read_refetched(self) -> list[tuple[int, dict[str, Any]]]:
        """The re-fetches done: ``(M, outcome)`` of every ``M.refetched.json`` (the job's
        fields, plus ``records``, ``lost`` and ``completed_at_ms``)."""
        return [(int(p.name.split(".")[0]), info) for p in _glob(self.segments, "*.refetched.json")
                if p.name.split(".")[0].isdigit() and (info := read_json(p)) is not None]

    def converted(self) -> set[int]:
        """Segments whose Parquet file is in the outbox."""
        return {int(stem) for p in _glob(self.outbox, "*.parquet")
                if (stem := p.name[: -len(".parquet")]).isdigit()}

    def outbox_segments(self) -> set[int]:
        """Segments with any Parquet file (data or dead letters) in the outbox."""
        return {int(p.name[:10]) for p in _glob(self.outbox, "*.parquet") if p.name[:10].isdigit()}

    def read_upload_status(self, seq: int) -> dict[str, Any] | None:
        """The upload attempts of segment ``seq`` (``attempts``, ``last_error``,
        ``last_attempt_ms``, ``stuck``), or None when no upload of it has failed."""
        return read_json(self.upload_status(seq))

    def read_shipped(self) -> ShippedState:
        """What ``state.json`` says was shipped (nothing, when there is no such file)."""
        raw = read_json(self.state) or {}
        return ShippedState(
            last_segment=int(raw.get("last_shipped_segment", 0)),
            next_offsets={(item["topic"], int(item["partition"])): int(item["next_offset"])
                          for item in raw.get("shipped", [])},
        )

    def read_identity(self) -> str | None:
        """This WAL's instance id, or None before its first start (or when unreadable)."""
        info = read_json(self.identity)
        return str(info["instance_id"]) if info and "instance_id" in info else None

    def read_subscription(self) -> tuple[str, ...] | None:
        """The topics this WAL's consumer last ran with, or None before the first assignment
        (or when unreadable)."""
        info = read_json(self.subscription)
        topics = info.get("topics") if info else None
        return tuple(str(t) for t in topics) if isinstance(topics, list) else None

    def read_quarantine(self) -> list[QuarantineEntry]:
        """Every quarantined segment: its reason file and, when still there, its file."""
        entries = []
        for reason_path in _glob(self.quarantine, "*.reason.json"):
            stem = reason_path.name.split(".")[0]
            if not stem.isdigit():
                continue
            info = read_json(reason_path) or {}
            name = str(info.get("file", ""))
            entries.append(QuarantineEntry(int(stem), info,
                                           self.quarantined(name) if name else None))
        return entries

    def read_replayed(self) -> list[tuple[Path, dict[str, Any]]]:
        """The reports ``wal_bridge replay`` left for the quarantined segments it rebuilt:
        ``(path, report)``, the report as :meth:`Wal.release_quarantined` wrote it."""
        return [(p, read_json(p) or {}) for p in _glob(self.quarantine, f"*{REPLAYED_SUFFIX}.json")]


@dataclass(frozen=True)
class ShippedState:
    """``state.json``: the highest segment shipped, and per partition the next offset after
    what was shipped."""

    last_segment: int = 0
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        shipped = [{"topic": t, "partition": p, "next_offset": n}
                   for (t, p), n in sorted(self.next_offsets.items())]
        return json.dumps({"last_shipped_segment": self.last_segment, "shipped": shipped},
                          indent=1).encode()


@dataclass(frozen=True)
class QuarantineEntry:
    """One quarantined segment: ``info`` is its reason file (``reason``, ``byte_offset``,
    ``ranges``, ``quarantined_at_ms``...); ``file`` its bytes' path, None when unknown."""

    seq: int
    info: dict[str, Any]
    file: Path | None

    def read(self) -> bytes | None:
        """The quarantined file's bytes, or None when it is gone."""
        return _read(self.file) if self.file is not None else None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when the file is missing or is not one."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _glob(directory: Path, pattern: str) -> list[Path]:
    return sorted(directory.glob(pattern)) if directory.is_dir() else []
