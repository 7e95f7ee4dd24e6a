output "bucket" {
  description = "The landing bucket."
  value       = google_storage_bucket.landing.name
}

output "destination" {
  description = "The bridge's DESTINATION: set it as GCP_DESTINATION in .env for the compose gcp profile, or in the ConfigMap of infra/k8s."
  value       = local.raw_uri
}

output "dead_letter_uri" {
  description = "Where the bridge puts records it could not decode, with the reason (outside raw/, so the table never reads them)."
  value       = local.dead_letter_uri
}

output "table_id" {
  description = "The external table over raw/, as PROJECT.DATASET.TABLE (null until create_tables is true)."
  value       = var.create_tables ? local.events_table_ref : null
}

output "view_id" {
  description = "The deduplicating view, as PROJECT.DATASET.VIEW (null until create_tables is true)."
  value       = var.create_tables ? local.events_view_ref : null
}

output "service_account_email" {
  description = "The service account the bridge runs as: impersonate it, or bind it to the Kubernetes service account (iam.gke.io/gcp-service-account)."
  value       = google_service_account.bridge.email
}

output "example_query" {
  description = "A query to paste into the BigQuery console or bq query --use_legacy_sql=false: today's records per partition, without duplicates."
  value       = <<-SQL
    SELECT
      _kafka_topic,
      _kafka_partition,
      COUNT(*) AS records,
      MIN(_kafka_offset) AS first_offset,
      MAX(_kafka_offset) AS last_offset,
      MAX(_ingested_at) AS last_ingested_at
    FROM `${local.events_view_ref}`
    WHERE dt = CURRENT_DATE()
    GROUP BY _kafka_topic, _kafka_partition
    ORDER BY _kafka_topic, _kafka_partition
  SQL
}

output "service_account_key" {
  description = "Base64 JSON key of the service account, only when create_service_account_key is true. Write it with: terraform output -raw service_account_key | base64 -d > secrets/gcp-key.json"
  value       = one(google_service_account_key.bridge[*].private_key)
  sensitive   = true
}
