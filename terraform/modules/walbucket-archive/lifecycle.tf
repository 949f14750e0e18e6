# Retention: the same rules, ids and prefixes as walbucket.lifecycle.lifecycle_configuration (`walbucket lifecycle`);
# tests/test_terraform.py evaluates this file and fails when the two differ.
#
# Key layout (docs/key-layout.md): <prefix>/wal/, <prefix>/partial/ and <prefix>/backup/ expire;
# <prefix>/history/ and <prefix>/identity.json never do, so no expiring rule filters on a prefix that holds them.

locals {
  id_suffix             = local.prefix == "" ? "" : ":${local.prefix}"
  # A day less than WAL by default: a .backup file is uploaded after the first segment its backup needs (often on the
  # next UTC day), and must not outlive it (walbucket verify: backup-outlives-wal).
  backup_retention_days = var.backup_retention_days == null ? max(var.wal_retention_days - 1, 1) : var.backup_retention_days
  # Noncurrent versions exist only on a versioned bucket.
  noncurrent_days = local.versioned ? var.noncurrent_version_days : null

  expiring_rules = [
    {
      id              = "walbucket-segment${local.id_suffix}"
      prefix          = "${local.root}wal/"
      days            = var.wal_retention_days
      transition_days = var.transition_days
    },
    {
      id              = "walbucket-partial${local.id_suffix}"
      prefix          = "${local.root}partial/"
      days            = var.partial_retention_days
      transition_days = null
    },
    {
      id              = "walbucket-backup${local.id_suffix}"
      prefix          = "${local.root}backup/"
      days            = local.backup_retention_days
      transition_days = null
    },
  ]
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  dynamic "rule" {
    for_each = local.expiring_rules
    content {
      id     = rule.value.id
      status = "Enabled"
      filter {
        prefix = rule.value.prefix
      }
      expiration {
        days = rule.value.days
      }
      dynamic "transition" {
        for_each = rule.value.transition_days == null ? [] : [rule.value.transition_days]
        content {
          days          = transition.value
          storage_class = var.transition_storage_class
        }
      }
      dynamic "noncurrent_version_expiration" {
        for_each = local.noncurrent_days == null ? [] : [local.noncurrent_days]
        content {
          noncurrent_days = noncurrent_version_expiration.value
        }
      }
    }
  }

  # Removes only the parts of uploads that never completed, so it may cover history/ and identity.json too.
  dynamic "rule" {
    for_each = var.abort_incomplete_multipart_days == null ? [] : [var.abort_incomplete_multipart_days]
    content {
      id     = "walbucket-abort-multipart${local.id_suffix}"
      status = "Enabled"
      filter {
        prefix = local.root
      }
      abort_incomplete_multipart_upload {
        days_after_initiation = rule.value
      }
    }
  }

  # Noncurrent version expiration needs versioning in place first.
  depends_on = [aws_s3_bucket_versioning.this]

  lifecycle {
    precondition {
      condition     = var.transition_days == null ? true : var.transition_days < var.wal_retention_days
      error_message = "transition_days must be less than wal_retention_days: a transition must come before the expiration."
    }
    precondition {
      condition     = var.transition_days == null || !contains(["STANDARD_IA", "ONEZONE_IA"], var.transition_storage_class) ? true : var.transition_days >= 30
      error_message = "S3 transitions to STANDARD_IA and ONEZONE_IA only after 30 days or more."
    }
  }
}
