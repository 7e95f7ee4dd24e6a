"""``wal_bridge schema``: the table's schema, for the external table and for SCHEMA_FILE.

Every instance writing one destination uses one payload schema: SCHEMA_FILE, or the first
data's, stored beside the data (``_wal_bridge/{prefix}/schema.json``) by the first instance
and adopted by the others (docs/schema.md). This prints it, as a BigQuery table schema (the
file Terraform's ``table_schema_file`` and ``bq mk --schema`` take) or in the SCHEMA_FILE
format, from the first of: ``--schema-file``, the destination's stored schema, the schema
pinned in ``--wal-dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wal_bridge.commands.common import LOGGING, STORAGE, build_settings, settings_options, specs
from wal_bridge.config import Settings
from wal_bridge.errors import WalBridgeError
from wal_bridge.schema import PINNED_NAME, PayloadSchema, SchemaError, SchemaStore


def find_schema(settings: Settings) -> tuple[PayloadSchema, str]:
    """The schema in force for ``settings`` and where it was found.

    Raises ConfigError for a bad SCHEMA_FILE, SinkError when the destination cannot be read,
    WalBridgeError when no schema exists yet.
    """
    if settings.schema_file is not None:
        store = SchemaStore.open(settings.wal_dir, settings.schema_file)
        assert store.schema is not None
        return store.schema, f"SCHEMA_FILE {settings.schema_file}"
    looked = []
    if settings.destination is not None:
        from wal_bridge.sink import open_sink

        sink = open_sink(settings)
        key = settings.destination.schema_key
        url = settings.destination.url(key)
        if any(info.key == key for info in sink.list(key)):
            try:
                return PayloadSchema.parse(sink.read(key), nested=True), url
            except SchemaError as exc:
                raise WalBridgeError(f"{url}: {exc}") from None
        looked.append(f"stored at {url}")
    pinned = settings.wal_dir / PINNED_NAME
    if pinned.exists():
        store = SchemaStore.open(settings.wal_dir)
        assert store.schema is not None
        return store.schema, str(pinned)
    looked.append(f"pinned in {pinned}")
    raise WalBridgeError(
        f"no schema yet (none {' nor '.join(looked)}): it is fixed when the first data is "
        "converted; run the bridge until then, or write a SCHEMA_FILE and pass --schema-file")


@click.command("schema")
@settings_options(specs("destination", "wal_dir", "schema_file", "key_format",
                         "schema_registry_url", *STORAGE, *LOGGING))
@click.option("--format", "output", type=click.Choice(["bigquery", "wal-bridge"]),
              default="bigquery", show_default=True,
              help="bigquery: the external table's schema (every column, as bq and Terraform "
                   "take it); wal-bridge: the payload columns in the SCHEMA_FILE format.")
@click.option("--dead-letter", is_flag=True,
              help="The dead-letter files' columns instead (bigquery format only).")
@click.option("--output", "-o", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output.")
def schema(output: str, dead_letter: bool, path: Path | None, **values: Any) -> None:
    """Print the table's schema: SCHEMA_FILE, else the destination's, else WAL_DIR's."""
    from wal_bridge import bigquery

    settings = build_settings(values)
    if dead_letter:
        if output != "bigquery":
            raise click.UsageError("--dead-letter goes with --format bigquery")
        text, source = bigquery.to_json(bigquery.dead_letter_schema()), "fixed"
    else:
        payload, source = find_schema(settings)
        decoded_key = settings.key_format != "raw"
        text = (bigquery.to_json(bigquery.table_schema(payload, decoded_key=decoded_key))
                if output == "bigquery"
                else payload.to_json().decode())
    if path is None:
        click.echo(text, nl=False)
    else:
        path.write_text(text, encoding="utf-8")
    click.echo(f"wal_bridge: schema from {source}", err=True)
