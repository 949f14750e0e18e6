output "bucket_name" {
  description = "The bucket: walbucket's `bucket` setting (WALBUCKET_BUCKET)."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the bucket."
  value       = aws_s3_bucket.this.arn
}

output "prefix" {
  description = "walbucket's `prefix` setting (WALBUCKET_PREFIX), without surrounding slashes."
  value       = local.prefix
}

output "walbucket_environment" {
  description = "Settings for the walbucket processes (archive_command, restore_command), as environment variables."
  value = {
    WALBUCKET_BUCKET = aws_s3_bucket.this.id
    WALBUCKET_PREFIX = local.prefix
  }
}

output "lifecycle_rule_ids" {
  description = "IDs of the lifecycle rules; `walbucket lifecycle` prints the same rules."
  value       = concat([for rule in local.expiring_rules : rule.id], var.abort_incomplete_multipart_days == null ? [] : ["walbucket-abort-multipart${local.id_suffix}"])
}

output "archiver_policy_arn" {
  description = "ARN of the archiver IAM policy (attach it to the role that runs archive_command); null when not created."
  value       = one(aws_iam_policy.archiver[*].arn)
}

output "restorer_policy_arn" {
  description = "ARN of the read-only restorer IAM policy (attach it to the role that runs restore_command); null when not created."
  value       = one(aws_iam_policy.restorer[*].arn)
}

output "archiver_policy_json" {
  description = "The archiver policy document, also for stores with their own IAM (MinIO: `mc admin policy create`)."
  value       = data.aws_iam_policy_document.archiver.json
}

output "restorer_policy_json" {
  description = "The restorer policy document."
  value       = data.aws_iam_policy_document.restorer.json
}
