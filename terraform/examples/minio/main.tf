# A WAL archive on MinIO, with the AWS provider pointed at the MinIO endpoint. MinIO implements the S3 object and
# bucket APIs walbucket needs, but not every bucket API the module uses on AWS: README.md beside this file lists
# what is turned off here and why.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "minio_endpoint" {
  description = "MinIO's S3 endpoint, e.g. https://minio.internal:9000."
  type        = string
}

variable "minio_access_key" {
  description = "Access key of a MinIO user allowed to create and configure buckets (not walbucket's user)."
  type        = string
  sensitive   = true
}

variable "minio_secret_key" {
  description = "Its secret key."
  type        = string
  sensitive   = true
}

variable "bucket_name" {
  description = "Name of the bucket to create."
  type        = string
  default     = "pg-wal"
}

variable "prefix" {
  description = "walbucket's prefix setting."
  type        = string
  default     = "prod/orders"
}

provider "aws" {
  # MinIO ignores the region but the provider and the request signatures need one; use MinIO's (default us-east-1).
  region     = "us-east-1"
  access_key = var.minio_access_key
  secret_key = var.minio_secret_key

  # Bucket in the path (http://host:9000/bucket/key), not in the host name.
  s3_use_path_style = true
  # MinIO has no STS, IAM or EC2 metadata to ask.
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  skip_requesting_account_id  = true

  endpoints {
    s3 = var.minio_endpoint
  }
}

module "wal_archive" {
  source = "../../modules/walbucket-archive"

  bucket_name        = var.bucket_name
  prefix             = var.prefix
  wal_retention_days = 14

  # MinIO drops or refuses AbortIncompleteMultipartUpload in lifecycle rules; it purges stale uploads itself.
  abort_incomplete_multipart_days = null

  # MinIO's policies cannot require If-None-Match (no s3:if-none-match condition key), so nothing but walbucket
  # itself (conditional_writes = "required") stops an overwrite: versions keep what was overwritten.
  versioning            = true
  require_if_none_match = false

  # Not implemented by MinIO: public access blocks and object ownership controls (MinIO has no ACLs to turn off).
  enable_public_access_block = false
  enable_ownership_controls  = false
  # SSE-S3 on MinIO needs a KMS (MINIO_KMS_*); turn this on once the server has one.
  enable_default_encryption = false
  # MinIO's access control is its own users and policies (mc admin policy), and TLS is a server setting.
  enable_bucket_policy = false
  # IAM lives in MinIO's admin API: create the policies with mc from the JSON outputs below.
  create_iam_policies = false
}

output "walbucket_environment" {
  description = "Add WALBUCKET_ENDPOINT_URL and WALBUCKET_PATH_STYLE=true for MinIO."
  value = merge(module.wal_archive.walbucket_environment, {
    WALBUCKET_ENDPOINT_URL = var.minio_endpoint
    WALBUCKET_PATH_STYLE   = "true"
  })
}

output "archiver_policy_json" {
  description = "mc admin policy create ALIAS walbucket-archiver <(terraform output -raw archiver_policy_json)"
  value       = module.wal_archive.archiver_policy_json
}

output "restorer_policy_json" {
  description = "mc admin policy create ALIAS walbucket-restorer <(terraform output -raw restorer_policy_json)"
  value       = module.wal_archive.restorer_policy_json
}
