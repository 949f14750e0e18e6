"""One bucket of an S3 endpoint as the adapter's modules talk to it: every request under the one retry policy.

s3.py (the Store), s3_proof.py and s3_probe.py share it; botocore's errors are translated here (s3_wire.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from walbucket.core.errors import StoreUnavailable
from walbucket.store import s3_wire as wire
from walbucket.store.s3_wire import retry_policy

__all__ = ["S3Bucket"]

log = logging.getLogger("walbucket.s3")
T = TypeVar("T")


class S3Bucket:
    def __init__(
        self,
        client: Any,
        name: str,
        budget: float,
        sleep: Callable[[float], None] | None,
        put_extra: dict[str, str],
        chunk: int,
    ) -> None:
        self.client = client
        self.name = name
        self.budget = budget  # seconds of retrying per request
        self.sleep = sleep
        self.put_extra = put_extra  # storage class and encryption of every upload
        self.chunk = chunk  # multipart part size

    def call(self, key: str, fn: Callable[[], T]) -> T:
        """Run one request under the retry policy, translating every botocore error."""

        def attempt() -> T:
            try:
                return fn()
            except Exception as exc:
                translated = wire.classify(exc, key)
                if translated is exc:
                    raise
                raise translated from exc

        try:
            return retry_policy(self.budget, self.sleep)(attempt)
        except wire.Transient as exc:
            raise StoreUnavailable(
                f"storage unavailable for '{key}' after retrying for {self.budget:g}s: {exc.message}",
                hint="the endpoint is down, unreachable or throttling; raise retry_budget to wait longer",
            ) from exc

    def multipart(
        self, key: str, body: bytes, common: dict[str, Any], condition: dict[str, str], checksum: str
    ) -> Mapping[str, Any]:
        """Upload ``body`` in parts of ``chunk`` bytes, each with its ``checksum`` header; abort on any failure."""
        algorithm = {"ChecksumAlgorithm": "SHA256"} if checksum == "sha256" else {}
        upload = self.client.create_multipart_upload(**algorithm, **common, **self.put_extra)
        upload_id = upload["UploadId"]
        try:
            parts = []
            view = memoryview(body)
            for number, start in enumerate(range(0, len(body), self.chunk), start=1):
                chunk = bytes(view[start : start + self.chunk])
                sent = wire.integrity(checksum, chunk)
                response = self.client.upload_part(
                    Bucket=self.name, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk, **sent
                )
                parts.append({"PartNumber": number, "ETag": response["ETag"], **{
                    k: v for k, v in sent.items() if k == "ChecksumSHA256"}})  # fmt: skip
            return dict(
                self.client.complete_multipart_upload(
                    Bucket=self.name, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **condition
                )
            )
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - best effort; the lifecycle rule removes what is left
                log.debug("could not abort multipart upload of '%s'", key)
            raise
