"""The Store port: the handful of object-storage operations walbucket needs.

The contract lives in these docstrings and is tested by tests/test_store_contract.py against every adapter.
Adapters translate their own errors into core/errors.py's: StoreUnavailable for transient failures that outlasted
the retry budget, StoreError for refusals. Absence is an answer (None or False), never an exception.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["CHECKSUMS", "LifecycleRules", "ObjectInfo", "Store", "StoreFeatures", "StoredObject"]

# A bucket's lifecycle rules as S3 stores them (the ``Rules`` of GetBucketLifecycleConfiguration).
LifecycleRules = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object's key and stored size; ``metadata`` where read, ``last_modified`` where listed.

    ``last_modified`` (POSIX seconds, the object's upload) is an observation of the store, not part of the object's
    identity: it takes no part in comparisons.
    """

    key: str
    size: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    last_modified: float | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class StoredObject:
    info: ObjectInfo
    body: bytes


CHECKSUMS = ("sha256", "md5", "none")  # the integrity header of an upload, strongest first


@dataclass(frozen=True, slots=True)
class StoreFeatures:
    """How uploads are written, as far as the endpoint honours it (probed, or set by the user).

    ``tags``: object tags go with each upload (x-amz-tagging); Cloudflare R2, Backblaze B2 and Garage refuse them.
    ``checksum``: the integrity header each upload carries: ``sha256`` (x-amz-checksum-sha256), ``md5``
    (Content-MD5; what Object Lock buckets need at least) or ``none``.
    ``conditional_multipart``: If-None-Match is honoured on CompleteMultipartUpload; where it is not (Ceph RGW
    before Tentacle), conditional creates go as one PUT whatever their size.
    ``checksum_checked``: the store refuses a body that does not match ``checksum`` (as probed; a store may accept
    a header and ignore it).
    """

    tags: bool = True
    checksum: str = "sha256"
    conditional_multipart: bool = True
    checksum_checked: bool = True


class Store(Protocol):
    def read(self, key: str) -> StoredObject | None:
        """Return the object with its metadata in one request, or None when there is no such key."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Return the object's size and metadata, or None when there is no such key."""
        ...

    def create(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> bool:
        """Store the object only if the key is free (If-None-Match: *).

        Return True when this call created it, False when the key already existed (HTTP 412), in which case
        nothing was written. An endpoint that ignores the condition overwrites and returns True: callers that
        depend on the condition probe for it first (see walbucket.conditional).
        """
        ...

    def put(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> None:
        """Store the object unconditionally; only for endpoints without conditional writes."""
        ...

    def tags(self, key: str) -> dict[str, str] | None:
        """Return the object's tags, or None when there is no such key."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with ``prefix``, in key order, with its upload time (no metadata)."""
        ...

    def list_prefixes(self, prefix: str) -> Iterator[str]:
        """Yield each distinct ``prefix + name + '/'`` that starts a key, ``name`` holding no '/', in key order.

        One level of "directories" below ``prefix`` (S3's CommonPrefixes for Delimiter='/'), so that callers can
        list a large prefix in parallel, one sub-prefix per request stream. Keys without a further '/' are skipped.
        """
        ...

    def with_features(self, features: StoreFeatures) -> Store:
        """Return a store on the same endpoint and bucket whose uploads follow ``features``."""
        ...

    def probe_features(self, key: str, *, conditional: bool = True) -> StoreFeatures:
        """Find out what the endpoint honours, creating only keys that start with ``key`` (fresh probe keys).

        ``conditional``: the endpoint honours If-None-Match on PUT, so the probe's writes carry it too (a bucket
        policy may require it), and conditional multipart completion is worth probing. Tags and checksum headers: a
        refusal of the header (HTTP 400 or 501) means "not supported", a wrong checksum refused means "checked";
        access denied is an error. Conditional multipart completion: one small multipart upload completed twice with
        If-None-Match; honoured only if the second completion is refused (412).
        """
        ...

    def lifecycle_rules(self) -> LifecycleRules | None:
        """Return the bucket's lifecycle rules, or None when the bucket has none (no lifecycle configuration).

        Read-only: walbucket never changes a bucket's configuration.
        """
        ...
