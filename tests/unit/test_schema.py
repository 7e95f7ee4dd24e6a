"""The payload schema: the file format, SCHEMA_FILE errors, inference, pinning and restarts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from wal_bridge.cli import main
from wal_bridge.conversion import Converter
from wal_bridge.errors import ConfigError
from wal_bridge.schema import (
    JSON_TYPES,
    PINNED_NAME,
    Field,
    FieldType,
    PayloadSchema,
    SchemaError,
    SchemaStore,
    infer,
)
from wal_bridge.wal.codec import RecordColumns
from wal_bridge.wal.segment import SealInfo

F = FieldType


def segment(values: list[bytes], first_offset: int = 0) -> tuple[pa.RecordBatch, SealInfo]:
    n = len(values)
    offsets = list(range(first_offset, first_offset + n))
    batch = RecordColumns(["events"] * n, [0] * n, offsets, [1_700_000_000_000] * n, [None] * n,
                          values, [None] * n).to_arrow()
    return batch, SealInfo(1, "test", "raw/k.parquet", "dead-letter/k.parquet",
                           1_700_000_100_000, n, {})


def write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "schema.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


# ------------------------------------------------------------------------------- the format


def test_a_schema_file_lists_columns_in_order_with_types_and_bigquery_aliases(
    tmp_path: Path,
) -> None:
    """Names keep their order; BigQuery's type names, NULLABLE mode and descriptions are
    accepted, so `bq show --schema` output of a flat table can be reused."""
    path = write(tmp_path, [
        {"name": "id", "type": "INTEGER", "mode": "NULLABLE", "description": "event id"},
        {"name": "amount", "type": "FLOAT64"},
        {"name": "ok", "type": "boolean"},
        {"name": "at", "type": "timestamp"},
        {"name": "who", "type": "STRING"},
        {"name": "ctx", "type": "json"},
    ])
    store = SchemaStore.open(tmp_path / "wal", path)
    assert store.schema == PayloadSchema((
        Field("id", F.INT64), Field("amount", F.FLOAT64), Field("ok", F.BOOL),
        Field("at", F.TIMESTAMP), Field("who", F.STRING), Field("ctx", F.JSON),
    ))
    assert store.source == "SCHEMA_FILE"


def test_the_file_format_round_trips() -> None:
    """What the bridge writes when it pins a schema parses back to the same schema."""
    schema = PayloadSchema(tuple(Field(f"c_{t.value}", t) for t in FieldType
                                 if t in JSON_TYPES))
    assert PayloadSchema.parse(schema.to_json()) == schema
    assert PayloadSchema.parse(PayloadSchema(()).to_json()) == PayloadSchema(())


def test_registry_types_round_trip_only_where_nested_is_allowed() -> None:
    """A registry schema (records, arrays, decimals) parses back with nested=True only."""
    inner = (Field("when", FieldType.TIMESTAMP), Field("tags", FieldType.STRING, "REPEATED"))
    schema = PayloadSchema((
        Field("rec", FieldType.RECORD, fields=inner),
        Field("amount", FieldType.NUMERIC, precision=10, scale=2),
        Field("big", FieldType.BIGNUMERIC, precision=60, scale=30),
        *(Field(f"c_{t.value}", t) for t in FieldType if t is not FieldType.RECORD),
    ))
    assert PayloadSchema.parse(schema.to_json(), nested=True) == schema
    assert schema.arrow_fields()[0].type == pa.struct([
        pa.field("when", pa.timestamp("us", tz="UTC")), pa.field("tags", pa.list_(pa.string()))])
    assert schema.arrow_fields()[1].type == pa.decimal128(10, 2)
    assert schema.arrow_fields()[2].type == pa.decimal256(60, 30)
    assert not schema.flat
    with pytest.raises(SchemaError, match="unknown key 'fields'"):
        PayloadSchema.parse(schema.to_json())


BAD_FILES = [
    ("{not json", "not valid JSON"),
    ('{"name": "id", "type": "int64"}', "expected a JSON list"),
    ('["id"]', "column 1: expected an object"),
    ('[{"type": "int64"}]', "column 1: 'name' must be a string"),
    ('[{"name": "id", "type": "decimal"}]', "unknown type 'decimal'"),
    ('[{"name": "id"}]', "unknown type None"),
    ('[{"name": "user-id", "type": "string"}]', "letters, digits or underscores"),
    ('[{"name": "_kafka_offset", "type": "int64"}]', "reserved for the bridge's own columns"),
    ('[{"name": "DT", "type": "string"}]', "reserved"),
    ('[{"name": "_TABLE_x", "type": "string"}]', "_TABLE_, a prefix BigQuery reserves"),
    ('[{"name": "_partitiontime", "type": "string"}]', "_PARTITION, a prefix BigQuery reserves"),
    ('[{"name": "_ColIdentifier1", "type": "string"}]', "_COLIDENTIFIER, a prefix"),
    ('[{"name": "Id", "type": "string"}, {"name": "id", "type": "int64"}]',
     "column 2 ('id'): same name as 'Id'"),
    ('[{"name": "tags", "type": "string", "mode": "REPEATED"}]', "mode 'REPEATED'"),
    ('[{"name": "id", "type": "int64", "default": 0}]', "unknown key 'default'"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES, ids=[m for _, m in BAD_FILES])
def test_a_bad_schema_file_is_one_config_error_line_naming_schema_file(
    tmp_path: Path, text: str, message: str
) -> None:
    """Every problem with SCHEMA_FILE is a single-line ConfigError that names the variable,
    the file and what is wrong."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        SchemaStore.open(tmp_path / "wal", path)
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"SCHEMA_FILE (--schema-file)='{path}': ")
    assert message in line
    assert caught.value.exit_code == 2


def test_an_unreadable_schema_file_is_a_config_error(tmp_path: Path) -> None:
    """A SCHEMA_FILE that cannot be read (here a directory) is reported like a bad one."""
    with pytest.raises(ConfigError, match=r"^SCHEMA_FILE \(--schema-file\)=.*cannot read it"):
        SchemaStore.open(tmp_path / "wal", tmp_path)


def test_wal_bridge_run_with_a_bad_schema_file_exits_2_with_one_line(tmp_path: Path) -> None:
    """The service refuses to start on a bad SCHEMA_FILE: one line on stderr, exit code 2."""
    path = write(tmp_path, '[{"name": "id", "type": "uuid"}]')
    env = {"DESTINATION": f"file://{tmp_path / 'landed'}", "WAL_DIR": str(tmp_path / "wal"),
           "SCHEMA_FILE": str(path), "METRICS_PORT": "0", "LOG_LEVEL": "error"}
    result = CliRunner().invoke(main, ["run"], env=env)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("wal_bridge: error: SCHEMA_FILE (--schema-file)=")
    assert "unknown type 'uuid'" in lines[-1]


# ------------------------------------------------------------------------------- inference


INFERRED = [
    ([{"a": 1}, {"a": 2}], F.INT64),
    ([{"a": 1}, {"a": 1.5}], F.FLOAT64),
    ([{"a": 1.0}], F.FLOAT64),
    ([{"a": True}, {"a": None}], F.BOOL),
    ([{"a": "x"}], F.STRING),
    ([{"a": "2024-05-01T12:00:00Z"}, {"a": "2024-05-01 12:00:00.5+02:00"}], F.TIMESTAMP),
    ([{"a": "2024-05-01T12:00:00Z"}, {"a": "soon"}], F.STRING),
    ([{"a": "2024-02-30T00:00:00Z"}], F.STRING),
    ([{"a": None}], F.JSON),
    ([{"a": {"b": 1}}], F.JSON),
    ([{"a": [1, 2]}], F.JSON),
    ([{"a": 1}, {"a": "x"}], F.JSON),
    ([{"a": True}, {"a": 1}], F.JSON),
    ([{"a": 2**63}], F.JSON),
]


@pytest.mark.parametrize(("records", "expected"), INFERRED,
                         ids=[f"{r}->{t.value}" for r, t in INFERRED])
def test_the_first_data_decides_each_column_type(records: list[dict[str, object]],
                                                 expected: FieldType) -> None:
    """A column gets the narrowest type every value of the first data fits; null-only, nested,
    mixed or out-of-range values make a json column, which takes anything later."""
    assert infer(records) == PayloadSchema((Field("a", expected),))


def test_inference_keeps_first_appearance_order_and_skips_unusable_names() -> None:
    """Fields become columns in order of appearance; names BigQuery or the bridge cannot use,
    and a second spelling differing only in case, get no column (they land in _extra)."""
    schema = infer([{"b": 1, "a": 1, "user-id": 1, "_kafka_topic": "x", "dt": "d"},
                    {"c": 1, "B": 2, "": 1}])
    assert schema.names == ("b", "a", "c")


# ------------------------------------------------------------------------------- pinning


def test_the_first_data_schema_is_pinned_in_the_wal_directory(tmp_path: Path) -> None:
    """Without SCHEMA_FILE, converting the first segment writes WAL_DIR/schema.json, and it
    holds the schema every later segment is converted with."""
    converter = Converter.open(1024, tmp_path)
    assert converter.store.schema is None
    batch, seal = segment([b'{"id": 1, "name": "a"}', b'{"id": 2, "name": "b", "x": true}'])
    converter.convert([batch], seal)
    pinned = PayloadSchema.parse((tmp_path / PINNED_NAME).read_bytes())
    assert pinned == PayloadSchema((Field("id", F.INT64), Field("name", F.STRING),
                                    Field("x", F.BOOL)))
    assert converter.store.schema == pinned
    assert [p.name for p in tmp_path.iterdir()] == [PINNED_NAME]  # no temp file left


def test_a_restart_reuses_the_pinned_schema_and_new_fields_never_change_it(
    tmp_path: Path,
) -> None:
    """After a restart the pinned schema is read back; data with other fields and types does
    not re-pin it: new fields go to _extra, values that do not fit too."""
    batch, seal = segment([b'{"id": 1}'])
    Converter.open(1024, tmp_path).convert([batch], seal)
    before = (tmp_path / PINNED_NAME).read_bytes()

    again = Converter.open(1024, tmp_path)
    assert again.store.source == "pinned"
    batch, seal = segment([b'{"id": "one", "extra": [1]}'], first_offset=1)
    out = again.convert([batch], seal)
    assert (tmp_path / PINNED_NAME).read_bytes() == before
    assert out.data.schema.names[:2] == ["id", "_extra"]
    assert out.data.column("id").to_pylist() == [None]
    assert json.loads(out.data.column("_extra")[0].as_py()) == {"extra": [1], "id": "one"}


def test_a_schema_file_wins_and_nothing_is_pinned(tmp_path: Path) -> None:
    """With SCHEMA_FILE the columns are the file's, whatever the data, and WAL_DIR gets no
    schema.json."""
    path = write(tmp_path, [{"name": "id", "type": "string"}])
    wal = tmp_path / "wal"
    wal.mkdir()
    converter = Converter.open(1024, wal, path)
    batch, seal = segment([b'{"id": "a", "n": 1}'])
    out = converter.convert([batch], seal)
    assert out.data.column("id").to_pylist() == ["a"]
    assert out.data.column("_extra").to_pylist() == ['{"n":1}']
    assert not (wal / PINNED_NAME).exists()


def test_a_damaged_pinned_schema_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    """A pinned schema.json that no longer parses is a ConfigError naming the file, never
    silently replaced by a new inference."""
    (tmp_path / PINNED_NAME).write_text("[{")
    with pytest.raises(ConfigError, match=r"schema\.json .*pinned from the first data"):
        SchemaStore.open(tmp_path)


def test_nothing_is_pinned_while_no_record_decodes(tmp_path: Path) -> None:
    """A first segment of bad records pins nothing: the schema comes from the first segment
    holding a JSON object."""
    converter = Converter.open(1024, tmp_path)
    batch, seal = segment([b"not json", b"[1]"])
    out = converter.convert([batch], seal)
    assert out.data.num_rows == 0
    assert out.dead_letters.num_rows == 2
    assert not (tmp_path / PINNED_NAME).exists()
    batch, seal = segment([b'{"id": 7}'], first_offset=2)
    converter.convert([batch], seal)
    assert converter.store.schema == PayloadSchema((Field("id", F.INT64),))
