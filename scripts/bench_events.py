"""The benchmark's test events: ~230-byte JSON objects, deterministic for a given index.

Standard library only: the producer (project venv) and the WAL recovery benchmark both use it.
Each event is a flat JSON object of the kind a clickstream emits: identifiers, a type, a
timestamp, a few numbers and short strings. Field values vary with the index so that Parquet's
dictionary and run-length encodings do not make the files unrealistically small.
"""

from __future__ import annotations

import json

EVENT_TYPES = ("page_view", "add_to_cart", "checkout", "search", "login", "purchase")
COUNTRIES = ("DE", "FR", "US", "GB", "NL", "ES", "IT", "PL", "SE", "BR", "IN", "JP")
DEVICES = ("mobile", "desktop", "tablet")
BASE_TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _mix(i: int) -> int:
    """A cheap deterministic scramble of ``i`` (splitmix64's finaliser)."""
    z = (i + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)


def event(i: int) -> dict[str, object]:
    """Event number ``i`` as a dict (the same ``i`` always gives the same event)."""
    return json.loads(encode(i))


def encode(i: int) -> bytes:
    """Event number ``i`` as compact JSON bytes (formatted directly: json.dumps is 4x slower)."""
    h = _mix(i)
    return (
        f'{{"event_id":"{h:016x}","event_type":"{EVENT_TYPES[h % 6]}",'
        f'"user_id":{(h >> 8) % 5_000_000},"session_id":"s-{(h >> 16) & 0xFFFFFFFF:08x}",'
        f'"ts_ms":{BASE_TS_MS + i * 3 + (h >> 40) % 1000},"country":"{COUNTRIES[(h >> 4) % 12]}",'
        f'"device":"{DEVICES[(h >> 12) % 3]}","page":"/products/{(h >> 20) % 100_000}",'
        f'"amount":{((h >> 24) % 100_000) / 100},"quantity":{1 + (h >> 32) % 5},'
        f'"is_returning":{"true" if (h >> 36) & 1 else "false"}}}'
    ).encode()


def payloads(start: int, count: int) -> list[bytes]:
    return [encode(i) for i in range(start, start + count)]
