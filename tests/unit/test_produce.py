"""The test-event generator of `wal_bridge produce`: realistic, repeatable, malformed on demand."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import UTC, datetime
from itertools import islice

import pytest
from click.testing import CliRunner

from wal_bridge.cli import main
from wal_bridge.commands.produce import EVENT_TYPES, MALFORMED_KINDS, EventStream

START = datetime(2026, 1, 1, tzinfo=UTC)


def take(n: int, **kwargs: object) -> list:  # type: ignore[type-arg]
    return list(islice(EventStream(start=START, **kwargs), n))  # type: ignore[arg-type]


def test_events_have_the_documented_shape_and_are_keyed_by_user() -> None:
    """Every field is present with its type; the key is the user id."""
    for event in take(200, seed=1):
        data = json.loads(event.value)
        assert set(data) == {"event_id", "user_id", "session_id", "event_type", "amount",
                             "currency", "ts", "device"}
        assert uuid.UUID(data["event_id"]).version == 4
        assert event.key == data["user_id"].encode()
        assert data["event_type"] in EVENT_TYPES
        assert isinstance(data["amount"], float)
        assert (data["amount"] > 0) == (data["event_type"] in ("add_to_cart", "purchase"))
        assert data["currency"] in ("EUR", "USD", "GBP")
        assert datetime.fromisoformat(data["ts"]) >= START
        assert set(data["device"]) == {"os", "os_version", "app_version", "locale"}


def test_the_same_seed_gives_the_same_stream_and_another_seed_does_not() -> None:
    """--seed (with a fixed start time) makes a run repeatable byte for byte."""
    assert take(100, seed=42) == take(100, seed=42)
    assert take(100, seed=42) != take(100, seed=43)


def test_timestamps_move_forward() -> None:
    """Events are in time order, like a real stream."""
    stamps = [json.loads(e.value)["ts"] for e in take(300, seed=5)]
    assert stamps == sorted(stamps)


def _is_malformed(value: bytes, max_bytes: int) -> bool:
    if not value or len(value) > max_bytes:
        return True
    try:
        return not isinstance(json.loads(value), dict)
    except ValueError:  # not JSON, or not UTF-8
        return True


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.5])
def test_the_malformed_ratio_is_honoured_with_every_kind(ratio: float) -> None:
    """About that share is malformed, every kind appears, and each one really is malformed."""
    events = take(4000, seed=9, malformed_ratio=ratio, max_record_bytes=2048)
    kinds = Counter(e.kind for e in events)
    bad = sum(n for k, n in kinds.items() if k != "event")
    assert abs(bad / len(events) - ratio) < 0.03
    if ratio:
        assert set(kinds) - {"event"} == set(MALFORMED_KINDS)
    for event in events:
        assert _is_malformed(event.value, 2048) == (event.kind != "event"), event


def test_produce_needs_a_count_or_a_duration() -> None:
    """Without --count or --rate/--duration the command is a usage error (exit 2)."""
    result = CliRunner().invoke(main, ["produce"])
    assert result.exit_code == 2
    assert "--count" in result.output
    result = CliRunner().invoke(main, ["produce", "--duration", "5"])
    assert result.exit_code == 2
    assert "--rate" in result.output
