# Checked against hashicorp/google 7.45.0 (terraform validate and terraform test, tests/). The
# lower bound is 7.31.0: from that release ignore_auto_generated_schema keeps the dt column that
# BigQuery adds to an external table's explicit schema from forcing a replacement on every
# apply (table_schema_file). The upper bound keeps a future major version (with its own breaking
# changes) from arriving unreviewed; widen it after reading that version's upgrade guide.
# Terraform 1.5 runs the configuration; its tests need 1.8 (mock providers, issensitive).
terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 7.31, < 8.0"
    }
  }

  # State stays local by default. It holds the service account key when
  # create_service_account_key = true, so keep it somewhere private; for a team, a GCS backend
  # in a separate, locked-down bucket is the usual choice:
  #
  # backend "gcs" {
  #   bucket = "my-terraform-state"
  #   prefix = "wal-bridge"
  # }
}

provider "google" {
  project = var.project_id
}
