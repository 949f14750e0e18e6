"""walbucket: archive PostgreSQL's write-ahead log to S3-compatible object storage, and restore it."""

__version__ = "0.1.0"
__all__ = ["__version__"]
