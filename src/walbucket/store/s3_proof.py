"""Proof of storage: an upload counts as stored only when the store's answer proves it holds these bytes.

Part of the S3 adapter. Cheapest proof first: the ``x-amz-checksum-sha256`` the store echoes equals the one sent;
else an ETag equal to the body's MD5 (single-part uploads, no SSE-KMS); else one HEAD comparing size and walbucket's
SHA-256 metadata. A bare 200 proves nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from walbucket.core.errors import IntegrityError
from walbucket.core.keylayout import META_SHA256
from walbucket.store import s3_wire as wire

if TYPE_CHECKING:
    from walbucket.store.s3_bucket import S3Bucket

__all__ = ["prove"]


def prove(
    bucket: S3Bucket,
    key: str,
    body: bytes,
    metadata: Mapping[str, str],
    response: Mapping[str, Any],
    *,
    sent: dict[str, str],
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
        raise wire.Transient(f"the store echoed another SHA-256 checksum than the one sent for '{key}'")
    etag = str(response.get("ETag") or "").strip('"')
    single_part = "-" not in etag and not response.get("UploadId")
    if etag and single_part and etag == wire.md5_of(body, sent).hex():
        return None
    if single_part and wire.MD5_HEX.fullmatch(etag) and bucket.put_extra.get("ServerSideEncryption") != "aws:kms":
        # An ETag in MD5's form that is not the body's MD5: other bytes were stored (damaged in transit, where
        # the store checks no header), or the store's ETags are not MD5s (MinIO with encryption): read it back.
        _compare_stored(bucket, key, body)
        return None
    try:
        stored = bucket.client.head_object(Bucket=bucket.name, Key=key)
    except ClientError as exc:
        if wire.code_of(exc)[1] == 404:
            raise wire.Transient(
                f"the store answered the upload of '{key}' with success but does not hold the object"
            ) from exc
        raise
    held = dict(stored.get("Metadata", {}))
    if int(stored.get("ContentLength", -1)) != len(body) or held.get(META_SHA256) != metadata.get(META_SHA256):
        raise wire.Transient(f"the store answered the upload of '{key}' with success but does not hold its bytes")
    return dict(stored)


def _compare_stored(bucket: S3Bucket, key: str, body: bytes) -> None:
    try:
        stored = bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read()
    except ClientError as exc:
        if wire.code_of(exc)[1] == 404:
            raise wire.Transient(f"the store answered the upload of '{key}' with success but does not hold it") from exc
        raise
    if stored != body:
        raise IntegrityError(
            f"the store holds other bytes under '{key}' than were uploaded (damaged in transit)",
            hint="the archived object is damaged: remove it and let PostgreSQL archive the file again; set "
            'upload_checksum = "md5" or "sha256" so that the store refuses a damaged upload',
        )
