# Written against the hashicorp/google provider documentation for 6.x and 7.x. The upper bound
# keeps a future major version (with its own breaking changes) from arriving unreviewed; widen
# it after reading that version's upgrade guide.
terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
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
