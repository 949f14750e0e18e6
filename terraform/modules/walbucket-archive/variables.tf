# Defaults equal walbucket.lifecycle.RetentionPolicy's, so `walbucket lifecycle` with no options prints the rules
# this module creates with no retention variables set (tests/test_terraform.py checks it), on an unversioned bucket.
# On a versioned one (versioning or object lock) the rules also expire noncurrent versions after
# noncurrent_version_days (7): `walbucket lifecycle --noncurrent-days 7` prints those.

variable "bucket_name" {
  description = "Name of the S3 bucket that holds the WAL archive (created by this module)."
  type        = string
}

variable "prefix" {
  description = "walbucket's `prefix` setting: the key prefix of this archive inside the bucket (\"\" for the whole bucket). Surrounding slashes are ignored, as walbucket ignores them."
  type        = string
  default     = ""

  validation {
    condition = trim(var.prefix, "/") == "" || alltrue([
      for part in split("/", trim(var.prefix, "/")) : !contains(["", ".", ".."], part)
    ])
    error_message = "The prefix must not contain empty ('a//b'), '.' or '..' path parts, as walbucket refuses them."
  }

  validation {
    # The longest rule ID is "walbucket-abort-multipart:<prefix>"; S3 allows 255 characters.
    condition     = length(trim(var.prefix, "/")) <= 229
    error_message = "The prefix must be 229 characters or fewer, so that the lifecycle rule IDs that name it fit."
  }
}

variable "wal_retention_days" {
  description = "Days after which WAL segments (<prefix>/wal/) expire. Keep them at least as long as the oldest base backup you may restore needs them (docs/retention.md)."
  type        = number
  default     = 14

  validation {
    condition     = var.wal_retention_days >= 1 && floor(var.wal_retention_days) == var.wal_retention_days
    error_message = "wal_retention_days must be a whole number of days, 1 or more."
  }
}

variable "partial_retention_days" {
  description = "Days after which .partial files (<prefix>/partial/) expire."
  type        = number
  default     = 7

  validation {
    condition     = var.partial_retention_days >= 1 && floor(var.partial_retention_days) == var.partial_retention_days
    error_message = "partial_retention_days must be a whole number of days, 1 or more."
  }
}

variable "backup_retention_days" {
  description = "Days after which backup history files (<prefix>/backup/) expire; null means one day less than wal_retention_days (at least 1), so that a backup history file never outlives the WAL its backup needs."
  type        = number
  default     = null

  validation {
    condition     = var.backup_retention_days == null ? true : var.backup_retention_days >= 1 && floor(var.backup_retention_days) == var.backup_retention_days
    error_message = "backup_retention_days must be null or a whole number of days, 1 or more."
  }
}

variable "transition_days" {
  description = "Days after which WAL segments move to transition_storage_class; null for no transition. Must be less than wal_retention_days, and 30 or more for STANDARD_IA and ONEZONE_IA."
  type        = number
  default     = null

  validation {
    condition     = var.transition_days == null ? true : var.transition_days >= 1 && floor(var.transition_days) == var.transition_days
    error_message = "transition_days must be null or a whole number of days, 1 or more."
  }
}

variable "transition_storage_class" {
  description = "Storage class of the transition. Only classes that answer a GET at once: restore_command cannot wait for a restore from GLACIER or DEEP_ARCHIVE."
  type        = string
  default     = "STANDARD_IA"

  validation {
    condition     = contains(["STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"], var.transition_storage_class)
    error_message = "transition_storage_class must be STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING or GLACIER_IR; GLACIER and DEEP_ARCHIVE objects cannot be read by restore_command without a restore request."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which the parts of multipart uploads that never completed are removed; null for no such rule (MinIO does not support it and purges stale uploads itself)."
  type        = number
  default     = 1

  validation {
    condition     = var.abort_incomplete_multipart_days == null ? true : var.abort_incomplete_multipart_days >= 1 && floor(var.abort_incomplete_multipart_days) == var.abort_incomplete_multipart_days
    error_message = "abort_incomplete_multipart_days must be null or a whole number of days, 1 or more."
  }
}

variable "versioning" {
  description = "Enable bucket versioning. Conditional writes already refuse overwrites; versioning also keeps what a person deletes or overwrites for noncurrent_version_days. Always on with object lock."
  type        = bool
  default     = false
}

variable "noncurrent_version_days" {
  description = "On a versioned bucket, days after which noncurrent versions of segments, .partial and .backup files are removed (never of history files or identity.json)."
  type        = number
  default     = 7

  validation {
    condition     = var.noncurrent_version_days >= 1 && floor(var.noncurrent_version_days) == var.noncurrent_version_days
    error_message = "noncurrent_version_days must be a whole number of days, 1 or more."
  }
}

variable "kms_key_arn" {
  description = "ARN of a KMS key for default encryption (aws:kms, with an S3 bucket key); null for SSE-S3 (AES256)."
  type        = string
  default     = null
}

variable "object_lock_days" {
  description = "Default object lock retention in days (enables object lock, and so versioning, when the bucket is created); null for none."
  type        = number
  default     = null

  validation {
    condition     = var.object_lock_days == null ? true : var.object_lock_days >= 1 && floor(var.object_lock_days) == var.object_lock_days
    error_message = "object_lock_days must be null or a whole number of days, 1 or more."
  }
}

variable "object_lock_mode" {
  description = "Object lock mode of the default retention: GOVERNANCE (principals with s3:BypassGovernanceRetention may delete early) or COMPLIANCE (nobody may, not even the account root)."
  type        = string
  default     = "GOVERNANCE"

  validation {
    condition     = contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock_mode)
    error_message = "object_lock_mode must be GOVERNANCE or COMPLIANCE."
  }
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds objects. Keep false for an archive you may need."
  type        = bool
  default     = false
}

variable "archiver_principal_arns" {
  description = "IAM principals (roles or users) that run archive_command. The bucket policy grants them the archiver permissions and denies them deletes and unconditional writes, whatever their own policies allow."
  type        = list(string)
  default     = []
}

variable "restorer_principal_arns" {
  description = "IAM principals that only run restore_command. The bucket policy grants them read access and denies them every write and delete."
  type        = list(string)
  default     = []
}

variable "iam_policy_name_prefix" {
  description = "Name prefix of the two IAM policies (\"-archiver\" and \"-restorer\" are appended); null means \"walbucket-<bucket_name>\"."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for the bucket and the IAM policies."
  type        = map(string)
  default     = {}
}

# Features that S3-compatible stores such as MinIO do not implement; the MinIO example turns them off.

variable "enable_public_access_block" {
  description = "Manage the bucket's public access block (all four settings on). MinIO has no such API."
  type        = bool
  default     = true
}

variable "enable_ownership_controls" {
  description = "Set object ownership to BucketOwnerEnforced (ACLs disabled). MinIO has no such API."
  type        = bool
  default     = true
}

variable "enable_default_encryption" {
  description = "Manage default server-side encryption. MinIO accepts it only with a KMS configured."
  type        = bool
  default     = true
}

variable "enable_bucket_policy" {
  description = "Manage the bucket policy (deny plain HTTP; grants and denials for the principals above). Turn off for an endpoint reached over plain HTTP, which the policy would lock out."
  type        = bool
  default     = true
}

variable "create_iam_policies" {
  description = "Create the archiver and restorer IAM policies. Their JSON is an output either way (MinIO: `mc admin policy create`)."
  type        = bool
  default     = true
}

variable "require_if_none_match" {
  description = "Deny object-creating requests without If-None-Match (condition key s3:if-none-match), so the archiver cannot overwrite. Stores whose policy language lacks that key (MinIO) refuse such a policy: turn it off there and rely on walbucket's conditional writes and on versioning."
  type        = bool
  default     = true
}
