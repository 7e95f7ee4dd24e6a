"""Structural checks of the Terraform configuration in infra/.

`terraform validate` needs the Google provider, which CI cannot download; these tests parse the
configuration with python-hcl2 instead and pin the properties the design depends on: a private
bucket, the external table's URIs and hive partitioning, the view's dedup key, and IAM scoped to
the bucket and dataset. `terraform fmt -check` runs when the terraform CLI is on PATH.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[3]
INFRA = ROOT / "infra"
TF_FILES = sorted(INFRA.glob("*.tf"))

_META_KEYS = {"__comments__", "__is_block__", "__start_line__", "__end_line__"}
BASIC_ROLES = ("roles/owner", "roles/editor", "roles/viewer")


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _clean(node: Any) -> Any:
    """Drop python-hcl2's metadata keys and the quotes it keeps around strings and labels."""
    if isinstance(node, dict):
        return {_unquote(k): _clean(v) for k, v in node.items() if k not in _META_KEYS}
    if isinstance(node, list):
        return [_clean(item) for item in node]
    if isinstance(node, str):
        return _unquote(node)
    return node


def _load_all() -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for path in TF_FILES:
        with path.open(encoding="utf-8") as handle:
            parsed = _clean(hcl2.load(handle))
        for key, value in parsed.items():
            merged.setdefault(key, []).extend(value if isinstance(value, list) else [value])
    return merged


CONFIG = _load_all()


def _resources() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for block in CONFIG.get("resource", []):
        for rtype, named in block.items():
            for name, body in named.items():
                found[(rtype, name)] = body
    return found


RESOURCES = _resources()


def _named(kind: str) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for block in CONFIG.get(kind, []):
        merged.update(block)
    return merged


VARIABLES = _named("variable")
OUTPUTS = _named("output")
LOCALS: dict[str, Any] = {}
for _block in CONFIG.get("locals", []):
    LOCALS.update(_block)


def _block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """Return the single nested block `name` of a resource body."""
    blocks = body.get(name)
    assert isinstance(blocks, list), f"missing block {name}"
    assert len(blocks) == 1, f"expected one {name} block, found {len(blocks)}"
    block = blocks[0]
    assert isinstance(block, dict)
    return block


def _resolve(text: str) -> str:
    """Expand ${local.x} references and name the bucket BUCKET, as a reader of the plan would."""
    for _ in range(10):
        expanded = re.sub(r"\$\{local\.([a-z_]+)\}", lambda m: str(LOCALS[m.group(1)]), text)
        if expanded == text:
            break
        text = expanded
    return text.replace("${google_storage_bucket.landing.name}", "BUCKET")


def _one_resource(rtype: str) -> tuple[str, dict[str, Any]]:
    matches = [(name, body) for (kind, name), body in RESOURCES.items() if kind == rtype]
    assert len(matches) == 1, f"expected one {rtype}, found {[n for n, _ in matches]}"
    return matches[0]


def _external_table() -> dict[str, Any]:
    tables = [
        body
        for (kind, _), body in RESOURCES.items()
        if kind == "google_bigquery_table" and "external_data_configuration" in body
    ]
    assert len(tables) == 1
    return tables[0]


def _view() -> dict[str, Any]:
    views = [
        body
        for (kind, _), body in RESOURCES.items()
        if kind == "google_bigquery_table" and "view" in body
    ]
    assert len(views) == 1
    return views[0]


def test_configuration_files_exist() -> None:
    """The four conventional files of a root module are present."""
    names = {path.name for path in TF_FILES}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= names


def test_google_provider_is_six_or_newer() -> None:
    """The configuration requires hashicorp/google at version 6.0 or later."""
    terraform = CONFIG["terraform"][0]
    google = terraform["required_providers"][0]["google"]
    assert google["source"] == "hashicorp/google"
    assert re.search(r">=\s*6\.0", google["version"])


def test_bucket_is_private() -> None:
    """The bucket uses uniform bucket-level access and enforces public access prevention."""
    _, bucket = _one_resource("google_storage_bucket")
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["location"] == "${var.location}"


def test_bucket_versioning_is_an_explicit_decision() -> None:
    """Versioning is written down as off, with soft delete as the guard against deletes."""
    _, bucket = _one_resource("google_storage_bucket")
    assert _block(bucket, "versioning")["enabled"] is False
    soft_delete = _block(bucket, "soft_delete_policy")
    assert "var.soft_delete_retention_days" in soft_delete["retention_duration_seconds"]


def test_lifecycle_rules_are_optional_and_scoped_to_prefixes() -> None:
    """Each lifecycle rule is conditional on its variable and limited to raw/ or dead-letter/."""
    _, bucket = _one_resource("google_storage_bucket")
    rules = [d["lifecycle_rule"] for d in bucket.get("dynamic", []) if "lifecycle_rule" in d]
    assert len(rules) == 2
    prefixes = set()
    for rule in rules:
        assert "> 0" in rule["for_each"]
        condition = _block(_block(rule, "content"), "condition")
        prefixes.update(condition["matches_prefix"])
    assert prefixes == {"raw/", "dead-letter/"}


def test_external_table_reads_parquet_under_raw() -> None:
    """The external table reads Snappy Parquet from gs://BUCKET/raw/* with autodetect."""
    config = _block(_external_table(), "external_data_configuration")
    assert config["source_format"] == "PARQUET"
    assert config["autodetect"] is True
    assert [_resolve(uri) for uri in config["source_uris"]] == ["gs://BUCKET/raw/*"]


def test_hive_partitioning_uses_a_custom_date_key() -> None:
    """Hive partitioning is CUSTOM with a {dt:DATE} key right under raw/."""
    config = _block(_external_table(), "external_data_configuration")
    hive = _block(config, "hive_partitioning_options")
    assert hive["mode"] == "CUSTOM"
    prefix = _resolve(hive["source_uri_prefix"])
    assert prefix == "gs://BUCKET/raw/{dt:DATE}"
    source = _resolve(config["source_uris"][0])
    assert source.removesuffix("*") == prefix.removesuffix("{dt:DATE}")


def test_dead_letter_objects_stay_outside_the_table() -> None:
    """The dead-letter location is a sibling of raw/, so the table never reads rejected records."""
    dead_letter = _resolve(LOCALS["dead_letter_uri"])
    assert dead_letter == "gs://BUCKET/dead-letter"
    assert not dead_letter.startswith(_resolve(LOCALS["raw_uri"]))


def test_view_deduplicates_on_record_identity() -> None:
    """The view keeps one row per (_topic, _partition, _offset) with standard SQL."""
    view = _block(_view(), "view")
    assert view["use_legacy_sql"] is False
    query = " ".join(view["query"].split())
    assert "ROW_NUMBER() OVER ( PARTITION BY _topic, _partition, _offset " in query
    assert re.search(r"WHERE _dedup_rank = 1\b", query)
    assert "${local.events_table_ref}" in query
    assert LOCALS["events_table_ref"] == "${var.project_id}.${var.dataset_id}.${var.table_id}"


def test_object_admin_is_bound_on_the_bucket_only() -> None:
    """roles/storage.objectAdmin is granted through a bucket IAM member of the landing bucket."""
    grants = [
        (kind, body)
        for (kind, _), body in RESOURCES.items()
        if body.get("role") == "roles/storage.objectAdmin"
    ]
    assert len(grants) == 1
    kind, body = grants[0]
    assert kind == "google_storage_bucket_iam_member"
    assert body["bucket"] == "${google_storage_bucket.landing.name}"
    assert body["member"] == "${local.bridge_member}"
    assert LOCALS["bridge_member"] == "serviceAccount:${google_service_account.bridge.email}"


def test_project_level_grants_are_only_bigquery_job_user() -> None:
    """The only role granted on the project is roles/bigquery.jobUser, and it is optional."""
    project_grants = [
        body for (kind, _), body in RESOURCES.items() if kind.startswith("google_project_iam_")
    ]
    assert [body["role"] for body in project_grants] == ["roles/bigquery.jobUser"]
    assert project_grants[0]["count"] == "${var.grant_bigquery_roles ? 1 : 0}"


def test_data_viewer_is_bound_on_the_dataset_only() -> None:
    """roles/bigquery.dataViewer is granted on the dataset, not on the project."""
    grants = [
        (kind, body)
        for (kind, _), body in RESOURCES.items()
        if body.get("role") == "roles/bigquery.dataViewer"
    ]
    assert len(grants) == 1
    kind, body = grants[0]
    assert kind == "google_bigquery_dataset_iam_member"
    assert body["dataset_id"] == "${google_bigquery_dataset.raw.dataset_id}"


def test_iam_is_additive_and_never_basic_roles() -> None:
    """IAM uses non-authoritative *_iam_member resources and no owner, editor or viewer role."""
    iam_kinds = {kind for (kind, _) in RESOURCES if "_iam_" in kind}
    assert iam_kinds, "no IAM resources found"
    assert all(kind.endswith("_iam_member") for kind in iam_kinds)
    text = "\n".join(path.read_text(encoding="utf-8") for path in TF_FILES)
    for role in BASIC_ROLES:
        assert f'"{role}"' not in text


def test_service_account_key_is_opt_in_and_sensitive() -> None:
    """The key exists only when create_service_account_key is true and its output is sensitive."""
    _, key = _one_resource("google_service_account_key")
    assert key["count"] == "${var.create_service_account_key ? 1 : 0}"
    assert VARIABLES["create_service_account_key"]["default"] is False
    output = OUTPUTS["service_account_key"]
    assert output["sensitive"] is True
    assert "google_service_account_key.bridge" in output["value"]


def test_variables_have_descriptions_and_types() -> None:
    """Every variable carries a description and a type."""
    assert VARIABLES
    for name, body in VARIABLES.items():
        assert str(body.get("description", "")).strip(), f"{name} has no description"
        assert "type" in body, f"{name} has no type"


def test_free_form_variables_are_validated() -> None:
    """Variables taking names, locations or day counts have validation blocks."""
    must_validate = {
        "project_id",
        "location",
        "bucket_name",
        "dataset_id",
        "table_id",
        "view_id",
        "raw_retention_days",
        "soft_delete_retention_days",
        "service_account_id",
    }
    for name in must_validate:
        validations = VARIABLES[name].get("validation", [])
        assert validations, f"{name} has no validation"
        for validation in validations:
            assert f"var.{name}" in validation["condition"]
            assert validation["error_message"].strip()


def test_defaults_match_the_documented_names() -> None:
    """The dataset, table and view default to analytics_raw, events and events_dedup."""
    assert VARIABLES["dataset_id"]["default"] == "analytics_raw"
    assert VARIABLES["table_id"]["default"] == "events"
    assert VARIABLES["view_id"]["default"] == "events_dedup"


def test_every_reference_is_declared() -> None:
    """Each var.* and local.* used in the configuration is declared, and each variable is used."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in TF_FILES)
    used_vars = set(re.findall(r"\bvar\.([a-z0-9_]+)", text))
    used_locals = set(re.findall(r"\blocal\.([a-z0-9_]+)", text))
    assert used_vars <= set(VARIABLES), used_vars - set(VARIABLES)
    assert set(VARIABLES) <= used_vars, set(VARIABLES) - used_vars
    assert used_locals <= set(LOCALS), used_locals - set(LOCALS)


def test_outputs_cover_the_walkthrough() -> None:
    """Outputs give the bucket, DESTINATION, table and view ids, the account and a query."""
    for name in (
        "bucket",
        "destination",
        "table_id",
        "view_id",
        "service_account_email",
        "example_query",
    ):
        assert name in OUTPUTS, f"missing output {name}"
        assert str(OUTPUTS[name].get("description", "")).strip()
    assert _resolve(OUTPUTS["destination"]["value"]) == "gs://BUCKET/raw"
    query = OUTPUTS["example_query"]["value"]
    assert "${local.events_view_ref}" in query
    assert "WHERE dt = CURRENT_DATE()" in query


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform CLI is not on PATH")
def test_terraform_fmt_check_passes() -> None:
    """terraform fmt -check -recursive reports no unformatted file in infra/."""
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(INFRA)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
