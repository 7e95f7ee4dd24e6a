"""The benchmark's Avro events: the same fields and values as its JSON events."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import fastavro

from scripts.bench_avro import AVRO_SCHEMA
from scripts.bench_events import event


def test_the_avro_schema_has_every_json_field_in_order_and_round_trips_the_values() -> None:
    """Each JSON field is an Avro field, in the same order; fastavro writes and reads back the
    same values (ts_ms as the instant its milliseconds name)."""
    schema = fastavro.parse_schema(AVRO_SCHEMA)
    for i in range(0, 5000, 37):
        data = event(i)
        assert [f["name"] for f in AVRO_SCHEMA["fields"]] == list(data)
        body = io.BytesIO()
        fastavro.schemaless_writer(body, schema, data)
        body.seek(0)
        back = fastavro.schemaless_reader(body, schema)
        ts_ms = data["ts_ms"]
        assert isinstance(ts_ms, int)
        assert back == {**data, "ts_ms": datetime.fromtimestamp(ts_ms / 1000, tz=UTC)}
