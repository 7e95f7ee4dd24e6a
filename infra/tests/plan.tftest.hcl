# The definition of done of infra/, asserted on what Terraform would create, against the real
# hashicorp/google schema with a mock provider: no Google Cloud project and no credentials are
# needed, and nothing is created. Run with `terraform test` from infra/ (tests/unit/infra/
# test_terraform.py does so in CI). A mock provider fills computed attributes with random
# strings, so the attributes the assertions compare (the account's email, the key) get fixed
# values below.

mock_provider "google" {
  mock_resource "google_service_account" {
    defaults = {
      email = "wal-bridge@wal-bridge-test.iam.gserviceaccount.com"
      name  = "projects/wal-bridge-test/serviceAccounts/wal-bridge@wal-bridge-test.iam.gserviceaccount.com"
    }
  }

  mock_resource "google_service_account_key" {
    defaults = {
      private_key = "eyJ0eXBlIjogInNlcnZpY2VfYWNjb3VudCJ9"
    }
  }
}

variables {
  project_id  = "wal-bridge-test"
  bucket_name = "wal-bridge-test-landing"
}

# Every default accepted (no validation fails), and the plan they give.
run "defaults" {
  command = plan

  assert {
    condition     = google_storage_bucket.landing.name == "wal-bridge-test-landing" && google_storage_bucket.landing.location == "EU"
    error_message = "The landing bucket must be bucket_name, in location."
  }

  assert {
    condition     = google_storage_bucket.landing.uniform_bucket_level_access == true
    error_message = "The bucket must use uniform bucket-level access (IAM only, no object ACLs)."
  }

  assert {
    condition     = google_storage_bucket.landing.public_access_prevention == "enforced"
    error_message = "The bucket must enforce public access prevention."
  }

  assert {
    condition     = google_storage_bucket.landing.versioning[0].enabled == false && google_storage_bucket.landing.soft_delete_policy[0].retention_duration_seconds == 7 * 86400
    error_message = "Versioning stays off; soft delete keeps deleted objects for 7 days."
  }

  assert {
    condition     = length(google_storage_bucket.landing.lifecycle_rule) == 0
    error_message = "No lifecycle rule by default: the bucket is the record of what was ingested."
  }

  assert {
    condition     = google_bigquery_dataset.raw.dataset_id == "analytics_raw" && google_bigquery_dataset.raw.location == "EU"
    error_message = "The dataset must be analytics_raw, in the bucket's location."
  }

  assert {
    condition     = google_bigquery_table.events[0].table_id == "events" && google_bigquery_table.events[0].dataset_id == "analytics_raw"
    error_message = "The external table must be analytics_raw.events."
  }

  assert {
    condition     = google_bigquery_table.events[0].external_data_configuration[0].source_format == "PARQUET"
    error_message = "The external table must read Parquet."
  }

  assert {
    condition     = google_bigquery_table.events[0].external_data_configuration[0].source_uris == tolist(["gs://wal-bridge-test-landing/raw/*.parquet"])
    error_message = "The external table must read only .parquet objects under raw/."
  }

  assert {
    condition = (
      google_bigquery_table.events[0].external_data_configuration[0].hive_partitioning_options[0].mode == "CUSTOM"
      && google_bigquery_table.events[0].external_data_configuration[0].hive_partitioning_options[0].source_uri_prefix == "gs://wal-bridge-test-landing/raw/{dt:DATE}"
      && google_bigquery_table.events[0].external_data_configuration[0].hive_partitioning_options[0].require_partition_filter == false
    )
    error_message = "Hive partitioning must be CUSTOM with a dt DATE key right under raw/."
  }

  assert {
    condition     = google_bigquery_table.events[0].external_data_configuration[0].autodetect == true && google_bigquery_table.events[0].ignore_auto_generated_schema == false
    error_message = "Without table_schema_file the schema is detected from the files."
  }

  assert {
    condition     = google_bigquery_table.events[0].external_data_configuration[0].decimal_target_types == toset(["NUMERIC", "BIGNUMERIC"])
    error_message = "Decimals must read as NUMERIC, or BIGNUMERIC when wider (the default for Parquet is NUMERIC alone); never STRING, which would silently make a column text."
  }

  assert {
    condition = (
      google_bigquery_table.events[0].external_data_configuration[0].parquet_options[0].enable_list_inference == true
      && google_bigquery_table.events[0].external_data_configuration[0].parquet_options[0].enum_as_string == true
    )
    error_message = "A Parquet LIST must read as a REPEATED field (list inference), and a Parquet ENUM as STRING."
  }

  assert {
    condition     = google_bigquery_table.events[0].deletion_protection == false && google_bigquery_table.events_dedup[0].deletion_protection == false
    error_message = "The table and the view hold only metadata: deletion protection is off by default, so terraform apply -replace works."
  }

  assert {
    condition     = google_bigquery_table.events_dedup[0].table_id == "events_dedup" && google_bigquery_table.events_dedup[0].view[0].use_legacy_sql == false
    error_message = "The view must be events_dedup, in standard SQL."
  }

  assert {
    condition     = strcontains(google_bigquery_table.events_dedup[0].view[0].query, "PARTITION BY _kafka_topic, _kafka_partition, _kafka_offset")
    error_message = "The view must keep one row per (_kafka_topic, _kafka_partition, _kafka_offset)."
  }

  assert {
    condition     = strcontains(google_bigquery_table.events_dedup[0].view[0].query, "FROM `wal-bridge-test.analytics_raw.events`") && strcontains(google_bigquery_table.events_dedup[0].view[0].query, "WHERE _dedup_rank = 1")
    error_message = "The view must read the external table and keep the first row of each record."
  }

  assert {
    condition     = !can(regex("(^|[^a-z])_(topic|partition|offset|key|headers)\\b", google_bigquery_table.events_dedup[0].view[0].query))
    error_message = "The view must not use the old metadata column names."
  }

  assert {
    condition     = !strcontains(google_bigquery_table.events_dedup[0].view[0].query, "WHERE dt >=")
    error_message = "With dedup_view_lookback_days = 0 the view reads every date folder."
  }

  assert {
    condition     = strcontains(output.example_query, "GROUP BY _kafka_topic, _kafka_partition") && strcontains(output.example_query, "FROM `wal-bridge-test.analytics_raw.events_dedup`")
    error_message = "example_query must query the view by the renamed metadata columns."
  }
}

run "lifecycle_rules_stay_inside_their_prefixes" {
  command = plan

  variables {
    raw_retention_days         = 30
    dead_letter_retention_days = 90
  }

  assert {
    condition = toset([for rule in google_storage_bucket.landing.lifecycle_rule : "${one(rule.condition).age}:${join(",", one(rule.condition).matches_prefix)}:${one(rule.action).type}"]) == toset(["30:raw/:Delete", "90:dead-letter/:Delete"])
    # _wal_bridge/raw/schema.json, the bridge's stored schema, is under neither prefix.
    error_message = "Each retention rule must delete only under its own prefix (raw/, dead-letter/)."
  }
}

run "dedup_view_lookback_bounds_the_folders_read" {
  command = plan

  variables {
    dedup_view_lookback_days = 7
    require_partition_filter = true
  }

  assert {
    condition     = strcontains(google_bigquery_table.events_dedup[0].view[0].query, "WHERE dt >= DATE_SUB(CURRENT_DATE(), INTERVAL 6 DAY)")
    error_message = "dedup_view_lookback_days = 7 must read today and the 6 days before."
  }
}

run "tables_wait_for_create_tables" {
  command = plan

  variables {
    create_tables = false
  }

  assert {
    condition     = length(google_bigquery_table.events) == 0 && length(google_bigquery_table.events_dedup) == 0
    error_message = "create_tables = false must create neither the table nor the view."
  }

  assert {
    condition     = output.table_id == null && output.view_id == null
    error_message = "table_id and view_id are null until the tables exist."
  }
}

run "explicit_schema_from_file" {
  command = plan

  variables {
    table_schema_file = "tests/fixtures/events.schema.json"
  }

  assert {
    condition     = jsondecode(google_bigquery_table.events[0].schema) == jsondecode(file("tests/fixtures/events.schema.json"))
    error_message = "table_schema_file must become the table's schema."
  }

  assert {
    condition     = google_bigquery_table.events[0].external_data_configuration[0].autodetect == false
    error_message = "With an explicit schema, detection must be off."
  }

  assert {
    condition     = google_bigquery_table.events[0].ignore_auto_generated_schema == true
    error_message = "The dt column BigQuery appends must not show as a diff (or force a replacement) on every plan."
  }
}

run "service_account_and_iam" {
  command = apply

  variables {
    impersonators                         = ["user:someone@example.com"]
    workload_identity_k8s_service_account = "wal-bridge/wal-bridge"
  }

  assert {
    condition     = google_service_account.bridge.account_id == "wal-bridge"
    error_message = "The service account must be wal-bridge."
  }

  assert {
    condition = (
      google_storage_bucket_iam_member.bridge_objects.role == "roles/storage.objectAdmin"
      && google_storage_bucket_iam_member.bridge_objects.bucket == "wal-bridge-test-landing"
      && google_storage_bucket_iam_member.bridge_objects.member == "serviceAccount:wal-bridge@wal-bridge-test.iam.gserviceaccount.com"
    )
    error_message = "roles/storage.objectAdmin must be bound to the service account on the landing bucket."
  }

  assert {
    condition = (
      google_project_iam_member.bridge_bigquery_jobs[0].role == "roles/bigquery.jobUser"
      && google_project_iam_member.bridge_bigquery_jobs[0].project == "wal-bridge-test"
      && google_project_iam_member.bridge_bigquery_jobs[0].member == "serviceAccount:wal-bridge@wal-bridge-test.iam.gserviceaccount.com"
    )
    error_message = "roles/bigquery.jobUser must be granted to the service account on the project."
  }

  assert {
    condition = (
      google_bigquery_dataset_iam_member.bridge_data_viewer[0].role == "roles/bigquery.dataViewer"
      && google_bigquery_dataset_iam_member.bridge_data_viewer[0].dataset_id == "analytics_raw"
      && google_bigquery_dataset_iam_member.bridge_data_viewer[0].member == "serviceAccount:wal-bridge@wal-bridge-test.iam.gserviceaccount.com"
    )
    error_message = "roles/bigquery.dataViewer must be granted to the service account on the dataset only."
  }

  assert {
    condition     = google_service_account_iam_member.impersonators["user:someone@example.com"].role == "roles/iam.serviceAccountTokenCreator"
    error_message = "Each impersonator must get roles/iam.serviceAccountTokenCreator on the account."
  }

  assert {
    condition     = google_service_account_iam_member.workload_identity[0].member == "serviceAccount:wal-bridge-test.svc.id.goog[wal-bridge/wal-bridge]"
    error_message = "The Kubernetes service account must be bound through Workload Identity."
  }

  assert {
    condition     = length(google_service_account_key.bridge) == 0 && output.service_account_key == null
    error_message = "No key is created unless create_service_account_key is true."
  }

  assert {
    condition     = output.service_account_email == "wal-bridge@wal-bridge-test.iam.gserviceaccount.com" && output.destination == "gs://wal-bridge-test-landing/raw"
    error_message = "The outputs must give the account's email and the bridge's DESTINATION."
  }
}

run "bigquery_roles_are_optional" {
  command = plan

  variables {
    grant_bigquery_roles = false
  }

  assert {
    condition     = length(google_project_iam_member.bridge_bigquery_jobs) == 0 && length(google_bigquery_dataset_iam_member.bridge_data_viewer) == 0
    error_message = "grant_bigquery_roles = false must drop both BigQuery grants."
  }
}

run "key_output_is_sensitive" {
  command = apply

  variables {
    create_service_account_key = true
  }

  assert {
    condition     = length(google_service_account_key.bridge) == 1
    error_message = "create_service_account_key = true must create one key."
  }

  assert {
    condition     = issensitive(output.service_account_key) && nonsensitive(output.service_account_key) == "eyJ0eXBlIjogInNlcnZpY2VfYWNjb3VudCJ9"
    error_message = "service_account_key must carry the key, marked sensitive."
  }
}

run "partition_filter_needs_a_bounded_view" {
  command = plan

  variables {
    require_partition_filter = true
    dedup_view_lookback_days = 0
  }

  expect_failures = [google_bigquery_table.events_dedup]
}
