"""Ports and adapters for object storage. Importing this package does not import boto3."""

from .protocol import ObjectInfo, Store, StoredObject

__all__ = ["ObjectInfo", "Store", "StoredObject"]
