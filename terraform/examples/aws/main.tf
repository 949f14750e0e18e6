# A WAL archive on AWS for the cluster "prod/orders": the bucket, its lifecycle rules, and the two IAM policies
# attached to the roles that run archive_command and restore_command. See README.md beside this file.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

provider "aws" {
  region = var.region
}

variable "region" {
  description = "AWS region of the bucket; put it near the database servers."
  type        = string
  default     = "eu-west-1"
}

variable "bucket_name" {
  description = "Globally unique name of the bucket to create."
  type        = string
}

variable "archiver_role_name" {
  description = "IAM role of the database servers (runs archive_command; a primary also restores when it is rebuilt)."
  type        = string
}

variable "restorer_role_name" {
  description = "IAM role of hosts that only restore (standbys, restore tests)."
  type        = string
}

variable "kms_key_arn" {
  description = "Optional KMS key for default encryption; null for SSE-S3."
  type        = string
  default     = null
}

data "aws_iam_role" "archiver" {
  name = var.archiver_role_name
}

data "aws_iam_role" "restorer" {
  name = var.restorer_role_name
}

module "wal_archive" {
  source = "../../modules/walbucket-archive"

  bucket_name = var.bucket_name
  prefix      = "prod/orders"

  # Weekly base backups, the last four kept: the oldest is 28 days old when the next one completes, and its WAL must
  # stay until then; 35 days adds a week of margin (docs/retention.md).
  wal_retention_days     = 35
  partial_retention_days = 35

  # Keep what a person deletes or overwrites for a week.
  versioning              = true
  noncurrent_version_days = 7
  kms_key_arn             = var.kms_key_arn

  archiver_principal_arns = [data.aws_iam_role.archiver.arn]
  restorer_principal_arns = [data.aws_iam_role.restorer.arn]

  tags = {
    service = "postgresql-wal-archive"
  }
}

resource "aws_iam_role_policy_attachment" "archiver" {
  role       = data.aws_iam_role.archiver.name
  policy_arn = module.wal_archive.archiver_policy_arn
}

resource "aws_iam_role_policy_attachment" "archiver_reads" {
  # A rebuilt primary or a promoted standby restores with the same role.
  role       = data.aws_iam_role.archiver.name
  policy_arn = module.wal_archive.restorer_policy_arn
}

resource "aws_iam_role_policy_attachment" "restorer" {
  role       = data.aws_iam_role.restorer.name
  policy_arn = module.wal_archive.restorer_policy_arn
}

output "walbucket_environment" {
  description = "Put these into the environment of archive_command and restore_command (or walbucket.toml)."
  value       = module.wal_archive.walbucket_environment
}

output "lifecycle_rule_ids" {
  value = module.wal_archive.lifecycle_rule_ids
}
