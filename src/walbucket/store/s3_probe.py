"""Probe what an S3 endpoint does with what uploads may carry: checksum headers, tags, If-None-Match on completion.

Part of the S3 adapter (it talks to the bucket through s3_bucket.py): each probe is a create of a key of its own under
``<prefix>/probe/``, with If-None-Match where the endpoint honours it and the storage class and encryption of real
uploads, so that a bucket policy requiring them lets the probe through. Probe objects are left in place.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from walbucket.store import s3_wire as wire
from walbucket.store.protocol import StoreFeatures

if TYPE_CHECKING:
    from walbucket.store.s3_bucket import S3Bucket

__all__ = ["probe_features"]

log = logging.getLogger("walbucket.s3")


def probe_features(bucket: S3Bucket, key: str, *, conditional: bool = True) -> StoreFeatures:
    """Find what uploads to this store may carry (StoreFeatures), with probe objects under ``key``-*."""
    body = b"walbucket feature probe: safe to keep, never read\n"
    # Every probe write is a create of a key of its own, with If-None-Match where the endpoint honours it and the
    # storage class and encryption of real uploads, so a bucket policy that requires them lets the probe through.
    condition = {"IfNoneMatch": "*"} if conditional else {}
    # A deliberately wrong value tells a store that checks the header from one that merely accepts it (Ceph RGW
    # before Tentacle accepts a wrong SHA-256 but refuses a wrong Content-MD5).
    answers = {c: _put_probe(bucket, f"{key}-{c}", body, c, condition, wrong=True) for c in ("sha256", "md5")}
    checked = [c for c, answer in answers.items() if answer == "checked"]
    accepted = [c for c, answer in answers.items() if answer != "refused"]
    checksum = (checked or accepted or ["none"])[0]
    tags_key = f"{key}-tags"
    tags = _put_probe(bucket, tags_key, body, checksum, condition, tags=True) == "accepted" and _tags_kept(
        bucket, tags_key
    )
    honoured = False
    if conditional:
        multipart_key = f"{key}-multipart"
        honoured = _complete_small_multipart(bucket, multipart_key, body, checksum) == "created"
        honoured = honoured and _complete_small_multipart(bucket, multipart_key, body, checksum) == "exists"
    return StoreFeatures(tags, checksum, honoured, checksum_checked=bool(checked))


def _put_probe(
    bucket: S3Bucket,
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
    header = wire.integrity(checksum, b"not the body" if wrong else body)

    def request() -> str:
        try:
            bucket.client.put_object(
                Bucket=bucket.name, Key=key, Body=body, **header, **extra, **condition, **bucket.put_extra
            )
        except ClientError as exc:
            code, status = wire.code_of(exc)
            if wrong and code in wire.DIGEST_MISMATCH:
                return "checked"
            if code in wire.EXISTS:
                return "accepted"  # an earlier probe's object: this key took the header before
            if wire.refuses_header(code, status):
                log.info("endpoint refuses %s: %s", "tags" if tags else f"{checksum} headers", wire.label(code, status))
                return "refused"
            raise
        return "accepted"

    return bucket.call(key, request)


def _tags_kept(bucket: S3Bucket, key: str) -> bool:
    """Whether the probe object's tags read back: a store may accept the header and drop it (Garage)."""

    def request() -> bool:
        try:
            found = bucket.client.get_object_tagging(Bucket=bucket.name, Key=key).get("TagSet", [])
        except ClientError as exc:
            code, status = wire.code_of(exc)
            if code in wire.DENIED:
                return True  # no permission to read tags (an archiver's policy): the accepted upload must do
            if wire.refuses_header(code, status):
                return False
            raise
        return {"Key": "walbucket-kind", "Value": "probe"} in found

    return bucket.call(key, request)


def _complete_small_multipart(bucket: S3Bucket, key: str, body: bytes, checksum: str) -> str:
    """Complete a one-part upload with If-None-Match: "created", "exists" (412) or "rejected" (501)."""

    def request() -> str:
        try:
            bucket.multipart(key, body, {"Bucket": bucket.name, "Key": key}, {"IfNoneMatch": "*"}, checksum)
        except ClientError as exc:
            code = wire.code_of(exc)[0]
            if code in wire.EXISTS:
                return "exists"
            if code in wire.NOT_IMPLEMENTED:
                return "rejected"  # not honoured: such uploads go as one conditional PUT
            raise
        return "created"

    return bucket.call(key, request)
