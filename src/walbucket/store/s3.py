"""The S3 adapter: boto3 underneath, walbucket.errors above. botocore's exceptions never leave this module.

One retry policy (tenacity) wraps every request: exponential backoff with jitter, for transient errors only, until
the retry budget is spent. 404 and 412 are answers, never retried; 403 and other refusals fail at once.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

import tenacity
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ResponseStreamingError,
    SSLError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from ..errors import ConditionalWritesUnsupported, ConfigError, DamagedDownload, StoreError, StoreUnavailable
from .protocol import LifecycleRules, ObjectInfo, StoredObject

__all__ = ["S3Store", "retry_policy"]

log = logging.getLogger("walbucket.s3")
T = TypeVar("T")

_ABSENT = {"404", "NoSuchKey", "NotFound"}
_EXISTS = {"412", "PreconditionFailed"}
_TRANSIENT = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "ConditionalRequestConflict",
    "OperationAborted", "BadDigest", "XAmzContentSHA256Mismatch",
}  # fmt: skip
_NOT_IMPLEMENTED = {"NotImplemented", "501"}
_NO_LIFECYCLE = "NoSuchLifecycleConfiguration"


class _Transient(Exception):
    """Internal marker: the request may succeed if repeated."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def retry_policy(budget: float, sleep: Callable[[float], None] | None = None) -> tenacity.Retrying:
    """Retry transient failures with full-jitter exponential backoff until ``budget`` seconds have passed."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(_Transient),
        stop=tenacity.stop_after_delay(budget),
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=min(10.0, max(budget / 4, 0.1))),
        before_sleep=lambda state: log.info(
            "retrying after %s (attempt %d)", state.outcome and state.outcome.exception(), state.attempt_number
        ),
        sleep=sleep or tenacity.nap.sleep,
        reraise=True,
    )


def _code(exc: ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return str(error.get("Code", status)), status


def _classify(exc: Exception, key: str) -> Exception:  # noqa: PLR0911 - one flat table of cases
    """Translate a botocore exception into a walbucket error or the internal _Transient marker."""
    if isinstance(exc, ClientError):
        code, status = _code(exc)
        if code in _TRANSIENT or (status >= 500 and code not in _NOT_IMPLEMENTED):
            return _Transient(f"{code} on '{key}'")
        if code in {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return StoreError(
                f"access denied ({code}) on '{key}'",
                hint="check the credentials and that the policy grants this operation on the bucket and prefix",
            )
        if code == "NoSuchBucket":
            return StoreError(f"no such bucket for '{key}'", hint="check the 'bucket' and 'endpoint_url' settings")
        return StoreError(f"{code} (HTTP {status}) on '{key}'")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ConfigError(
            f"no usable AWS credentials: {exc}",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or an instance role",
        )
    if isinstance(exc, FlexibleChecksumError):  # the endpoint's own checksum of the body: same verdict as ours
        return DamagedDownload(
            f"object '{key}' fails the endpoint's checksum: {exc}",
            hint="the stored object or its download is damaged; restore stopped so that recovery does not replay "
            "bad WAL",
        )
    if isinstance(exc, SSLError):
        return StoreError(f"TLS failure talking to the endpoint for '{key}': {exc}", hint="check ca_bundle")
    if isinstance(exc, (BotoConnectionError, HTTPClientError, IncompleteReadError, ResponseStreamingError)):
        return _Transient(f"{type(exc).__name__} on '{key}'")
    if isinstance(exc, BotoCoreError):
        return StoreError(f"{exc} on '{key}'")
    return exc


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
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._budget = retry_budget
        self._sleep = sleep
        self._threshold = multipart_threshold
        self._chunk = multipart_chunk_size
        self._put_extra: dict[str, str] = {}
        if storage_class:
            self._put_extra["StorageClass"] = storage_class
        if sse:
            self._put_extra["ServerSideEncryption"] = sse
        if sse_kms_key_id:
            self._put_extra["SSEKMSKeyId"] = sse_kms_key_id

    def _call(self, key: str, fn: Callable[[], T]) -> T:
        """Run one request under the retry policy, translating every botocore error."""

        def attempt() -> T:
            try:
                return fn()
            except Exception as exc:
                translated = _classify(exc, key)
                if translated is exc:
                    raise
                raise translated from exc

        try:
            return retry_policy(self._budget, self._sleep)(attempt)
        except _Transient as exc:
            raise StoreUnavailable(
                f"storage unavailable for '{key}' after retrying for {self._budget:g}s: {exc.message}",
                hint="the endpoint is down, unreachable or throttling; raise retry_budget to wait longer",
            ) from exc

    def _absent_is_none(self, key: str, fn: Callable[[], T]) -> T | None:
        def request() -> T | None:
            try:
                return fn()
            except ClientError as exc:
                if _code(exc)[0] in _ABSENT:
                    return None
                raise

        return self._call(key, request)

    def read(self, key: str) -> StoredObject | None:
        def request() -> StoredObject:
            response = self._client.get_object(Bucket=self._bucket, Key=key)
            body = response["Body"].read()
            return StoredObject(ObjectInfo(key, len(body), dict(response.get("Metadata", {}))), body)

        return self._absent_is_none(key, request)

    def head(self, key: str) -> ObjectInfo | None:
        def request() -> ObjectInfo:
            response = self._client.head_object(Bucket=self._bucket, Key=key)
            return ObjectInfo(key, int(response["ContentLength"]), dict(response.get("Metadata", {})))

        return self._absent_is_none(key, request)

    def tags(self, key: str) -> dict[str, str] | None:
        def request() -> dict[str, str]:
            response = self._client.get_object_tagging(Bucket=self._bucket, Key=key)
            return {t["Key"]: t["Value"] for t in response["TagSet"]}

        return self._absent_is_none(key, request)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}

            def page_request(extra: dict[str, str] = extra) -> dict[str, Any]:
                return dict(self._client.list_objects_v2(Bucket=self._bucket, Prefix=prefix, **extra))

            page = self._call(prefix, page_request)
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"], int(item["Size"]), last_modified=_posix(item.get("LastModified")))
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def list_prefixes(self, prefix: str) -> Iterator[str]:
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}

            def page_request(extra: dict[str, str] = extra) -> dict[str, Any]:
                return dict(self._client.list_objects_v2(Bucket=self._bucket, Prefix=prefix, Delimiter="/", **extra))

            page = self._call(prefix, page_request)
            for item in page.get("CommonPrefixes", []):
                yield str(item["Prefix"])
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def lifecycle_rules(self) -> LifecycleRules | None:
        def request() -> LifecycleRules | None:
            try:
                response = self._client.get_bucket_lifecycle_configuration(Bucket=self._bucket)
            except ClientError as exc:
                if _code(exc)[0] == _NO_LIFECYCLE:
                    return None
                raise
            return [dict(rule) for rule in response.get("Rules", [])]

        return self._call(f"lifecycle configuration of bucket {self._bucket}", request)

    def create(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> bool:
        return self._write(key, body, metadata, tags, conditional=True)

    def put(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> None:
        self._write(key, body, metadata, tags, conditional=False)

    def _write(
        self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str], *, conditional: bool
    ) -> bool:
        condition = {"IfNoneMatch": "*"} if conditional else {}
        common = {"Bucket": self._bucket, "Key": key, "Metadata": dict(metadata), "Tagging": urlencode(tags)}

        def request() -> bool:
            try:
                if len(body) > self._threshold:
                    self._multipart(key, body, common, condition)
                else:
                    self._client.put_object(
                        Body=body, ChecksumSHA256=_b64sha256(body), **common, **condition, **self._put_extra
                    )
                return True
            except ClientError as exc:
                code, _status = _code(exc)
                if conditional and code in _EXISTS:
                    return False
                if conditional and code in _NOT_IMPLEMENTED:
                    raise ConditionalWritesUnsupported(
                        f"the endpoint rejects conditional writes (If-None-Match) for '{key}'",
                        hint='use an endpoint that honours them, or set conditional_writes = "auto" to fall back to '
                        "HEAD-then-PUT",
                    ) from exc
                raise

        return self._call(key, request)

    def _multipart(self, key: str, body: bytes, common: dict[str, Any], condition: dict[str, str]) -> None:
        upload = self._client.create_multipart_upload(ChecksumAlgorithm="SHA256", **common, **self._put_extra)
        upload_id = upload["UploadId"]
        try:
            parts = []
            view = memoryview(body)
            for number, start in enumerate(range(0, len(body), self._chunk), start=1):
                chunk = view[start : start + self._chunk]
                checksum = _b64sha256(chunk)
                response = self._client.upload_part(
                    Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number,
                    Body=bytes(chunk), ChecksumSHA256=checksum,
                )  # fmt: skip
                parts.append({"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum})
            self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **condition
            )
        except BaseException:
            try:
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - best effort; the lifecycle rule removes what is left
                log.debug("could not abort multipart upload of '%s'", key)
            raise


def _posix(value: Any) -> float | None:
    """Return a listing's LastModified (a datetime, as botocore parses it) in POSIX seconds."""
    return None if value is None else float(value.timestamp())


def _b64sha256(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
