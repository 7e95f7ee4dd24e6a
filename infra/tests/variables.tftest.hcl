# Each variable validation rejects bad values and accepts valid ones (the defaults are accepted
# by the "defaults" run of plan.tftest.hcl).
# One plan can expect several failures at once: a run lists every variable it gives a bad
# value, and fails if any one of them is accepted (or if anything else fails). The rules are
# Google's, cited beside each validation in variables.tf.

mock_provider "google" {}

variables {
  project_id  = "wal-bridge-test"
  bucket_name = "wal-bridge-test-landing"
}

run "accepts_valid_values_at_the_limits" {
  command = plan

  variables {
    project_id                            = "a-project-id-of-30-characters1"
    location                              = "northamerica-northeast1"
    bucket_name                           = "wal.bridge.${join("", [for i in range(21) : "abc"])}.example.com"
    dataset_id                            = join("", [for i in range(32) : "Analytics_raw_0123456789_abcdefg"])
    table_id                              = join("", [for i in range(512) : "é"])
    view_id                               = "événements-dédupliqués 2026"
    table_schema_file                     = "tests/fixtures/events.schema.json"
    dedup_view_lookback_days              = 7
    raw_retention_days                    = 365
    dead_letter_retention_days            = 30
    soft_delete_retention_days            = 90
    service_account_id                    = "wal-bridge-30-characters-long1"
    impersonators                         = ["user:me@example.com", "group:data@example.com", "serviceAccount:ci@p.iam.gserviceaccount.com"]
    workload_identity_k8s_service_account = "wal-bridge/wal-bridge"
    labels                                = { app = "wal-bridge", cost_center = "data-42", empty = "" }
  }

  assert {
    condition     = google_bigquery_table.events[0].table_id == join("", [for i in range(512) : "é"])
    error_message = "A 1024-byte table name of 512 two-byte letters must be accepted."
  }

  assert {
    condition     = length(google_bigquery_dataset.raw.dataset_id) == 1024
    error_message = "A 1024-character dataset ID must be accepted."
  }
}

run "rejects_bad_values" {
  command = plan

  variables {
    project_id                            = "My Project"
    location                              = "europe"
    bucket_name                           = "ab"
    dataset_id                            = "analytics-raw"
    table_id                              = "analytics.events"
    view_id                               = ""
    table_schema_file                     = "tests/fixtures/no-such-file.json"
    dedup_view_lookback_days              = -1
    raw_retention_days                    = 1.5
    dead_letter_retention_days            = -3
    soft_delete_retention_days            = 3
    service_account_id                    = "wal_bridge"
    impersonators                         = ["someone@example.com"]
    workload_identity_k8s_service_account = "wal-bridge"
    labels                                = { App = "wal-bridge" }
  }

  expect_failures = [
    var.project_id,
    var.location,
    var.bucket_name,
    var.dataset_id,
    var.table_id,
    var.view_id,
    var.table_schema_file,
    var.dedup_view_lookback_days,
    var.raw_retention_days,
    var.dead_letter_retention_days,
    var.soft_delete_retention_days,
    var.service_account_id,
    var.impersonators,
    var.workload_identity_k8s_service_account,
    var.labels,
  ]
}

run "rejects_values_just_past_the_limits" {
  command = plan

  variables {
    project_id                            = "a-project-id-of-31-characters12"
    location                              = "Europe-west1"
    bucket_name                           = "Wal-Bridge"
    dataset_id                            = "${join("", [for i in range(32) : "Analytics_raw_0123456789_abcdefg"])}x"
    table_id                              = join("", [for i in range(513) : "é"])
    view_id                               = "events;drop"
    table_schema_file                     = "tests/fixtures/not-a-list.schema.json"
    dedup_view_lookback_days              = 1.5
    raw_retention_days                    = -1
    dead_letter_retention_days            = 0.5
    soft_delete_retention_days            = 91
    service_account_id                    = "wal-bridge-"
    impersonators                         = ["user:a@b@c"]
    workload_identity_k8s_service_account = "Wal/Bridge"
    labels                                = { app = "Has Space" }
  }

  expect_failures = [
    var.project_id,
    var.location,
    var.bucket_name,
    var.dataset_id,
    var.table_id,
    var.view_id,
    var.table_schema_file,
    var.dedup_view_lookback_days,
    var.raw_retention_days,
    var.dead_letter_retention_days,
    var.soft_delete_retention_days,
    var.service_account_id,
    var.impersonators,
    var.workload_identity_k8s_service_account,
    var.labels,
  ]
}

run "rejects_a_bucket_name_that_is_an_ip_address" {
  command = plan

  variables {
    bucket_name = "192.168.5.4"
    # A schema that declares the dt partition column.
    table_schema_file = "tests/fixtures/with-dt.schema.json"
    # 5 characters: one short.
    service_account_id = "walbr"
  }

  expect_failures = [var.bucket_name, var.table_schema_file, var.service_account_id]
}

run "rejects_a_bucket_name_starting_with_goog" {
  command = plan

  variables {
    bucket_name = "goog-landing"
    # A schema with the metadata columns' old names, which the view no longer reads.
    table_schema_file = "tests/fixtures/old-names.schema.json"
  }

  expect_failures = [var.bucket_name, var.table_schema_file]
}

run "rejects_a_bucket_name_containing_google" {
  command = plan

  variables {
    bucket_name = "my-google-landing"
  }

  expect_failures = [var.bucket_name]
}

run "rejects_a_dotted_bucket_name_with_a_part_over_63" {
  command = plan

  variables {
    bucket_name = "wal.${join("", [for i in range(16) : "abcd"])}.example.com"
  }

  expect_failures = [var.bucket_name]
}

run "rejects_a_bucket_name_ending_in_a_dash" {
  command = plan

  variables {
    bucket_name = "wal-bridge-"
  }

  expect_failures = [var.bucket_name]
}
