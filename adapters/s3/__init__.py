"""S3-compatible object storage for job outputs (boto3, imported lazily), with its errors."""
