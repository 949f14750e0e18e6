# A bucket for walbucket's WAL archive: private, encrypted, TLS only, ACLs off, retention by lifecycle rules
# (lifecycle.tf) and least-privilege IAM policies for the archiving and the restoring side (iam.tf).
# docs/retention.md explains the choices and the checkov skips below.

locals {
  # As walbucket.keylayout.normalize_prefix: the prefix without its surrounding slashes; "" is the whole bucket.
  prefix = trim(var.prefix, "/")
  # Everything walbucket writes under this prefix, as a key prefix.
  root      = local.prefix == "" ? "" : "${local.prefix}/"
  versioned = var.versioning || var.object_lock_days != null
  kms       = var.kms_key_arn != null
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:Access logging needs a second, site-specific log bucket; enable it there (docs/retention.md).
  #checkov:skip=CKV_AWS_144:Cross-region replication is a site decision that doubles the cost; the archive is one copy of WAL that PostgreSQL also keeps until archived.
  #checkov:skip=CKV2_AWS_62:walbucket needs no event notifications; nothing consumes them.
  #checkov:skip=CKV_AWS_21:Versioning is optional (var.versioning): walbucket's conditional writes refuse overwrites, and expiring WAL is the point of this bucket.
  #checkov:skip=CKV_AWS_145:SSE-KMS is optional (var.kms_key_arn); SSE-S3 (AES256) is the default and needs no key policy.
  bucket              = var.bucket_name
  force_destroy       = var.force_destroy
  object_lock_enabled = var.object_lock_days != null
  tags                = var.tags
}

resource "aws_s3_bucket_public_access_block" "this" {
  count = var.enable_public_access_block ? 1 : 0

  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  count = var.enable_ownership_controls ? 1 : 0

  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  count = var.enable_default_encryption ? 1 : 0

  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = local.kms ? "aws:kms" : "AES256"
      kms_master_key_id = var.kms_key_arn
    }
    # A bucket key cuts KMS requests (and their cost) by far; it means nothing to SSE-S3.
    bucket_key_enabled = local.kms
  }
}

resource "aws_s3_bucket_versioning" "this" {
  count = local.versioned ? 1 : 0

  bucket = aws_s3_bucket.this.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "this" {
  count = var.object_lock_days == null ? 0 : 1

  bucket = aws_s3_bucket.this.id
  rule {
    default_retention {
      mode = var.object_lock_mode
      days = var.object_lock_days
    }
  }
  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_policy" "this" {
  count = var.enable_bucket_policy ? 1 : 0

  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.bucket.json
  # A policy that names principals is refused while the public access block is still being applied.
  depends_on = [aws_s3_bucket_public_access_block.this]

  lifecycle {
    precondition {
      condition     = length(setintersection(var.archiver_principal_arns, var.restorer_principal_arns)) == 0
      error_message = "A principal cannot be both archiver and restorer: the restorer's denials would stop it archiving."
    }
  }
}
