"""The project's BigQuery SQL, run by a GoogleSQL engine over files the real bridge landed.

The real bridge lands Parquet in the GCS emulator from the real broker. A few objects are then
landed a second time, as the design says a record can be (an instance that died between its
WAL fsync and its offset commit): one byte-for-byte under a second name, one re-sealed an hour
later (same records, later ``_ingested_at``), and one into an earlier date folder. The
BigQuery emulator (bigquery-emulator) loads those files from the GCS emulator with load jobs,
because it has no external tables, and with the explicit schema ``wal_bridge schema --format
bigquery`` prints (what Terraform creates the external table with): one table per date folder,
then ``events`` as their union with the folder's date as ``dt``, which is what the external
table's hive partitioning gives. On top of it the dedup view is created from the exact SQL in
``infra/main.tf``, and every BigQuery query the documentation shows (``sql`` blocks in
README.md and docs/, the ``example_query`` output) runs there and in DuckDB over the same
files; the answers must be equal, and none may be empty.

DuckDB runs the same text with a few mechanical rewrites (``DUCKDB_REWRITES``): table names,
and BigQuery functions DuckDB spells differently, as macros.
"""

# ruff: noqa: S608 - the SQL here is the project's own, from constants and the docs

from __future__ import annotations

import datetime as dt
import io
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import hcl2
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from confluent_kafka import Producer

from tests.support import BridgeProcess, bridge_env, read_gcs, wait_for

if TYPE_CHECKING:
    from conftest import BigQueryHandle, GcsHandle, KafkaHandle

ROOT = Path(__file__).resolve().parents[2]
RECORDS = 600
PARTITIONS = 3
# infra/variables.tf's defaults: the names the docs' queries use.
DATASET, TABLE, VIEW = "analytics_raw", "events", "events_dedup"
# The date folder the schema.md examples filter on; one landed object is copied into it.
DOCS_DATE = "2026-05-01"
RESEAL_DELAY = dt.timedelta(hours=1)

# The payload columns, fixed (SCHEMA_FILE) so that a string "id" goes to _extra, as schema.md's
# _extra example expects. device and tags are json columns: JSON text in a STRING column.
PAYLOAD_SCHEMA = [
    {"name": "id", "type": "int64"},
    {"name": "name", "type": "string"},
    {"name": "amount", "type": "float64"},
    {"name": "ts", "type": "timestamp"},
    {"name": "device", "type": "json"},
    {"name": "tags", "type": "json"},
]


def event(i: int) -> bytes:
    record: dict[str, Any] = {
        "id": f"x{i}" if i % 50 == 7 else i,  # a string id does not fit int64: kept in _extra
        "name": f"user-{i % 7}",
        "amount": i / 4,
        "ts": f"2026-05-01T12:{i % 60:02d}:{i % 60:02d}.123456Z",
        "device": {"os": ["ios", "web", "android"][i % 3], "v": i % 5},
        "tags": ["a", f"t{i % 4}"],
    }
    if i % 31 == 0:
        record["coupon"] = f"SAVE{i}"  # a field without a column: kept in _extra
    return json.dumps(record).encode()


def produce_events(bootstrap: str, topic: str) -> None:
    """RECORDS events round-robin over the partitions, each with a key; every fifth with
    headers (the one column that is an ARRAY of STRUCT)."""
    # Idempotence keeps each partition in the order produced, retries included: tests that
    # expect record i at a computed offset depend on it.
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all",
                         "enable.idempotence": True})
    for i in range(RECORDS):
        headers: list[tuple[str, str | bytes | None]] | None = (
            [("trace", f"t-{i}".encode()), ("empty", b"")] if i % 5 == 0 else None
        )
        producer.produce(topic, event(i), key=f"k{i}".encode(), partition=i % PARTITIONS,
                         headers=headers)
        producer.poll(0)
    assert producer.flush(60) == 0, "not every record was acknowledged"


# --- The SQL the project ships ---------------------------------------------------------------


def _heredoc(value: str) -> str:
    """The text of an HCL heredoc as python-hcl2 returns it (``"<<-SQL ... SQL"``)."""
    match = re.fullmatch(r'"?<<-?(\w+)\n(.*)\n\s*\1"?', value, re.DOTALL)
    assert match, f"not a heredoc: {value[:60]!r}"
    return textwrap.dedent(match.group(2)).strip()


def _hcl(name: str) -> dict[str, Any]:
    with (ROOT / "infra" / name).open(encoding="utf-8") as handle:
        parsed: dict[str, Any] = hcl2.load(handle)
        return parsed


def _unquote(key: str) -> str:
    return key.strip('"')


def view_sql(table_ref: str, lookback_days: int) -> str:
    """The dedup view's query from infra/main.tf, with its two locals substituted as Terraform
    would: ``events_table_ref``, and ``view_date_filter`` for ``dedup_view_lookback_days``."""
    main = _hcl("main.tf")
    views = []
    for resource in main["resource"]:
        for kind, named in resource.items():
            for name, body in named.items():
                if (_unquote(kind), _unquote(name)) == ("google_bigquery_table", "events_dedup"):
                    view = body["view"]
                    views.append(view[0] if isinstance(view, list) else view)
    assert len(views) == 1, "infra/main.tf has no google_bigquery_table.events_dedup view"
    query = _heredoc(views[0]["query"])
    (date_filter,) = [block["view_date_filter"] for block in main["locals"]
                      if "view_date_filter" in block]
    filter_match = re.fullmatch(
        r'\$\{var\.dedup_view_lookback_days > 0 \? "(.*)" : ""\}', date_filter.strip('"')
    )
    assert filter_match, f"view_date_filter changed shape: {date_filter}"
    filter_sql = filter_match.group(1).replace(
        "${var.dedup_view_lookback_days - 1}", str(lookback_days - 1)
    ) if lookback_days > 0 else ""
    assert "${local.events_table_ref}" in query
    assert "${local.view_date_filter}" in query
    query = query.replace("${local.events_table_ref}", table_ref)
    query = query.replace("${local.view_date_filter}", filter_sql)
    assert "${" not in query, query
    return query


@dataclass(frozen=True)
class DocQuery:
    """One BigQuery query shown to users: where it is, and its text."""

    where: str
    sql: str


def documented_queries() -> list[DocQuery]:
    """Every ``sql`` block of README.md and docs/*.md, and infra/outputs.tf's example_query."""
    found: list[DocQuery] = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for n, match in enumerate(re.finditer(r"^```sql\n(.*?)^```", text, re.DOTALL | re.M)):
            found.append(DocQuery(f"{path.relative_to(ROOT)} sql block {n + 1}",
                                  match.group(1).strip()))
    outputs = _hcl("outputs.tf")
    (example,) = [block[key]["value"] for block in outputs["output"] for key in block
                  if _unquote(key) == "example_query"]
    found.append(DocQuery("infra/outputs.tf example_query", _heredoc(example)))
    return found


# Table references in the docs (placeholders and Terraform locals), resolved per engine.
_TABLE_REFS = [
    (r"`PROJECT\.analytics_raw\.(events_dedup|events)`", r"\1"),
    (r"`\$\{local\.events_view_ref\}`", VIEW),
    (r"`\$\{local\.events_table_ref\}`", TABLE),
    (r"\bdataset\.(events_dedup|events)\b", r"\1"),
]


def for_bigquery(sql: str, project: str) -> str:
    for pattern, name in _TABLE_REFS:
        sql = re.sub(pattern, f"`{project}.{DATASET}.{name}`", sql)
    return sql


# BigQuery functions DuckDB names or types differently, as DuckDB macros of the same meaning.
DUCKDB_MACROS = {
    # JSON_VALUE: a scalar as STRING, NULL for an object or array.
    "bq_json_value": "(j, p) AS CASE WHEN json_type(json_extract(j, p)) IN ('OBJECT', 'ARRAY') "
                     "THEN NULL ELSE json_extract_string(j, p) END",
    # JSON_QUERY_ARRAY: the array's elements, each as JSON text.
    "bq_json_query_array": "(j) AS CAST(json_extract(j, '$[*]') AS VARCHAR[])",
    "bq_parse_json": "(j) AS json(j)",
    # DATE_SUB(date, INTERVAL n DAY): a DATE (DuckDB's date_sub counts parts between two dates).
    "bq_date_sub": "(d, i) AS CAST(d - i AS DATE)",
}
DUCKDB_REWRITES = [
    (r"\bJSON_VALUE\(", "bq_json_value("),
    (r"\bJSON_QUERY_ARRAY\(", "bq_json_query_array("),
    (r"\bPARSE_JSON\(", "bq_parse_json("),
    (r"\bDATE_SUB\(", "bq_date_sub("),
    (r"\bFORMAT\('", "printf('"),  # FORMAT's %s and %d are printf's
]


def for_duckdb(sql: str) -> str:
    for pattern, name in _TABLE_REFS:
        sql = re.sub(pattern, name, sql)
    for pattern, replacement in DUCKDB_REWRITES:
        sql = re.sub(pattern, replacement, sql)
    return sql


# --- Landing, duplicates, loading -------------------------------------------------------------


def land(kafka: KafkaHandle, gcs: GcsHandle, topic: str, bucket: str, tmp_path: Path) -> None:
    """Run the bridge until every produced record is a row under raw/; stop it."""
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(PAYLOAD_SCHEMA))
    env = bridge_env(bootstrap=kafka.bootstrap, topic=topic, destination=f"gs://{bucket}/raw",
                     wal_dir=tmp_path / "wal", emulator=gcs.url, BATCH_SIZE="100",
                     SCHEMA_FILE=str(schema_file))
    bridge = BridgeProcess(env, tmp_path / "bridge.log")
    produce_events(kafka.bootstrap, topic)
    bridge.start()
    try:
        client = gcs.client()
        wait_for(lambda: read_gcs(client, bucket, "raw/").rows >= RECORDS, 180,
                 f"{RECORDS} rows in gs://{bucket}/raw", interval=1.0,
                 on_timeout=lambda: bridge.log()[-4000:])
        assert bridge.terminate() == 0, bridge.log()[-4000:]
        assert read_gcs(client, bucket, "raw/").rows == RECORDS, "the bridge landed duplicates"
    finally:
        bridge.stop()


@dataclass(frozen=True)
class Duplicates:
    """What was landed a second time, by which path, and how many rows each holds."""

    copied: str  # byte-for-byte under a second name, same folder
    earlier_folder: str  # byte-for-byte into raw/dt=DOCS_DATE/
    resealed: str  # same records, _ingested_at one hour later, same folder
    rows: int  # rows landed a second time, in all
    today: int  # of which into the folders the originals are in
    earlier_folder_rows: int  # and into raw/dt=DOCS_DATE/


def land_duplicates(gcs: GcsHandle, bucket: str) -> Duplicates:
    client = gcs.client()
    store = client.bucket(bucket)
    landed = read_gcs(client, bucket, "raw/")
    assert len(landed.keys) >= 3, f"need three objects to duplicate, got {landed.keys}"
    first, second, third = landed.keys[:3]
    copy_name = first.replace(".parquet", "-again.parquet")
    store.copy_blob(store.blob(first), store, copy_name)
    earlier = f"raw/dt={DOCS_DATE}/{second.rsplit('/', 1)[1]}"
    store.copy_blob(store.blob(second), store, earlier)
    original = landed.tables[third]
    column = original.schema.get_field_index("_ingested_at")
    later = pc.add(original.column(column), pa.scalar(RESEAL_DELAY, pa.duration("ms")))
    resealed_table = original.set_column(column, original.schema.field(column),
                                         later.cast(original.schema.field(column).type))
    buffer = io.BytesIO()
    pq.write_table(resealed_table, buffer, compression="snappy")
    resealed = third.replace(".parquet", "-resealed.parquet")
    store.blob(resealed).upload_from_string(buffer.getvalue(), if_generation_match=0)
    rows = sum(landed.tables[k].num_rows for k in (first, second, third))
    today = landed.tables[first].num_rows + landed.tables[third].num_rows
    return Duplicates(copy_name, earlier, resealed, rows, today,
                      landed.tables[second].num_rows)


def table_schema(tmp_path: Path) -> list[dict[str, Any]]:
    """The table schema the project gives BigQuery (Terraform's ``table_schema_file``), as a
    user gets it: ``wal_bridge schema --format bigquery`` with the bridge's SCHEMA_FILE."""
    result = subprocess.run(
        [sys.executable, "-m", "wal_bridge.cli", "schema", "--format", "bigquery",
         "--schema-file", str(tmp_path / "schema.json"), "--wal-dir", str(tmp_path / "wal")],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    columns: list[dict[str, Any]] = json.loads(result.stdout)
    return columns


def load_into_bigquery(bigquery: BigQueryHandle, bucket: str, folders: Sequence[str],
                       columns: list[dict[str, Any]], files: pa.Schema) -> Any:
    """Load every date folder's files with a load job from gs://, and union them as
    ``events`` with the folder's date as ``dt``. Returns the client."""
    from google.cloud import bigquery as bq

    client = bigquery.client()
    client.create_dataset(DATASET, exists_ok=True)
    fields = [bq.SchemaField.from_api_repr(column) for column in columns]
    # Emulator bug (bigquery-emulator v0.8.1, Parquet loads): a TIMESTAMP(MILLIS) value is
    # taken as microseconds, so 2026-11-29 loads as 1970-01-21. Scaled back here, in the test;
    # the files are right (DuckDB and pyarrow read them as written).
    millis = [f.name for f in files if pa.types.is_timestamp(f.type) and f.type.unit == "ms"]
    fixes = ", ".join(f"TIMESTAMP_MILLIS(UNIX_MICROS({c})) AS {c}" for c in millis)
    parts = []
    for folder in folders:
        day = folder.removeprefix("dt=")
        staging = f"{bigquery.project}.{DATASET}.files_{day.replace('-', '')}"
        config = bq.LoadJobConfig(source_format=bq.SourceFormat.PARQUET, schema=fields,
                                  write_disposition=bq.WriteDisposition.WRITE_TRUNCATE)
        job = client.load_table_from_uri(f"gs://{bucket}/raw/{folder}/*.parquet", staging,
                                         job_config=config)
        job.result(timeout=120)
        (loaded,) = client.query(f"SELECT MAX(_ingested_at) FROM `{staging}`").result()
        assert loaded[0] < dt.datetime(1971, 1, 1, tzinfo=dt.UTC), (
            "the emulator reads TIMESTAMP(MILLIS) right now: remove the workaround")
        parts.append(f"SELECT * REPLACE ({fixes}), DATE '{day}' AS dt FROM `{staging}`")
    union = "\nUNION ALL\n".join(parts)
    client.query(f"CREATE TABLE `{bigquery.project}.{DATASET}.{TABLE}` AS\n{union}").result()
    return client


# --- Comparing answers ------------------------------------------------------------------------


def _normal(value: Any) -> Any:
    """One form for both engines' values: aware UTC datetimes, tuples for lists and dicts."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, list | tuple):
        return tuple(_normal(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _normal(v)) for k, v in value.items()))
    if isinstance(value, float):
        return round(value, 9)
    return value


def bigquery_rows(client: Any, sql: str) -> tuple[list[str], list[tuple[Any, ...]], list[str]]:
    result = client.query(sql).result()
    names = [f.name for f in result.schema]
    kinds = [f.field_type for f in result.schema]
    return names, [tuple(_normal(v) for v in row.values()) for row in result], kinds


def duckdb_rows(con: duckdb.DuckDBPyConnection, sql: str,
                kinds: Sequence[str]) -> tuple[list[str], list[tuple[Any, ...]]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description or []]
    rows = []
    for row in cursor.fetchall():
        # A BigQuery JSON value comes back parsed; DuckDB's JSON comes back as its text.
        rows.append(tuple(_normal(json.loads(v) if kind == "JSON" and isinstance(v, str) else v)
                          for v, kind in zip(row, kinds, strict=True)))
    return names, rows


def duckdb_over(files: Path) -> duckdb.DuckDBPyConnection:
    """``events`` over the downloaded raw/ tree with dt from the folder names, as the external
    table has it, plus the macros of DUCKDB_MACROS."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")  # CURRENT_DATE() and timestamps as in BigQuery
    glob = str(files / "raw" / "*" / "*.parquet").replace("'", "''")
    con.execute(f"CREATE VIEW {TABLE} AS SELECT * FROM read_parquet('{glob}', "
                "hive_partitioning = true, hive_types = {'dt': DATE})")
    for name, body in DUCKDB_MACROS.items():
        con.execute(f"CREATE MACRO {name}{body}")
    return con


def download(gcs: GcsHandle, bucket: str, into: Path) -> list[str]:
    keys = []
    for blob in gcs.client().list_blobs(bucket, prefix="raw/"):
        target = into / blob.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob.download_as_bytes())
        keys.append(blob.name)
    return sorted(keys)


# --- The test ---------------------------------------------------------------------------------


def test_documented_bigquery_sql_answers_as_duckdb_does_over_the_landed_files(
    kafka: KafkaHandle, gcs: GcsHandle, bigquery: BigQueryHandle, topic: str, bucket: str,
    tmp_path: Path,
) -> None:
    """Over files the bridge landed, with duplicates: the dedup view from infra/main.tf (both
    with and without its lookback filter) keeps one row per record, the first landed; and every
    documented query gives the same non-empty answer in the BigQuery emulator as in DuckDB."""
    land(kafka, gcs, topic, bucket, tmp_path)
    duplicates = land_duplicates(gcs, bucket)
    keys = download(gcs, bucket, tmp_path / "files")
    folders = sorted({key.split("/")[1] for key in keys})
    assert f"dt={DOCS_DATE}" in folders, folders
    assert len(folders) >= 2, folders
    columns = table_schema(tmp_path)
    # The schema is the files' own: the same columns, in file order.
    assert [c["name"] for c in columns] == pq.read_schema(tmp_path / "files" / keys[0]).names
    client = load_into_bigquery(bigquery, bucket, folders, columns,
                                pq.read_schema(tmp_path / "files" / keys[0]))
    con = duckdb_over(tmp_path / "files")
    table_ref = f"{bigquery.project}.{DATASET}.{TABLE}"

    # The raw table holds every landed row, duplicates included, in both engines.
    raw_count = RECORDS + duplicates.rows
    assert bigquery_rows(client, f"SELECT COUNT(*) FROM `{table_ref}`")[1] == [(raw_count,)]
    assert con.execute(f"SELECT COUNT(*) FROM {TABLE}").fetchall() == [(raw_count,)]

    identity = "_kafka_topic, _kafka_partition, _kafka_offset"
    for lookback in (0, 7):
        sql = view_sql(table_ref, lookback)
        # lookback 7: the filter Terraform writes with dedup_view_lookback_days = 7.
        name = VIEW if lookback == 0 else f"{VIEW}_lookback"
        client.query(f"CREATE VIEW `{bigquery.project}.{DATASET}.{name}` AS\n{sql}").result()
        con.execute(f"CREATE VIEW {name} AS {for_duckdb(view_sql(TABLE, lookback))}")
        # Two emulator bugs (v0.8.1) in the one nested column, _kafka_headers, an ARRAY of
        # STRUCT<key STRING, value BYTES>: the Parquet loader fills each struct's fields in Go
        # map order (random: the key lands in value about half the time), and BYTES inside a
        # RECORD come back raw rather than base64, which the client cannot decode. So each
        # header is compared as its two texts, smaller first; NULL headers read as [] in
        # BigQuery (an ARRAY is never NULL), hence the coalesce on DuckDB's side.
        pair = "{0}(h.key, SAFE_CONVERT_BYTES_TO_STRING(h.value)) AS {1}"
        bq_view = (
            f"SELECT * REPLACE (ARRAY(SELECT AS STRUCT {pair.format('LEAST', 'lo')}, "
            f"{pair.format('GREATEST', 'hi')} FROM UNNEST(_kafka_headers) AS h "
            f"WITH OFFSET AS i ORDER BY i) AS _kafka_headers) "
            f"FROM `{bigquery.project}.{DATASET}.{name}` ORDER BY {identity}"
        )
        duck_view = (
            "SELECT * REPLACE (list_transform(coalesce(_kafka_headers, []), lambda h: "
            "{'lo': least(h.key, decode(h.value)), 'hi': greatest(h.key, decode(h.value))}) "
            f"AS _kafka_headers) FROM {name} ORDER BY {identity}"
        )
        names, bq_rows, kinds = bigquery_rows(client, bq_view)
        duck_names, duck_rows = duckdb_rows(con, duck_view, kinds)
        assert names == duck_names
        if lookback == 0:
            # One row per produced record, each the first landed copy.
            assert len(bq_rows) == RECORDS
            ingested = names.index("_ingested_at")
            earliest = con.execute(
                f"SELECT min(_ingested_at) FROM {TABLE} GROUP BY {identity} ORDER BY {identity}"
            ).fetchall()
            assert [row[ingested] for row in bq_rows] == [_normal(r[0]) for r in earliest]
            # Between two copies with the same _ingested_at, the earlier date folder's.
            day = names.index("dt")
            kept = sum(row[day] == dt.date.fromisoformat(DOCS_DATE) for row in bq_rows)
            assert kept == duplicates.earlier_folder_rows
        else:
            # Today's folder is inside the window, so every record is still there once.
            assert len(bq_rows) == RECORDS
        assert bq_rows == duck_rows, f"the dedup view (lookback {lookback}) differs"

    queries = documented_queries()
    assert len(queries) >= 5, [q.where for q in queries]
    for query in queries:
        bq_sql = for_bigquery(query.sql, bigquery.project)
        names, bq_rows, kinds = bigquery_rows(client, bq_sql)
        duck_names, duck_rows = duckdb_rows(con, for_duckdb(query.sql), kinds)
        assert names == duck_names, query.where
        assert duck_rows, f"{query.where} finds nothing in the test data: {query.sql}"
        if re.search(r"ORDER BY _ingested_at DESC\s+LIMIT", query.sql):
            # Every row of a file shares its _ingested_at: which of the tied rows fill the
            # LIMIT is up to the engine. The order key must agree, and every row must be one
            # the query could return.
            ingested = names.index("_ingested_at")
            assert [r[ingested] for r in bq_rows] == [r[ingested] for r in duck_rows], query.where
            unlimited = re.sub(r"\s+LIMIT \d+\s*$", "", query.sql)
            allowed = set(duckdb_rows(con, for_duckdb(unlimited), kinds)[1])
            assert set(bq_rows) <= allowed, query.where
        else:
            assert bq_rows == duck_rows, f"{query.where} differs:\n{query.sql}"
        if re.search(r"\bAS duplicates\b", query.sql):
            # Landed twice into today's folder: the copy and the re-sealed file (the third
            # duplicate went to the DOCS_DATE folder, which this query does not read).
            assert bq_rows == [(duplicates.today,)], query.where
