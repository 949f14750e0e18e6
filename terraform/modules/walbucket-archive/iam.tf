# Least privilege for the two sides (docs/retention.md, "IAM policies"):
# - the archiver (archive_command, walbucket push) creates and reads objects under the prefix; it cannot delete, and
#   cannot overwrite: every object-creating request must carry If-None-Match (walbucket sends `If-None-Match: *` for
#   segments, .partial, .history, .backup, identity.json and the conditional-write probe). A second create of a key
#   answers 412, which walbucket expects (duplicates, the probe).
# - the restorer (restore_command, walbucket get) only reads; it may also read the bucket's lifecycle rules, which
#   walbucket verify compares with the backups recorded in the archive (run verify with the restorer's credentials).
# Both may list the prefix: without s3:ListBucket, S3 answers 403 instead of 404 for a missing key, and a
# restore_command cannot tell "not archived" (recovery may end) from "refused" (recovery must stop).

locals {
  bucket_arn  = aws_s3_bucket.this.arn
  objects_arn = "${aws_s3_bucket.this.arn}/${local.root}*"

  archiver_object_actions = [
    "s3:PutObject", # also CreateMultipartUpload, UploadPart and CompleteMultipartUpload
    "s3:PutObjectTagging",
    "s3:GetObject",
    "s3:GetObjectTagging",
    "s3:AbortMultipartUpload",
  ]
  restorer_object_actions = ["s3:GetObject", "s3:GetObjectTagging"]
  restorer_bucket_actions = ["s3:ListBucket", "s3:GetLifecycleConfiguration"]

  # Never granted to the archiver; denied to the principals in var.archiver_principal_arns by the bucket policy.
  archiver_denied_actions = [
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:DeleteObjectTagging",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
    "s3:BypassGovernanceRetention",
    "s3:PutLifecycleConfiguration",
    "s3:PutBucketVersioning",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
    "s3:DeleteBucket",
  ]

  policy_name_prefix = var.iam_policy_name_prefix == null ? "walbucket-${var.bucket_name}" : var.iam_policy_name_prefix
}

data "aws_iam_policy_document" "archiver" {
  statement {
    sid       = "ListThePrefix"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    dynamic "condition" {
      for_each = local.prefix == "" ? [] : [local.root]
      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${condition.value}*"]
      }
    }
  }

  statement {
    sid       = "CreateAndReadObjects"
    actions   = local.archiver_object_actions
    resources = [local.objects_arn]
  }

  # A Deny wins over any Allow: a PutObject or CompleteMultipartUpload without If-None-Match is refused (403).
  # s3:ObjectCreationOperation is false for CreateMultipartUpload and UploadPart, which carry no such header.
  dynamic "statement" {
    for_each = var.require_if_none_match ? [local.objects_arn] : []
    content {
      sid       = "CreateOnlyWithIfNoneMatch"
      effect    = "Deny"
      actions   = ["s3:PutObject"]
      resources = [statement.value]
      condition {
        test     = "Null"
        variable = "s3:if-none-match"
        values   = ["true"]
      }
      condition {
        test     = "Bool"
        variable = "s3:ObjectCreationOperation"
        values   = ["true"]
      }
    }
  }

  dynamic "statement" {
    for_each = local.kms ? [var.kms_key_arn] : []
    content {
      sid       = "UseTheBucketKey"
      actions   = ["kms:GenerateDataKey", "kms:Decrypt"] # Decrypt: multipart uploads and reads
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "restorer" {
  statement {
    sid       = "ListThePrefix"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    dynamic "condition" {
      for_each = local.prefix == "" ? [] : [local.root]
      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${condition.value}*"]
      }
    }
  }

  statement {
    sid       = "ReadObjects"
    actions   = local.restorer_object_actions
    resources = [local.objects_arn]
  }

  # walbucket verify: does the lifecycle expire WAL that a backup recorded in the archive still needs?
  statement {
    sid       = "ReadTheLifecycleRules"
    actions   = ["s3:GetLifecycleConfiguration"]
    resources = [local.bucket_arn]
  }

  dynamic "statement" {
    for_each = local.kms ? [var.kms_key_arn] : []
    content {
      sid       = "DecryptWithTheBucketKey"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "archiver" {
  count = var.create_iam_policies ? 1 : 0

  name        = "${local.policy_name_prefix}-archiver"
  description = "walbucket archive_command: create and read WAL under s3://${var.bucket_name}/${local.root}; no deletes, no overwrites"
  policy      = data.aws_iam_policy_document.archiver.json
  tags        = var.tags
}

resource "aws_iam_policy" "restorer" {
  count = var.create_iam_policies ? 1 : 0

  name        = "${local.policy_name_prefix}-restorer"
  description = "walbucket restore_command: read WAL under s3://${var.bucket_name}/${local.root}, and the lifecycle rules (verify)"
  policy      = data.aws_iam_policy_document.restorer.json
  tags        = var.tags
}

# The bucket policy: TLS only for everyone; for the named principals, the same grants as the IAM policies plus
# denials that no identity policy of theirs can lift.
data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.bucket_arn, "${local.bucket_arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  dynamic "statement" {
    for_each = length(var.archiver_principal_arns) + length(var.restorer_principal_arns) == 0 ? [] : [
      concat(var.archiver_principal_arns, var.restorer_principal_arns)
    ]
    content {
      sid       = "ListThePrefix"
      actions   = ["s3:ListBucket"]
      resources = [local.bucket_arn]
      principals {
        type        = "AWS"
        identifiers = statement.value
      }
      dynamic "condition" {
        for_each = local.prefix == "" ? [] : [local.root]
        content {
          test     = "StringLike"
          variable = "s3:prefix"
          values   = ["${condition.value}*"]
        }
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.archiver_principal_arns) == 0 ? [] : [var.archiver_principal_arns]
    content {
      sid       = "ArchiverCreatesAndReads"
      actions   = local.archiver_object_actions
      resources = [local.objects_arn]
      principals {
        type        = "AWS"
        identifiers = statement.value
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.archiver_principal_arns) == 0 || !var.require_if_none_match ? [] : [var.archiver_principal_arns]
    content {
      sid       = "ArchiverCreatesOnlyWithIfNoneMatch"
      effect    = "Deny"
      actions   = ["s3:PutObject"]
      resources = ["${local.bucket_arn}/*"]
      principals {
        type        = "AWS"
        identifiers = statement.value
      }
      condition {
        test     = "Null"
        variable = "s3:if-none-match"
        values   = ["true"]
      }
      condition {
        test     = "Bool"
        variable = "s3:ObjectCreationOperation"
        values   = ["true"]
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.archiver_principal_arns) == 0 ? [] : [var.archiver_principal_arns]
    content {
      sid       = "ArchiverNeverDeletes"
      effect    = "Deny"
      actions   = local.archiver_denied_actions
      resources = [local.bucket_arn, "${local.bucket_arn}/*"]
      principals {
        type        = "AWS"
        identifiers = statement.value
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.restorer_principal_arns) == 0 ? [] : [var.restorer_principal_arns]
    content {
      sid       = "RestorerReads"
      actions   = local.restorer_object_actions
      resources = [local.objects_arn]
      principals {
        type        = "AWS"
        identifiers = statement.value
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.restorer_principal_arns) == 0 ? [] : [var.restorer_principal_arns]
    content {
      sid       = "RestorerReadsTheLifecycleRules"
      actions   = ["s3:GetLifecycleConfiguration"]
      resources = [local.bucket_arn]
      principals {
        type        = "AWS"
        identifiers = statement.value
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.restorer_principal_arns) == 0 ? [] : [var.restorer_principal_arns]
    content {
      sid         = "RestorerOnlyReads"
      effect      = "Deny"
      not_actions = concat(local.restorer_object_actions, local.restorer_bucket_actions)
      resources   = [local.bucket_arn, "${local.bucket_arn}/*"]
      principals {
        type        = "AWS"
        identifiers = statement.value
      }
    }
  }
}
