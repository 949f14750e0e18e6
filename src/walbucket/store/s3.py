"""The S3 adapter: boto3 underneath, walbucket.errors above. botocore's exceptions never leave this module.

One retry policy (tenacity) wraps every request: exponential backoff with jitter, for transient errors only, until
the retry budget is spent. The store's own 404 (``NoSuchKey``) and 412 are answers, never retried; 403 and other
refusals fail at once.

Absence is proven only by the store's own word: S3's ``NoSuchKey`` error document (AWS, MinIO and Ceph RGW send it).
A 404 without it (an ingress' default backend, a Go server's ``404 page not found``, an empty body) says nothing about
the archive: it is retried like an outage, because answering "not in the archive" would end a recovery early. HEAD
answers carry no body, so a HEAD's 404 is confirmed by a one-byte GET before it counts as absence.

An upload counts as stored only when the store's answer proves it holds these bytes (:meth:`S3Store._prove`): the
``x-amz-checksum-sha256`` it echoes equals the one sent; else an ETag equal to the body's MD5 (single-part uploads,
no SSE-KMS); else one HEAD comparing size and walbucket's SHA-256 metadata. A bare 200 proves nothing.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

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

from walbucket.core.errors import (
    ConditionalWritesUnsupported,
    ConfigError,
    DamagedDownload,
    IntegrityError,
    StoreError,
    StoreUnavailable,
)
from walbucket.core.keylayout import META_SHA256
from walbucket.store.protocol import LifecycleRules, ObjectInfo, StoredObject, StoreFeatures

__all__ = ["S3Store", "retry_policy"]

log = logging.getLogger("walbucket.s3")
T = TypeVar("T")

_NO_SUCH_KEY = "NoSuchKey"
_BARE_404 = {"404", "NotFound"}  # botocore's code for a 404 whose body is not S3's error document
_EXISTS = {"412", "PreconditionFailed"}
_TRANSIENT = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "ConditionalRequestConflict",
    "OperationAborted", "BadDigest", "XAmzContentSHA256Mismatch",
}  # fmt: skip
_NOT_IMPLEMENTED = {"NotImplemented", "501"}
_NO_LIFECYCLE = "NoSuchLifecycleConfiguration"
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_REFUSES_HEADER = {400, 501}
_DIGEST_MISMATCH = {
    "BadDigest",
    "InvalidDigest",
    "XAmzContentChecksumMismatch",
    "XAmzContentSHA256Mismatch",
}  # how stores refuse a header they do not support (InvalidArgument, NotImplemented)
_SINGLE_PUT_LIMIT = 5 << 30  # S3's largest single PUT
_MD5_HEX = re.compile("[0-9a-f]{32}")


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


def _label(code: str, status: int, *, with_status: bool = True) -> str:
    """``HTTP 403`` for a bare status (not the store's error document), else the store's code (and the status)."""
    if code == str(status):
        return f"HTTP {status}"
    return f"{code} (HTTP {status})" if with_status else code


def _foreign_404(exc: ClientError, key: str) -> _Transient:
    kind = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("content-type") or "no content type"
    return _Transient(
        f"HTTP 404 that is not the store's NoSuchKey ({kind}) on '{key}': a proxy or ingress answered, not the archive"
    )


def _classify(exc: Exception, key: str) -> Exception:  # noqa: PLR0911 - one flat table of cases
    """Translate a botocore exception into a walbucket error or the internal _Transient marker."""
    if isinstance(exc, ClientError):
        code, status = _code(exc)
        if code in _TRANSIENT or (status >= 500 and code not in _NOT_IMPLEMENTED):
            return _Transient(f"{code} on '{key}'")
        if code in _BARE_404:
            return _foreign_404(exc, key)
        if code in _DENIED:
            return StoreError(
                f"access denied ({_label(code, status, with_status=False)}) on '{key}'",
                hint="check the credentials and that the policy grants this operation on the bucket and prefix",
            )
        if code == "NoSuchBucket":
            return StoreError(f"no such bucket for '{key}'", hint="check the 'bucket' and 'endpoint_url' settings")
        return StoreError(f"{_label(code, status)} on '{key}'")
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
        features: StoreFeatures | None = None,
    ) -> None:
        self._client = client
        self._features = features or StoreFeatures()
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

    def _absent_is_none(self, key: str, fn: Callable[[], T], *, bodiless: bool = False) -> T | None:
        """Run ``fn``; None only when the store says NoSuchKey (``bodiless``: a HEAD, whose 404 a GET confirms)."""

        def request() -> T | None:
            try:
                return fn()
            except ClientError as exc:
                code = _code(exc)[0]
                if code == _NO_SUCH_KEY:
                    return None
                if bodiless and code in _BARE_404 and self._confirmed_absent(key):
                    return None
                raise

        return self._call(key, request)

    def _confirmed_absent(self, key: str) -> bool:
        """Ask for one byte of ``key``: True only when the store answers with its own NoSuchKey."""
        try:
            self._client.get_object(Bucket=self._bucket, Key=key, Range="bytes=0-0")["Body"].read()
        except ClientError as exc:
            if _code(exc)[0] == _NO_SUCH_KEY:
                return True
            raise
        raise _Transient(f"HEAD answered 404 for '{key}' but GET finds the object")

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

        return self._absent_is_none(key, request, bodiless=True)

    def tags(self, key: str) -> dict[str, str] | None:
        def request() -> dict[str, str]:
            try:
                response = self._client.get_object_tagging(Bucket=self._bucket, Key=key)
            except ClientError as exc:
                if _code(exc)[0] != _NO_SUCH_KEY and _refuses_header(*_code(exc)):
                    return {}  # a store without the tagging API (Garage, R2): its objects have no tags
                raise
            return {t["Key"]: t["Value"] for t in response.get("TagSet", [])}  # RGW answers an empty body for none

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

    def with_features(self, features: StoreFeatures) -> S3Store:
        adapted = copy.copy(self)
        adapted._features = features
        return adapted

    def _write(
        self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str], *, conditional: bool
    ) -> bool:
        features = self._features
        condition = {"IfNoneMatch": "*"} if conditional else {}
        common: dict[str, Any] = {"Bucket": self._bucket, "Key": key, "Metadata": dict(metadata)}
        if features.tags and tags:
            common["Tagging"] = urlencode(tags, quote_via=quote)  # %20, not '+': Ceph RGW decodes only that
        # Where the endpoint ignores the condition on CompleteMultipartUpload, a conditional create goes as one PUT
        # (S3 takes up to 5 GiB in one; PostgreSQL's largest segment is 1 GiB): never an unconditional overwrite.
        multipart = len(body) > self._threshold and (features.conditional_multipart or not conditional)
        if conditional and not multipart and len(body) > _SINGLE_PUT_LIMIT:
            raise ConditionalWritesUnsupported(
                f"'{key}' is too large for one PUT, and the endpoint ignores If-None-Match on multipart uploads",
                hint='set conditional_writes = "auto" to fall back to HEAD-then-PUT for such objects',
            )

        def request() -> bool:
            try:
                if multipart:
                    response = self._multipart(key, body, common, condition)
                    held = self._prove(key, body, metadata, response, sent={})
                    if "Tagging" in common and held is not None and not int(held.get("TagCount") or 0):
                        self._tag(key, tags)  # Ceph RGW 16.2 drops the tags of CreateMultipartUpload
                else:
                    sent = _integrity(features.checksum, body)
                    response = self._client.put_object(Body=body, **sent, **common, **condition, **self._put_extra)
                    self._prove(key, body, metadata, response, sent=sent)
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

    def _prove(
        self, key: str, body: bytes, metadata: Mapping[str, str], response: Mapping[str, Any], *, sent: dict[str, str]
    ) -> Mapping[str, Any] | None:
        """Return only when the answer to an upload proves that the store holds ``body`` under ``key``.

        A store or middlebox that answers 200 without storing must not make PostgreSQL recycle the file. Cheapest
        proof first: the echoed SHA-256 (no work, no request); the ETag as the MD5 of a single-part upload (one hash
        of the compressed body); one HEAD. Failing all three is retried as a transient failure: the next attempt
        either stores the bytes or meets what is stored (412) and is compared by the caller.
        """
        echoed = response.get("ChecksumSHA256")
        if "ChecksumSHA256" in sent and echoed:
            if echoed == sent["ChecksumSHA256"]:
                return None
            raise _Transient(f"the store echoed another SHA-256 checksum than the one sent for '{key}'")
        etag = str(response.get("ETag") or "").strip('"')
        single_part = "-" not in etag and not response.get("UploadId")
        if etag and single_part and etag == _md5(body, sent).hex():
            return None
        if single_part and _MD5_HEX.fullmatch(etag) and self._put_extra.get("ServerSideEncryption") != "aws:kms":
            # An ETag in MD5's form that is not the body's MD5: other bytes were stored (damaged in transit, where
            # the store checks no header), or the store's ETags are not MD5s (MinIO with encryption): read it back.
            self._compare_stored(key, body)
            return None
        try:
            stored = self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _code(exc)[1] == 404:
                raise _Transient(
                    f"the store answered the upload of '{key}' with success but does not hold the object"
                ) from exc
            raise
        held = dict(stored.get("Metadata", {}))
        if int(stored.get("ContentLength", -1)) != len(body) or held.get(META_SHA256) != metadata.get(META_SHA256):
            raise _Transient(f"the store answered the upload of '{key}' with success but does not hold its bytes")
        return dict(stored)

    def _compare_stored(self, key: str, body: bytes) -> None:
        try:
            stored = self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _code(exc)[1] == 404:
                raise _Transient(f"the store answered the upload of '{key}' with success but does not hold it") from exc
            raise
        if stored != body:
            raise IntegrityError(
                f"the store holds other bytes under '{key}' than were uploaded (damaged in transit)",
                hint="the archived object is damaged: remove it and let PostgreSQL archive the file again; set "
                'upload_checksum = "md5" or "sha256" so that the store refuses a damaged upload',
            )

    def _tag(self, key: str, tags: Mapping[str, str]) -> None:
        tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
        self._client.put_object_tagging(Bucket=self._bucket, Key=key, Tagging={"TagSet": tag_set})

    def _multipart(self, key: str, body: bytes, common: dict[str, Any], condition: dict[str, str]) -> Mapping[str, Any]:
        checksum = self._features.checksum
        algorithm = {"ChecksumAlgorithm": "SHA256"} if checksum == "sha256" else {}
        upload = self._client.create_multipart_upload(**algorithm, **common, **self._put_extra)
        upload_id = upload["UploadId"]
        try:
            parts = []
            view = memoryview(body)
            for number, start in enumerate(range(0, len(body), self._chunk), start=1):
                chunk = bytes(view[start : start + self._chunk])
                sent = _integrity(checksum, chunk)
                response = self._client.upload_part(
                    Bucket=self._bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk, **sent
                )
                parts.append({"PartNumber": number, "ETag": response["ETag"], **{
                    k: v for k, v in sent.items() if k == "ChecksumSHA256"}})  # fmt: skip
            return dict(
                self._client.complete_multipart_upload(
                    Bucket=self._bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **condition
                )
            )
        except BaseException:
            try:
                self._client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - best effort; the lifecycle rule removes what is left
                log.debug("could not abort multipart upload of '%s'", key)
            raise

    # probing ---------------------------------------------------------------------------------------------------

    def probe_features(self, key: str, *, conditional: bool = True) -> StoreFeatures:
        body = b"walbucket feature probe: safe to keep, never read\n"
        # Every probe write is a create of a key of its own, with If-None-Match where the endpoint honours it and the
        # storage class and encryption of real uploads, so a bucket policy that requires them lets the probe through.
        condition = {"IfNoneMatch": "*"} if conditional else {}
        # A deliberately wrong value tells a store that checks the header from one that merely accepts it (Ceph RGW
        # before Tentacle accepts a wrong SHA-256 but refuses a wrong Content-MD5).
        answers = {c: self._put_probe(f"{key}-{c}", body, c, condition, wrong=True) for c in ("sha256", "md5")}
        checked = [c for c, answer in answers.items() if answer == "checked"]
        accepted = [c for c, answer in answers.items() if answer != "refused"]
        checksum = (checked or accepted or ["none"])[0]
        tags_key = f"{key}-tags"
        tags = self._put_probe(tags_key, body, checksum, condition, tags=True) == "accepted" and self._tags_kept(
            tags_key
        )
        honoured = False
        if conditional:
            probing = self.with_features(StoreFeatures(tags, checksum, conditional_multipart=True))
            multipart_key = f"{key}-multipart"
            honoured = probing._complete_small_multipart(multipart_key, body) == "created"
            honoured = honoured and probing._complete_small_multipart(multipart_key, body) == "exists"
        return StoreFeatures(tags, checksum, honoured, checksum_checked=bool(checked))

    def _put_probe(
        self,
        key: str,
        body: bytes,
        checksum: str,
        condition: dict[str, str],
        *,
        wrong: bool = False,
        tags: bool = False,
    ) -> str:
        """Create ``key`` with this checksum header (of other bytes if ``wrong``) and maybe tags: "accepted",
        "checked" (refused as not matching the body) or "refused" (the header or the tags, HTTP 400 or 501)."""
        extra: dict[str, Any] = {"Tagging": "walbucket-kind=probe"} if tags else {}
        integrity = _integrity(checksum, b"not the body" if wrong else body)

        def request() -> str:
            try:
                self._client.put_object(
                    Bucket=self._bucket, Key=key, Body=body, **integrity, **extra, **condition, **self._put_extra
                )
            except ClientError as exc:
                code, status = _code(exc)
                if wrong and code in _DIGEST_MISMATCH:
                    return "checked"
                if code in _EXISTS:
                    return "accepted"  # an earlier probe's object: this key took the header before
                if _refuses_header(code, status):
                    log.info("endpoint refuses %s: %s", "tags" if tags else f"{checksum} headers", _label(code, status))
                    return "refused"
                raise
            return "accepted"

        return self._call(key, request)

    def _tags_kept(self, key: str) -> bool:
        """Whether the probe object's tags read back: a store may accept the header and drop it (Garage)."""

        def request() -> bool:
            try:
                found = self._client.get_object_tagging(Bucket=self._bucket, Key=key).get("TagSet", [])
            except ClientError as exc:
                code, status = _code(exc)
                if code in _DENIED:
                    return True  # no permission to read tags (an archiver's policy): the accepted upload must do
                if _refuses_header(code, status):
                    return False
                raise
            return {"Key": "walbucket-kind", "Value": "probe"} in found

        return self._call(key, request)

    def _complete_small_multipart(self, key: str, body: bytes) -> str:
        """Complete a one-part upload with If-None-Match: "created", "exists" (412) or "rejected" (501)."""

        def request() -> str:
            try:
                self._multipart(key, body, {"Bucket": self._bucket, "Key": key}, {"IfNoneMatch": "*"})
            except ClientError as exc:
                code = _code(exc)[0]
                if code in _EXISTS:
                    return "exists"
                if code in _NOT_IMPLEMENTED:
                    return "rejected"  # not honoured: such uploads go as one conditional PUT
                raise
            return "created"

        return self._call(key, request)


def _refuses_header(code: str, status: int) -> bool:
    """A refusal of a header the store does not support (400 InvalidArgument, 501 NotImplemented): not a transient
    failure (RequestTimeout is a 400 too), not a permission problem."""
    return status in _REFUSES_HEADER and code not in _DENIED and code not in _TRANSIENT


def _integrity(checksum: str, data: bytes | memoryview) -> dict[str, str]:
    """The integrity header of an upload (botocore's parameter), as ``checksum`` (StoreFeatures) says."""
    if checksum == "sha256":
        return {"ChecksumSHA256": _b64sha256(data)}
    if checksum == "md5":
        return {"ContentMD5": base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")}
    return {}


def _md5(body: bytes, sent: Mapping[str, str]) -> bytes:
    """The body's MD5, from the Content-MD5 header sent when there was one."""
    if "ContentMD5" in sent:
        return base64.b64decode(sent["ContentMD5"])
    return hashlib.md5(body, usedforsecurity=False).digest()


def _posix(value: Any) -> float | None:
    """Return a listing's LastModified (a datetime, as botocore parses it) in POSIX seconds."""
    return None if value is None else float(value.timestamp())


def _b64sha256(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
