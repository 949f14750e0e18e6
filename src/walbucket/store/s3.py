"""The S3 adapter: botocore underneath, walbucket's errors above. botocore's exceptions never leave the adapter
(this module, s3_bucket.py, s3_wire.py, s3_proof.py, s3_probe.py).

One retry policy (tenacity) wraps every request: exponential backoff with jitter, for transient errors only, until
the retry budget is spent. The store's own 404 (``NoSuchKey``) and 412 are answers, never retried; 403 and other
refusals fail at once.

Absence is proven only by the store's own word: S3's ``NoSuchKey`` error document (AWS, MinIO and Ceph RGW send it).
A 404 without it (an ingress' default backend, a Go server's ``404 page not found``, an empty body) says nothing about
the archive: it is retried like an outage, because answering "not in the archive" would end a recovery early. HEAD
answers carry no body, so a HEAD's 404 is confirmed by a one-byte GET before it counts as absence.

An upload counts as stored only when the store's answer proves it holds these bytes (s3_proof.py).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from botocore.exceptions import (
    ClientError,
)

from walbucket.core.errors import (
    ConditionalWritesUnsupported,
)
from walbucket.store import s3_wire as wire
from walbucket.store.protocol import LifecycleRules, ObjectInfo, StoredObject, StoreFeatures
from walbucket.store.s3_bucket import S3Bucket
from walbucket.store.s3_proof import prove
from walbucket.store.s3_wire import retry_policy

__all__ = ["S3Store", "retry_policy"]

log = logging.getLogger("walbucket.s3")
T = TypeVar("T")


class S3Store:
    """A Store on one bucket of an S3-compatible endpoint."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        retry_budget: float = 60.0,
        storage_class: str | None = None,
        sse: str | None = None,
        sse_kms_key_id: str | None = None,
        multipart_threshold: int = 64 << 20,
        multipart_chunk_size: int = 16 << 20,
        sleep: Callable[[float], None] | None = None,
        features: StoreFeatures | None = None,
    ) -> None:
        put_extra: dict[str, str] = {}
        if storage_class:
            put_extra["StorageClass"] = storage_class
        if sse:
            put_extra["ServerSideEncryption"] = sse
        if sse_kms_key_id:
            put_extra["SSEKMSKeyId"] = sse_kms_key_id
        self._s3 = S3Bucket(client, bucket, retry_budget, sleep, put_extra, multipart_chunk_size)
        self._features = features or StoreFeatures()
        self._threshold = multipart_threshold

    def _absent_is_none(self, key: str, fn: Callable[[], T], *, bodiless: bool = False) -> T | None:
        """Run ``fn``; None only when the store says NoSuchKey (``bodiless``: a HEAD, whose 404 a GET confirms)."""

        def request() -> T | None:
            try:
                return fn()
            except ClientError as exc:
                code = wire.code_of(exc)[0]
                if code == wire.NO_SUCH_KEY:
                    return None
                if bodiless and code in wire.BARE_404 and self._confirmed_absent(key):
                    return None
                raise

        return self._s3.call(key, request)

    def _confirmed_absent(self, key: str) -> bool:
        """Ask for one byte of ``key``: True only when the store answers with its own NoSuchKey."""
        try:
            self._s3.client.get_object(Bucket=self._s3.name, Key=key, Range="bytes=0-0")["Body"].read()
        except ClientError as exc:
            if wire.code_of(exc)[0] == wire.NO_SUCH_KEY:
                return True
            raise
        raise wire.Transient(f"HEAD answered 404 for '{key}' but GET finds the object")

    def read(self, key: str) -> StoredObject | None:
        def request() -> StoredObject:
            response = self._s3.client.get_object(Bucket=self._s3.name, Key=key)
            body = response["Body"].read()
            return StoredObject(ObjectInfo(key, len(body), dict(response.get("Metadata", {}))), body)

        return self._absent_is_none(key, request)

    def head(self, key: str) -> ObjectInfo | None:
        def request() -> ObjectInfo:
            response = self._s3.client.head_object(Bucket=self._s3.name, Key=key)
            return ObjectInfo(key, int(response["ContentLength"]), dict(response.get("Metadata", {})))

        return self._absent_is_none(key, request, bodiless=True)

    def tags(self, key: str) -> dict[str, str] | None:
        def request() -> dict[str, str]:
            try:
                response = self._s3.client.get_object_tagging(Bucket=self._s3.name, Key=key)
            except ClientError as exc:
                if wire.code_of(exc)[0] != wire.NO_SUCH_KEY and wire.refuses_header(*wire.code_of(exc)):
                    return {}  # a store without the tagging API (Garage, R2): its objects have no tags
                raise
            return {t["Key"]: t["Value"] for t in response.get("TagSet", [])}  # RGW answers an empty body for none

        return self._absent_is_none(key, request)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}

            def page_request(extra: dict[str, str] = extra) -> dict[str, Any]:
                return dict(self._s3.client.list_objects_v2(Bucket=self._s3.name, Prefix=prefix, **extra))

            page = self._s3.call(prefix, page_request)
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"], int(item["Size"]), last_modified=wire.posix(item.get("LastModified")))
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def list_prefixes(self, prefix: str) -> Iterator[str]:
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}

            def page_request(extra: dict[str, str] = extra) -> dict[str, Any]:
                s3 = self._s3
                return dict(s3.client.list_objects_v2(Bucket=s3.name, Prefix=prefix, Delimiter="/", **extra))

            page = self._s3.call(prefix, page_request)
            for item in page.get("CommonPrefixes", []):
                yield str(item["Prefix"])
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def lifecycle_rules(self) -> LifecycleRules | None:
        def request() -> LifecycleRules | None:
            try:
                response = self._s3.client.get_bucket_lifecycle_configuration(Bucket=self._s3.name)
            except ClientError as exc:
                if wire.code_of(exc)[0] == wire.NO_LIFECYCLE:
                    return None
                raise
            return [dict(rule) for rule in response.get("Rules", [])]

        return self._s3.call(f"lifecycle configuration of bucket {self._s3.name}", request)

    def create(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> bool:
        return self._write(key, body, metadata, tags, conditional=True)

    def put(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> None:
        self._write(key, body, metadata, tags, conditional=False)

    def probe_features(self, key: str, *, conditional: bool = True) -> StoreFeatures:
        from walbucket.store.s3_probe import probe_features

        return probe_features(self._s3, key, conditional=conditional)

    def with_features(self, features: StoreFeatures) -> S3Store:
        adapted = copy.copy(self)
        adapted._features = features
        return adapted

    def _write(
        self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str], *, conditional: bool
    ) -> bool:
        features = self._features
        condition = {"IfNoneMatch": "*"} if conditional else {}
        common: dict[str, Any] = {"Bucket": self._s3.name, "Key": key, "Metadata": dict(metadata)}
        if features.tags and tags:
            common["Tagging"] = urlencode(tags, quote_via=quote)  # %20, not '+': Ceph RGW decodes only that
        # Where the endpoint ignores the condition on CompleteMultipartUpload, a conditional create goes as one PUT
        # (S3 takes up to 5 GiB in one; PostgreSQL's largest segment is 1 GiB): never an unconditional overwrite.
        multipart = len(body) > self._threshold and (features.conditional_multipart or not conditional)
        if conditional and not multipart and len(body) > wire.SINGLE_PUT_LIMIT:
            raise ConditionalWritesUnsupported(
                f"'{key}' is too large for one PUT, and the endpoint ignores If-None-Match on multipart uploads",
                hint='set conditional_writes = "auto" to fall back to HEAD-then-PUT for such objects',
            )

        def request() -> bool:
            try:
                if multipart:
                    response = self._s3.multipart(key, body, common, condition, features.checksum)
                    held = prove(self._s3, key, body, metadata, response, sent={})
                    if "Tagging" in common and held is not None and not int(held.get("TagCount") or 0):
                        self._tag(key, tags)  # Ceph RGW 16.2 drops the tags of CreateMultipartUpload
                else:
                    sent = wire.integrity(features.checksum, body)
                    response = self._s3.client.put_object(
                        Body=body, **sent, **common, **condition, **self._s3.put_extra
                    )
                    prove(self._s3, key, body, metadata, response, sent=sent)
                return True
            except ClientError as exc:
                code, _status = wire.code_of(exc)
                if conditional and code in wire.EXISTS:
                    return False
                if conditional and code in wire.NOT_IMPLEMENTED:
                    raise ConditionalWritesUnsupported(
                        f"the endpoint rejects conditional writes (If-None-Match) for '{key}'",
                        hint='use an endpoint that honours them, or set conditional_writes = "auto" to fall back to '
                        "HEAD-then-PUT",
                    ) from exc
                raise

        return self._s3.call(key, request)

    def _tag(self, key: str, tags: Mapping[str, str]) -> None:
        tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
        self._s3.client.put_object_tagging(Bucket=self._s3.name, Key=key, Tagging={"TagSet": tag_set})
