terraform {
  # 1.5: preconditions, optional() and cross-variable checks as used here.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.0: s3_use_path_style and the split S3 bucket resources used by the MinIO example.
      version = ">= 5.0"
    }
  }
}
