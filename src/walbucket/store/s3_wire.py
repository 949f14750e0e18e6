"""What S3 requests carry and what S3's answers mean: integrity headers, error codes, the one retry policy.

The S3 adapter's vocabulary (s3.py and s3_probe.py use it): which codes are the store's own answers (NoSuchKey, 412),
which are transient and retried, which are refusals; botocore's exceptions become walbucket's errors here.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

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

from walbucket.core.errors import ConfigError, DamagedDownload, StoreError

log = logging.getLogger("walbucket.s3")

NO_SUCH_KEY = "NoSuchKey"
BARE_404 = {"404", "NotFound"}  # botocore's code for a 404 whose body is not S3's error document
EXISTS = {"412", "PreconditionFailed"}
TRANSIENT = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "ConditionalRequestConflict",
    "OperationAborted", "BadDigest", "XAmzContentSHA256Mismatch",
}  # fmt: skip
NOT_IMPLEMENTED = {"NotImplemented", "501"}
NO_LIFECYCLE = "NoSuchLifecycleConfiguration"
DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
REFUSES_HEADER = {400, 501}
DIGEST_MISMATCH = {
    "BadDigest",
    "InvalidDigest",
    "XAmzContentChecksumMismatch",
    "XAmzContentSHA256Mismatch",
}  # how stores refuse a header they do not support (InvalidArgument, NotImplemented)
SINGLE_PUT_LIMIT = 5 << 30  # S3's largest single PUT
MD5_HEX = re.compile("[0-9a-f]{32}")


class Transient(Exception):
    """Internal marker: the request may succeed if repeated."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def retry_policy(budget: float, sleep: Callable[[float], None] | None = None) -> tenacity.Retrying:
    """Retry transient failures with full-jitter exponential backoff until ``budget`` seconds have passed."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(Transient),
        stop=tenacity.stop_after_delay(budget),
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=min(10.0, max(budget / 4, 0.1))),
        before_sleep=lambda state: log.info(
            "retrying after %s (attempt %d)", state.outcome and state.outcome.exception(), state.attempt_number
        ),
        sleep=sleep or tenacity.nap.sleep,
        reraise=True,
    )


def code_of(exc: ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {})
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return str(error.get("Code", status)), status


def label(code: str, status: int, *, with_status: bool = True) -> str:
    """``HTTP 403`` for a bare status (not the store's error document), else the store's code (and the status)."""
    if code == str(status):
        return f"HTTP {status}"
    return f"{code} (HTTP {status})" if with_status else code


def foreign_404(exc: ClientError, key: str) -> Transient:
    kind = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("content-type") or "no content type"
    return Transient(
        f"HTTP 404 that is not the store's NoSuchKey ({kind}) on '{key}': a proxy or ingress answered, not the archive"
    )


def classify(exc: Exception, key: str) -> Exception:  # noqa: PLR0911 - one flat table of cases
    """Translate a botocore exception into a walbucket error or the internal Transient marker."""
    if isinstance(exc, ClientError):
        code, status = code_of(exc)
        if code in TRANSIENT or (status >= 500 and code not in NOT_IMPLEMENTED):
            return Transient(f"{code} on '{key}'")
        if code in BARE_404:
            return foreign_404(exc, key)
        if code in DENIED:
            return StoreError(
                f"access denied ({label(code, status, with_status=False)}) on '{key}'",
                hint="check the credentials and that the policy grants this operation on the bucket and prefix",
            )
        if code == "NoSuchBucket":
            return StoreError(f"no such bucket for '{key}'", hint="check the 'bucket' and 'endpoint_url' settings")
        return StoreError(f"{label(code, status)} on '{key}'")
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
        return Transient(f"{type(exc).__name__} on '{key}'")
    if isinstance(exc, BotoCoreError):
        return StoreError(f"{exc} on '{key}'")
    return exc


def refuses_header(code: str, status: int) -> bool:
    """A refusal of a header the store does not support (400 InvalidArgument, 501 NotImplemented): not a transient
    failure (RequestTimeout is a 400 too), not a permission problem."""
    return status in REFUSES_HEADER and code not in DENIED and code not in TRANSIENT


def integrity(checksum: str, data: bytes | memoryview) -> dict[str, str]:
    """The integrity header of an upload (botocore's parameter), as ``checksum`` (StoreFeatures) says."""
    if checksum == "sha256":
        return {"ChecksumSHA256": b64sha256(data)}
    if checksum == "md5":
        return {"ContentMD5": base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")}
    return {}


def md5_of(body: bytes, sent: Mapping[str, str]) -> bytes:
    """The body's MD5, from the Content-MD5 header sent when there was one."""
    if "ContentMD5" in sent:
        return base64.b64decode(sent["ContentMD5"])
    return hashlib.md5(body, usedforsecurity=False).digest()


def posix(value: Any) -> float | None:
    """Return a listing's LastModified (a datetime, as botocore parses it) in POSIX seconds."""
    return None if value is None else float(value.timestamp())


def b64sha256(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
