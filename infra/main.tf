# The cloud side of wal-bridge: a private bucket the bridge writes Parquet into, a BigQuery
# external table over it with the date folder as a hive partition, a view that removes the
# rare duplicate, and the service account the bridge runs as. docs/cloud.md walks through it.

locals {
  # Where the bridge writes: DESTINATION=gs://BUCKET/raw. Objects land as
  # raw/dt=YYYY-MM-DD/{timestamp}-{instance}-{segment}.parquet; BigQuery reads a hive partition
  # only from a folder named key=value, so the date folder carries its key.
  raw_uri         = "gs://${google_storage_bucket.landing.name}/raw"
  dead_letter_uri = "gs://${google_storage_bucket.landing.name}/dead-letter"

  # An explicit schema for the external table (table_schema_file), or BigQuery's detection.
  explicit_schema = var.table_schema_file != ""

  bridge_member = "serviceAccount:${google_service_account.bridge.email}"

  events_table_ref = "${var.project_id}.${var.dataset_id}.${var.table_id}"
  events_view_ref  = "${var.project_id}.${var.dataset_id}.${var.view_id}"

  view_date_filter = var.dedup_view_lookback_days > 0 ? "WHERE dt >= DATE_SUB(CURRENT_DATE(), INTERVAL ${var.dedup_view_lookback_days - 1} DAY)" : ""

  apis = var.enable_apis ? toset([
    "bigquery.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "storage.googleapis.com",
  ]) : toset([])
}

resource "google_project_service" "apis" {
  for_each = local.apis

  service = each.value
  # Other workloads in the project may use these APIs too: destroying this stack must not
  # switch them off.
  disable_on_destroy = false
}

# --- Storage -------------------------------------------------------------------------------

resource "google_storage_bucket" "landing" {
  name          = var.bucket_name
  location      = var.location
  storage_class = "STANDARD"
  labels        = var.labels
  force_destroy = var.force_destroy

  # Private: IAM alone decides access (no per-object ACLs), and no binding can ever make an
  # object public (allUsers / allAuthenticatedUsers are refused).
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Versioning stays off. The bridge never overwrites: every upload is create-only
  # (if_generation_match=0) under a name fixed at seal time, so there is no older generation
  # to keep. Against an accidental delete, soft delete below keeps deleted objects restorable
  # for soft_delete_retention_days without doubling storage for every object.
  versioning {
    enabled = false
  }

  soft_delete_policy {
    retention_duration_seconds = var.soft_delete_retention_days * 86400
  }

  # raw_retention_days ages out data files only. The bridge keeps the table's schema at
  # _wal_bridge/raw/schema.json, outside raw/ on purpose: this rule never deletes it, and the
  # table's source URIs never read it as data.
  dynamic "lifecycle_rule" {
    for_each = var.raw_retention_days > 0 ? [var.raw_retention_days] : []
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = ["raw/"]
      }
      action {
        type = "Delete"
      }
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.dead_letter_retention_days > 0 ? [var.dead_letter_retention_days] : []
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = ["dead-letter/"]
      }
      action {
        type = "Delete"
      }
    }
  }

  depends_on = [google_project_service.apis]
}

# --- BigQuery ------------------------------------------------------------------------------

resource "google_bigquery_dataset" "raw" {
  dataset_id  = var.dataset_id
  location    = var.location
  description = "wal-bridge: Parquet landed in gs://${var.bucket_name}/raw/, read in place."
  labels      = var.labels

  # Access is granted with google_bigquery_dataset_iam_member below; no authoritative
  # access blocks here, or the two would fight over the dataset's ACL.

  depends_on = [google_project_service.apis]
}

# Every landed row, duplicates included. Nothing is copied into BigQuery: each query reads the
# Parquet files, and a filter on dt (the date folder) limits it to those folders.
#
# The schema: Parquet describes itself, so with table_schema_file empty BigQuery takes the
# columns from one of the files when the table is created, and a later file with more columns
# is not seen until the table is replaced. With table_schema_file set, the table gets that
# schema instead (BigQuery accepts an explicit schema that overrides the one inferred from
# Parquet: cloud.google.com/bigquery/docs/schema-detect). It is the table's own schema, the
# top-level `schema` argument: the BigQuery API reference disallows ExternalDataConfiguration's
# own schema for Parquet, whatever the provider's note about that field says. The dt
# partition key is not in the file; BigQuery appends it to the schema it returns, and
# ignore_auto_generated_schema keeps that server-added column from showing as a diff (without
# it, the provider plans a replacement on every apply, since a column "dropped" from an
# external table forces a new table).
resource "google_bigquery_table" "events" {
  count = var.create_tables ? 1 : 0

  dataset_id          = google_bigquery_dataset.raw.dataset_id
  table_id            = var.table_id
  description         = "Parquet files under ${local.raw_uri}/, one hive partition (dt) per date folder. Rows may repeat; query ${var.view_id} for one row per record."
  labels              = var.labels
  deletion_protection = var.deletion_protection

  schema                       = local.explicit_schema ? file(var.table_schema_file) : null
  ignore_auto_generated_schema = local.explicit_schema

  external_data_configuration {
    autodetect    = !local.explicit_schema
    source_format = "PARQUET"
    # Only objects ending in .parquet are data: anything else that lands under raw/ (a
    # temporary upload, a stray file) is never read. BigQuery's one wildcard may sit inside
    # the object name, and it matches across "/" (Google's own hive-partitioning sample reads
    # .../dt=2020-11-15/file1.parquet through .../*), so this reaches every date folder.
    source_uris = ["${local.raw_uri}/*.parquet"]

    hive_partitioning_options {
      mode                     = "CUSTOM"
      source_uri_prefix        = "${local.raw_uri}/{dt:DATE}"
      require_partition_filter = var.require_partition_filter
    }

    # Decimals from a registry's writer schema land as Parquet DECIMAL(p, s): NUMERIC-sized
    # ones (p - s <= 29, s <= 9) and wider ones up to BIGNUMERIC (p - s <= 38, s <= 38); a
    # decimal wider than that gets no column (its text is in _extra). BigQuery picks, in the
    # order NUMERIC, BIGNUMERIC, STRING, the first listed type that holds the column's
    # precision and scale; the order written here is ignored, and the default for Parquet is
    # NUMERIC alone, which cannot hold the wider columns (ExternalDataConfiguration.
    # decimalTargetTypes, https://cloud.google.com/bigquery/docs/reference/rest/v2/tables).
    # STRING is left out on purpose: it would be picked only for a DECIMAL wider than
    # BIGNUMERIC, which the bridge never writes, and would then silently make the column text.
    decimal_target_types = ["NUMERIC", "BIGNUMERIC"]

    parquet_options {
      # Parquet ENUM as STRING, not BYTES (the bridge writes enums as plain strings anyway).
      enum_as_string = true
      # A Parquet LIST (arrays, maps, _kafka_headers) reads as a REPEATED field of its
      # elements, not as a RECORD holding a repeated "list" of "element" records
      # (ParquetOptions.enableListInference; "List logical type" in
      # https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-parquet).
      enable_list_inference = true
    }
  }
}

# One row per Kafka record. A record lands twice only when an instance died between its WAL
# fsync and its offset commit and another instance read it again; both copies carry the same
# (_kafka_topic, _kafka_partition, _kafka_offset), and the first one landed is kept.
resource "google_bigquery_table" "events_dedup" {
  count = var.create_tables ? 1 : 0

  dataset_id          = google_bigquery_dataset.raw.dataset_id
  table_id            = var.view_id
  description         = "${var.table_id} without duplicates: one row per (_kafka_topic, _kafka_partition, _kafka_offset)."
  labels              = var.labels
  deletion_protection = var.deletion_protection

  view {
    use_legacy_sql = false
    query          = <<-SQL
      SELECT * EXCEPT (_dedup_rank)
      FROM (
        SELECT
          *,
          ROW_NUMBER() OVER (
            PARTITION BY _kafka_topic, _kafka_partition, _kafka_offset
            ORDER BY _ingested_at, dt
          ) AS _dedup_rank
        FROM `${local.events_table_ref}`
        ${local.view_date_filter}
      )
      WHERE _dedup_rank = 1
    SQL
  }

  lifecycle {
    precondition {
      condition     = !var.require_partition_filter || var.dedup_view_lookback_days > 0
      error_message = "With require_partition_filter = true the view needs dedup_view_lookback_days > 0: a dt filter written outside the view cannot reach beneath its window function."
    }
  }

  depends_on = [google_bigquery_table.events]
}

# --- Identity ------------------------------------------------------------------------------

resource "google_service_account" "bridge" {
  account_id   = var.service_account_id
  display_name = "wal-bridge"
  # Fixed text: IAM caps a description at 256 characters, which a long bucket name (up to 222)
  # or dataset ID (up to 1,024) would pass.
  description = "Runs wal-bridge: writes Parquet to the landing bucket of this stack; may query its dataset when grant_bigquery_roles is on."

  depends_on = [google_project_service.apis]
}

# What the bridge needs, and all it needs: objects in this one bucket. It creates objects
# (create-only uploads), reads an object's metadata when an upload may already have landed
# (same checksum = shipped) and lists objects for audits. Bound on the bucket, never on the
# project, so the account can touch no other bucket. objectAdmin also allows deleting and
# replacing objects, which the bridge never does; roles/storage.objectCreator plus
# roles/storage.objectViewer is the tighter pair where policy asks for it. Neither grants
# storage.buckets.get: the bridge addresses the bucket by name and never reads the bucket's own
# metadata.
resource "google_storage_bucket_iam_member" "bridge_objects" {
  bucket = google_storage_bucket.landing.name
  role   = "roles/storage.objectAdmin"
  member = local.bridge_member
}

# To run a query at all, a principal needs bigquery.jobs.create, which exists only at project
# level: there is no narrower place to grant it. jobUser holds job permissions and no data
# access.
resource "google_project_iam_member" "bridge_bigquery_jobs" {
  count = var.grant_bigquery_roles ? 1 : 0

  project = var.project_id
  role    = "roles/bigquery.jobUser"
  member  = local.bridge_member
}

# Read the external table and the view, in this dataset only. (Querying the external table
# also reads the Parquet files with the caller's own identity; the bucket binding above
# already covers that for this account.)
resource "google_bigquery_dataset_iam_member" "bridge_data_viewer" {
  count = var.grant_bigquery_roles ? 1 : 0

  dataset_id = google_bigquery_dataset.raw.dataset_id
  role       = "roles/bigquery.dataViewer"
  member     = local.bridge_member
}

# Keyless, for people: each principal listed may mint short-lived tokens for the account
# (gcloud auth application-default login --impersonate-service-account=EMAIL).
resource "google_service_account_iam_member" "impersonators" {
  for_each = toset(var.impersonators)

  service_account_id = google_service_account.bridge.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = each.value
}

# Keyless, for GKE: the Kubernetes service account of infra/k8s acts as this account through
# Workload Identity (the cluster needs Workload Identity enabled).
resource "google_service_account_iam_member" "workload_identity" {
  count = var.workload_identity_k8s_service_account == "" ? 0 : 1

  service_account_id = google_service_account.bridge.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.workload_identity_k8s_service_account}]"
}

# Only when asked for (create_service_account_key = true): a long-lived key that anyone holding
# it can use until it is deleted, and that is also stored in the Terraform state. For the compose
# gcp profile on a machine outside Google Cloud when impersonation is not an option.
resource "google_service_account_key" "bridge" {
  count = var.create_service_account_key ? 1 : 0

  service_account_id = google_service_account.bridge.name
}
