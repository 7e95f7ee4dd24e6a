"""One schema per table: instances writing one destination agree on it through the sink."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from tests.fakes import FailingSink
from tests.unit.test_schema import segment
from wal_bridge.cli import main
from wal_bridge.config import Destination
from wal_bridge.conversion import Converter
from wal_bridge.errors import SchemaConflictError, SinkError
from wal_bridge.schema import (
    PINNED_NAME,
    Field,
    FieldType,
    PayloadSchema,
    SharedSchema,
)
from wal_bridge.sink.local import LocalSink

F = FieldType
DEST = "raw"


def instance(root: Path, wal: Path, schema_file: Path | None = None,
             sink: LocalSink | None = None) -> Converter:
    """One bridge instance's converter, sharing its schema through the sink at ``root``."""
    sink = sink or LocalSink(Destination("file", str(root), DEST))
    wal.mkdir(parents=True, exist_ok=True)
    shared = SharedSchema(sink, sink.destination.schema_key, wal)
    return Converter.open(1024, wal, schema_file, shared)


def test_two_instances_with_different_first_data_write_one_schema(tmp_path: Path) -> None:
    """The first instance to pin stores its schema; the second adopts it instead of its own,
    so files of both have one schema and the second's other fields land in _extra."""
    bucket = tmp_path / "bucket"
    first, second = instance(bucket, tmp_path / "wal-a"), instance(bucket, tmp_path / "wal-b")
    out_a = first.convert(*_one(b'{"id": 1, "name": "a"}'))
    out_b = second.convert(*_one(b'{"user": "u", "score": 2.5}'))
    assert out_a.data.schema.remove_metadata() == out_b.data.schema.remove_metadata()
    assert out_b.data.schema.names[:3] == ["id", "name", "_extra"]
    assert json.loads(out_b.data.column("_extra")[0].as_py()) == {"user": "u", "score": 2.5}
    stored = PayloadSchema.parse((bucket / "_wal_bridge" / DEST / "schema.json").read_bytes())
    assert stored == PayloadSchema((Field("id", F.INT64), Field("name", F.STRING)))
    # The adopted schema is pinned locally too: a restart without the sink keeps it.
    assert PayloadSchema.parse((tmp_path / "wal-b" / PINNED_NAME).read_bytes()) == stored
    assert [p.name for p in (tmp_path / "wal-b").iterdir()] == [PINNED_NAME]  # no staged file


def test_an_instance_started_later_adopts_the_stored_schema_before_its_first_file(
        tmp_path: Path) -> None:
    """A new instance with no pin converts its first segment with the destination's schema."""
    bucket = tmp_path / "bucket"
    instance(bucket, tmp_path / "wal-a").convert(*_one(b'{"a": true}'))
    late = instance(bucket, tmp_path / "wal-c")
    out = late.convert(*_one(b'{"b": 1}'))
    assert out.data.schema.names[:2] == ["a", "_extra"]


def test_a_schema_file_that_disagrees_with_the_stored_one_is_a_clear_error(
        tmp_path: Path) -> None:
    """SCHEMA_FILE must match what the destination holds; the message names both and the fix."""
    bucket = tmp_path / "bucket"
    instance(bucket, tmp_path / "wal-a").convert(*_one(b'{"id": 1}'))
    schema_file = tmp_path / "schema.json"
    schema_file.write_text('[{"name": "id", "type": "string"}]')
    other = instance(bucket, tmp_path / "wal-b", schema_file)
    with pytest.raises(SchemaConflictError) as caught:
        other.store.agreed()
    message = str(caught.value)
    assert "SCHEMA_FILE differs from the one stored for this destination" in message
    assert "column 1 is id string here, id int64 there" in message
    assert caught.value.exit_code == 2


def test_a_schema_file_that_agrees_is_published_and_accepted(tmp_path: Path) -> None:
    """The first instance with SCHEMA_FILE stores it; a second with the same file agrees."""
    bucket = tmp_path / "bucket"
    schema_file = tmp_path / "schema.json"
    schema_file.write_text('[{"name": "id", "type": "INTEGER", "mode": "NULLABLE"}]')
    for name in ("wal-a", "wal-b"):
        assert instance(bucket, tmp_path / name, schema_file).store.agreed() == PayloadSchema(
            (Field("id", F.INT64),))
    assert (bucket / "_wal_bridge" / DEST / "schema.json").exists()


def test_a_local_pin_that_disagrees_with_the_stored_one_is_a_clear_error(tmp_path: Path) -> None:
    """A schema pinned before sharing existed, differing from the stored one, stops the start."""
    bucket = tmp_path / "bucket"
    instance(bucket, tmp_path / "wal-a").convert(*_one(b'{"id": 1}'))
    (tmp_path / "wal-b").mkdir()
    (tmp_path / "wal-b" / PINNED_NAME).write_text('[{"name": "x", "type": "bool"}]')
    with pytest.raises(SchemaConflictError, match=r"remove .*wal-b/schema.json to adopt it"):
        instance(bucket, tmp_path / "wal-b").store.agreed()


def test_a_stored_object_that_is_not_a_schema_stops_with_one_clear_error(tmp_path: Path) -> None:
    """Garbage at the destination's schema key is a SchemaConflictError (exit code 2) naming
    the object and the fix, not a ValueError escaping as a traceback."""
    sink = LocalSink(Destination("file", str(tmp_path / "bucket"), DEST))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"{not a schema")
    sink.put(sink.destination.schema_key, garbage)
    shared = SharedSchema(sink, sink.destination.schema_key, tmp_path)
    with pytest.raises(SchemaConflictError) as caught:
        shared.publish(PayloadSchema((Field("id", F.INT64),)))
    assert str(caught.value).startswith(
        f"file://{tmp_path}/bucket/_wal_bridge/raw/schema.json is not a schema wal-bridge can "
        "read (not valid JSON: ")
    assert "with every instance stopped, fix it or remove it" in str(caught.value)
    assert caught.value.exit_code == 2


def test_an_unreachable_destination_defers_pinning_and_loses_nothing(tmp_path: Path) -> None:
    """A transient sink error fails the conversion (the sealer retries it); nothing is pinned
    until the destination has the schema, and the retry converts with it."""
    sink = FailingSink(tmp_path / "bucket", 1, transient=True)
    converter = instance(tmp_path / "bucket", tmp_path / "wal", sink=sink)
    with pytest.raises(SinkError):
        converter.convert(*_one(b'{"id": 1}'))
    assert not (tmp_path / "wal" / PINNED_NAME).exists()
    out = converter.convert(*_one(b'{"id": 1}'))
    assert out.data.column("id").to_pylist() == [1]
    assert (tmp_path / "wal" / PINNED_NAME).exists()


def test_schema_command_prints_the_stored_schema_for_bigquery(tmp_path: Path) -> None:
    """`wal_bridge schema` reads the destination's schema and prints BigQuery's JSON form:
    payload columns, _extra and the metadata columns, with BigQuery's types and modes."""
    bucket = tmp_path / "bucket"
    instance(bucket, tmp_path / "wal-a").convert(*_one(b'{"id": 1, "ctx": {"k": 1}}'))
    result = CliRunner().invoke(main, ["schema", "--destination", f"file://{bucket}",
                                       "--wal-dir", str(tmp_path / "empty")])
    assert result.exit_code == 0, result.output
    columns = json.loads(result.stdout)
    by_name = {c["name"]: (c["type"], c["mode"]) for c in columns}
    assert list(by_name)[:3] == ["id", "ctx", "_extra"]
    assert by_name["id"] == ("INTEGER", "NULLABLE")
    assert by_name["ctx"] == ("STRING", "NULLABLE")
    assert by_name["_kafka_timestamp"] == ("TIMESTAMP", "NULLABLE")
    assert by_name["_kafka_headers"] == ("RECORD", "REPEATED")
    assert "dt" not in by_name  # the hive partition column comes from the folders
    assert "schema from file://" in result.stderr


def test_schema_command_without_any_schema_says_what_to_do(tmp_path: Path) -> None:
    """No SCHEMA_FILE, nothing stored, nothing pinned: one line, exit 1."""
    result = CliRunner().invoke(main, ["schema", "--destination", f"file://{tmp_path}/b",
                                       "--wal-dir", str(tmp_path / "w")])
    assert result.exit_code == 1
    assert "no schema yet" in result.stderr
    assert "--schema-file" in result.stderr


def _one(value: bytes) -> tuple[list[pa.RecordBatch], object]:
    batch, seal = segment([value])
    return [batch], seal
