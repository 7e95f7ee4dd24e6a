variable "project_id" {
  description = "Google Cloud project that holds the bucket, the BigQuery dataset and the service account."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 characters: lowercase letters, digits, hyphens), not a project name or number."
  }
}

variable "location" {
  description = "Location of both the bucket and the dataset: a multi-region (EU, US) or a region (europe-west1). BigQuery reads an external table only from a bucket in the dataset's location, so one variable sets both."
  type        = string
  default     = "EU"

  validation {
    condition     = can(regex("^(EU|US|[a-z]+-[a-z]+[0-9]+)$", var.location))
    error_message = "location must be EU, US or a region such as europe-west1."
  }
}

variable "bucket_name" {
  description = "Name of the landing bucket (globally unique). The bridge writes Parquet under raw/, rejected records under dead-letter/ and its stored table schema under _wal_bridge/."
  type        = string

  # Cloud Storage's bucket naming rules (cloud.google.com/storage/docs/buckets#naming):
  # lowercase letters, digits, hyphens, underscores and dots; start and end with a letter or
  # digit; 3-63 characters, or up to 222 with dots as long as each dot-separated part is at most
  # 63; not an IP address in dotted-decimal form; not starting with "goog"; not containing
  # "google" (Google also refuses close misspellings such as "g00gle", which no pattern here
  # can list in full). A dotted name needs a verified domain of its own.
  validation {
    condition = (
      can(regex("^[a-z0-9][a-z0-9._-]*[a-z0-9]$", var.bucket_name))
      && length(var.bucket_name) >= 3
      && length(var.bucket_name) <= (strcontains(var.bucket_name, ".") ? 222 : 63)
      && alltrue([for part in split(".", var.bucket_name) : length(part) >= 1 && length(part) <= 63])
    )
    error_message = "bucket_name must be 3-63 characters (up to 222 with dots, at most 63 between two dots) of lowercase letters, digits, hyphens, underscores and dots, starting and ending with a letter or digit."
  }

  validation {
    condition     = !can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}$", var.bucket_name)) && !startswith(var.bucket_name, "goog") && !strcontains(var.bucket_name, "google")
    error_message = "bucket_name must not be an IP address, start with \"goog\" or contain \"google\": Cloud Storage reserves those names."
  }
}

variable "dataset_id" {
  description = "BigQuery dataset for the external table and the deduplicating view."
  type        = string
  default     = "analytics_raw"

  # BigQuery dataset names: up to 1,024 characters of letters, digits and underscores
  # (cloud.google.com/bigquery/docs/datasets#dataset-naming). Terraform's regex engine refuses
  # repeat counts above 1000, so the length is checked apart from the pattern.
  validation {
    condition     = can(regex("^[A-Za-z0-9_]+$", var.dataset_id)) && length(var.dataset_id) <= 1024
    error_message = "dataset_id must be 1-1024 characters of letters, digits and underscores."
  }
}

# BigQuery table (and view) names (cloud.google.com/bigquery/docs/tables#table_naming): up to
# 1,024 UTF-8 bytes of Unicode letters (L), marks (M), numbers (N), connectors such as the
# underscore (Pc), dashes (Pd) and spaces (Zs). Terraform has no byte-length function: the
# length of the unpadded base64 of the name, times 3/4 and rounded down, is its UTF-8 length.
variable "table_id" {
  description = "Name of the external table over gs://BUCKET/raw/ (every landed row, duplicates included)."
  type        = string
  default     = "events"

  validation {
    condition     = can(regex("^[\\p{L}\\p{M}\\p{N}\\p{Pc}\\p{Pd}\\p{Zs}]+$", var.table_id)) && floor(length(replace(base64encode(var.table_id), "=", "")) * 3 / 4) <= 1024
    error_message = "table_id must be 1-1024 bytes of letters, marks, digits, underscores, dashes and spaces (BigQuery's table naming rules)."
  }
}

variable "view_id" {
  description = "Name of the view that keeps one row per (_kafka_topic, _kafka_partition, _kafka_offset)."
  type        = string
  default     = "events_dedup"

  validation {
    condition     = can(regex("^[\\p{L}\\p{M}\\p{N}\\p{Pc}\\p{Pd}\\p{Zs}]+$", var.view_id)) && floor(length(replace(base64encode(var.view_id), "=", "")) * 3 / 4) <= 1024
    error_message = "view_id must be 1-1024 bytes of letters, marks, digits, underscores, dashes and spaces (BigQuery's table naming rules)."
  }
}

variable "create_tables" {
  description = "Create the external table and the view. With schema autodetection (table_schema_file empty) BigQuery takes the table's schema from a file present under raw/ when the table is created, so the walkthrough keeps this false in terraform.tfvars until the bridge has landed its first file, then sets it to true."
  type        = bool
  default     = true
}

variable "table_schema_file" {
  description = "Path (relative to infra/) of a BigQuery JSON schema file for the external table, as printed by wal_bridge schema --destination gs://BUCKET/raw --format bigquery: the payload's columns and the bridge's metadata columns, without the dt partition column (BigQuery adds it from the folder names). Empty: BigQuery detects the schema from one of the Parquet files when the table is created."
  type        = string
  default     = ""

  validation {
    condition     = var.table_schema_file == "" || try(length([for field in jsondecode(file(var.table_schema_file)) : "${field.name}:${field.type}"]) > 0, false)
    error_message = "table_schema_file must name a readable file holding a non-empty JSON array of BigQuery fields, each with a name and a type."
  }

  # The hive partition key comes from the folder names (source_uri_prefix ...{dt:DATE}); a
  # schema that also declares dt would clash with it.
  validation {
    condition     = var.table_schema_file == "" || try(!contains([for field in jsondecode(file(var.table_schema_file)) : lower(field.name)], "dt"), false)
    error_message = "table_schema_file must not declare the dt column: BigQuery adds it from the date folders (raw/dt=YYYY-MM-DD/)."
  }

  # The deduplicating view partitions by the record's identity and orders by _ingested_at.
  validation {
    condition     = var.table_schema_file == "" || try(length(setsubtract(["_kafka_topic", "_kafka_partition", "_kafka_offset", "_ingested_at"], [for field in jsondecode(file(var.table_schema_file)) : field.name])) == 0, false)
    error_message = "table_schema_file must declare the bridge's metadata columns _kafka_topic, _kafka_partition, _kafka_offset and _ingested_at, which the deduplicating view reads."
  }
}

variable "require_partition_filter" {
  description = "Make every query on the external table filter on the dt date folder, so that no query reads the whole bucket by accident. When true, dedup_view_lookback_days must be above 0, since the view's own filter is the only one BigQuery can apply beneath its window function."
  type        = bool
  default     = false
}

variable "dedup_view_lookback_days" {
  description = "How many days of date folders the deduplicating view reads, today included (0 = all of them). A filter on dt outside the view cannot prune files, because it sits above the view's window function; this bound is what keeps the view's cost flat as history grows."
  type        = number
  default     = 0

  validation {
    condition     = var.dedup_view_lookback_days >= 0 && floor(var.dedup_view_lookback_days) == var.dedup_view_lookback_days
    error_message = "dedup_view_lookback_days must be a whole number of days, 0 or more."
  }
}

variable "raw_retention_days" {
  description = "Delete Parquet objects under raw/ this many days after they land (0 = keep them forever)."
  type        = number
  default     = 0

  validation {
    condition     = var.raw_retention_days >= 0 && floor(var.raw_retention_days) == var.raw_retention_days
    error_message = "raw_retention_days must be a whole number of days, 0 or more."
  }
}

variable "dead_letter_retention_days" {
  description = "Delete dead-letter objects this many days after they land (0 = keep them forever)."
  type        = number
  default     = 0

  validation {
    condition     = var.dead_letter_retention_days >= 0 && floor(var.dead_letter_retention_days) == var.dead_letter_retention_days
    error_message = "dead_letter_retention_days must be a whole number of days, 0 or more."
  }
}

variable "soft_delete_retention_days" {
  description = "Days that GCS keeps a deleted object restorable (soft delete): the bucket's guard against an accidental delete, in place of object versioning. 0 turns it off; otherwise 7 to 90."
  type        = number
  default     = 7

  validation {
    condition     = var.soft_delete_retention_days == 0 || (var.soft_delete_retention_days >= 7 && var.soft_delete_retention_days <= 90 && floor(var.soft_delete_retention_days) == var.soft_delete_retention_days)
    error_message = "soft_delete_retention_days must be 0 or a whole number from 7 to 90."
  }
}

variable "force_destroy" {
  description = "Let terraform destroy delete the bucket even when it still holds objects. Leave false outside throw-away projects."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Refuse to delete or replace the external table and the view (the provider's deletion_protection). Off by default: both hold only metadata that this configuration recreates exactly, the rows stay in the bucket, so a replace (terraform apply -replace=...) loses nothing. When true, set it to false and apply before any replace or destroy."
  type        = bool
  default     = false
}

variable "service_account_id" {
  description = "Account ID (the part before @) of the service account the bridge runs as."
  type        = string
  default     = "wal-bridge"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.service_account_id))
    error_message = "service_account_id must be 6-30 characters: a lowercase letter, then lowercase letters, digits or hyphens, ending in a letter or digit."
  }
}

variable "grant_bigquery_roles" {
  description = "Also let the service account query the dataset (bigquery.jobUser on the project, bigquery.dataViewer on the dataset). The bridge itself needs neither: turn this off when only people query."
  type        = bool
  default     = true
}

variable "create_service_account_key" {
  description = "Create a JSON key for the service account and expose it as the sensitive output service_account_key. Off by default: a key is a long-lived secret that also lands in the Terraform state; prefer impersonation or workload identity (docs/cloud.md)."
  type        = bool
  default     = false
}

variable "impersonators" {
  description = "Principals (user:, group:, serviceAccount:) allowed to impersonate the service account, for keyless local runs with gcloud auth application-default login --impersonate-service-account."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for p in var.impersonators : can(regex("^(user|group|serviceAccount):[^@\\s]+@[^@\\s]+$", p))])
    error_message = "Each impersonator must look like user:NAME@DOMAIN, group:NAME@DOMAIN or serviceAccount:NAME@DOMAIN."
  }
}

variable "workload_identity_k8s_service_account" {
  description = "NAMESPACE/NAME of the Kubernetes service account (infra/k8s) that may act as the service account through GKE Workload Identity, for example wal-bridge/wal-bridge. Empty: no binding."
  type        = string
  default     = ""

  validation {
    condition     = var.workload_identity_k8s_service_account == "" || can(regex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?$", var.workload_identity_k8s_service_account))
    error_message = "workload_identity_k8s_service_account must be empty or NAMESPACE/NAME."
  }
}

variable "enable_apis" {
  description = "Enable the Cloud Storage, BigQuery and IAM APIs in the project (needs serviceusage permissions). Set to false when they are managed elsewhere."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels put on the bucket, the dataset and the tables."
  type        = map(string)
  default     = { app = "wal-bridge" }

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "Label keys must start with a lowercase letter; keys and values may hold lowercase letters, digits, hyphens and underscores (63 at most)."
  }
}
