"""The S3 adapter's error translation and retry policy, driven by a hand-written fake boto3 client.

botocore exceptions go in; walbucket errors, answers (None, False) or retries come out. No patching, no network.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    FlexibleChecksumError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)

from walbucket.core.errors import (
    ConditionalWritesUnsupported,
    ConfigError,
    DamagedDownload,
    IntegrityError,
    StoreError,
    StoreUnavailable,
)
from walbucket.core.settings import load_settings
from walbucket.store.factory import open_store
from walbucket.store.protocol import ObjectInfo, StoredObject, StoreFeatures
from walbucket.store.s3 import S3Store, retry_policy

KEY = "pg/wal/0000000100000000/000000010000000000000001"
MIB = 1 << 20
Outcome = Exception | dict[str, Any] | Callable[..., dict[str, Any]]


def client_error(code: str, status: int, operation: str = "PutObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


class _Body:
    def __init__(self, data: bytes, error: Exception | None = None) -> None:
        self._data = data
        self._error = error

    def read(self) -> bytes:
        if self._error is not None:
            raise self._error
        return self._data


class FakeClient:
    """Answers each S3 operation from a script: the next outcome per call, the last one repeated."""

    def __init__(self, **script: Outcome | list[Outcome]) -> None:
        self.script = {op: list(o) if isinstance(o, list) else [o] for op, o in script.items()}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]

    def _answer(self, op: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((op, kwargs))
        outcomes = self.script.get(op)
        if not outcomes:
            raise AssertionError(f"unexpected call {op}({kwargs})")
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome(**kwargs) if callable(outcome) else outcome

    def __getattr__(self, op: str) -> Callable[..., dict[str, Any]]:
        if op.startswith("_"):
            raise AttributeError(op)
        return lambda **kwargs: self._answer(op, kwargs)


def store_on(client: FakeClient, **kwargs: Any) -> tuple[S3Store, list[float]]:
    sleeps: list[float] = []
    kwargs.setdefault("retry_budget", 30.0)
    return S3Store(client, "wal-archive", sleep=sleeps.append, **kwargs), sleeps


def got(body: bytes, metadata: dict[str, str] | None = None) -> Callable[..., dict[str, Any]]:
    return lambda **_: {"Body": _Body(body), "Metadata": metadata or {}}


def sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def echo(**kwargs: Any) -> dict[str, Any]:
    """A PUT's answer as AWS S3 gives it: the SHA-256 checksum that was sent, echoed (the proof of storage)."""
    return {"ChecksumSHA256": kwargs["ChecksumSHA256"], "ETag": '"not-an-md5"'}


def held(size: int, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """A HEAD's answer for an object of ``size`` bytes with ``metadata``."""
    return {"ContentLength": size, "Metadata": metadata or {}}


# --- answers ------------------------------------------------------------------------------------------------------


def test_read_returns_body_and_metadata() -> None:
    client = FakeClient(get_object=got(b"abc", {"walbucket-codec": "none"}))
    store, _ = store_on(client)
    assert store.read(KEY) == StoredObject(ObjectInfo(KEY, 3, {"walbucket-codec": "none"}), b"abc")
    assert client.calls == [("get_object", {"Bucket": "wal-archive", "Key": KEY})]


def test_head_returns_size_and_metadata() -> None:
    client = FakeClient(head_object={"ContentLength": 42, "Metadata": {"a": "b"}})
    store, _ = store_on(client)
    assert store.head(KEY) == ObjectInfo(KEY, 42, {"a": "b"})


def test_tags_returns_a_dict() -> None:
    client = FakeClient(get_object_tagging={"TagSet": [{"Key": "k1", "Value": "v1"}, {"Key": "k2", "Value": "v2"}]})
    store, _ = store_on(client)
    assert store.tags(KEY) == {"k1": "v1", "k2": "v2"}


@pytest.mark.parametrize(("method", "operation"), [("read", "get_object"), ("tags", "get_object_tagging")])
def test_the_stores_own_no_such_key_is_absence_and_never_retried(method: str, operation: str) -> None:
    client = FakeClient(**{operation: client_error("NoSuchKey", 404, operation)})
    store, sleeps = store_on(client)
    assert getattr(store, method)(KEY) is None
    assert client.ops() == [operation]
    assert sleeps == []


@pytest.mark.parametrize("code", ["404", "NotFound"])
def test_a_bodiless_404_to_head_is_absence_once_a_one_byte_get_says_no_such_key(code: str) -> None:
    client = FakeClient(head_object=client_error(code, 404, "HeadObject"),
                        get_object=client_error("NoSuchKey", 404, "GetObject"))  # fmt: skip
    store, sleeps = store_on(client)
    assert store.head(KEY) is None
    assert client.calls[1] == ("get_object", {"Bucket": "wal-archive", "Key": KEY, "Range": "bytes=0-0"})
    assert (client.ops(), sleeps) == (["head_object", "get_object"], [])


@pytest.mark.parametrize("code", ["404", "NotFound"])
@pytest.mark.parametrize(
    ("method", "script"),
    [
        ("read", {"get_object": client_error("404", 404, "GetObject")}),
        ("tags", {"get_object_tagging": client_error("404", 404, "GetObjectTagging")}),
        ("head", {"head_object": client_error("404", 404, "HeadObject"), "get_object": client_error("404", 404)}),
    ],
)
def test_a_404_that_is_not_the_stores_no_such_key_is_never_absence(
    code: str, method: str, script: dict[str, Any]
) -> None:
    """A text, HTML or empty 404 (an ingress, a Go server) says nothing of the archive: retried, then unavailable."""
    script = {op: client_error(code, 404, op) if op != "get_object" or method != "head" else e
              for op, e in script.items()}  # fmt: skip
    client = FakeClient(**script)
    store = S3Store(client, "wal-archive", retry_budget=0.05, sleep=lambda s: time.sleep(min(s, 0.01)))
    with pytest.raises(StoreUnavailable) as caught:
        getattr(store, method)(KEY)
    assert "HTTP 404 that is not the store's NoSuchKey" in caught.value.message
    assert client.ops().count(client.ops()[0]) > 1  # retried like an outage


def test_a_head_404_contradicted_by_a_get_is_not_absence() -> None:
    client = FakeClient(head_object=client_error("404", 404, "HeadObject"), get_object=got(b"x"))
    store = S3Store(client, "wal-archive", retry_budget=0.05, sleep=lambda s: time.sleep(min(s, 0.01)))
    with pytest.raises(StoreUnavailable, match=r"HEAD answered 404 for .* but GET finds the object"):
        store.head(KEY)


@pytest.mark.parametrize(("code", "status"), [("PreconditionFailed", 412), ("412", 412)])
def test_create_of_an_existing_key_is_false_and_never_retried(code: str, status: int) -> None:
    client = FakeClient(put_object=client_error(code, status))
    store, sleeps = store_on(client)
    assert store.create(KEY, b"body", {}, {}) is False
    assert client.ops() == ["put_object"]
    assert sleeps == []


def test_create_sends_if_none_match_checksum_metadata_and_tags() -> None:
    client = FakeClient(put_object=echo)
    store, _ = store_on(client)
    assert store.create(KEY, b"body", {"walbucket-codec": "none"}, {"walbucket-kind": "segment", "a b": "c&d"}) is True
    ((op, kwargs),) = client.calls
    assert op == "put_object"
    tagging = kwargs.pop("Tagging")
    assert kwargs == {
        "Bucket": "wal-archive",
        "Key": KEY,
        "Body": b"body",
        "ChecksumSHA256": sha(b"body"),
        "Metadata": {"walbucket-codec": "none"},
        "IfNoneMatch": "*",
    }
    assert dict(parse_qsl(tagging)) == {"walbucket-kind": "segment", "a b": "c&d"}


def test_put_sends_no_condition() -> None:
    client = FakeClient(put_object=echo)
    store, _ = store_on(client)
    store.put(KEY, b"body", {}, {})
    assert "IfNoneMatch" not in client.calls[0][1]


def test_storage_class_and_encryption_go_with_every_write() -> None:
    client = FakeClient(put_object=echo, create_multipart_upload={"UploadId": "u1"}, upload_part={"ETag": '"e"'},
                        complete_multipart_upload={}, head_object=held(6 * MIB))  # fmt: skip
    store, _ = store_on(
        client, storage_class="STANDARD_IA", sse="aws:kms", sse_kms_key_id="alias/wal",
        multipart_threshold=5 * MIB, multipart_chunk_size=5 * MIB,
    )  # fmt: skip
    store.put(KEY, b"small", {}, {})
    store.create(KEY, b"x" * (6 * MIB), {}, {})
    extra = {"StorageClass": "STANDARD_IA", "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/wal"}
    for op, kwargs in client.calls:
        if op in ("put_object", "create_multipart_upload"):
            assert extra.items() <= kwargs.items()
    assert client.ops() == [
        "put_object", "create_multipart_upload", "upload_part", "upload_part", "complete_multipart_upload",
        "head_object",
    ]  # fmt: skip


def test_list_gives_last_modified_in_posix_seconds() -> None:
    when = datetime(2024, 5, 1, 10, 30, tzinfo=timezone.utc)
    client = FakeClient(list_objects_v2={"Contents": [{"Key": "p/a", "Size": 1, "LastModified": when}]})
    store, _ = store_on(client)
    [info] = store.list("p/")
    assert info.last_modified == when.timestamp()


def test_lifecycle_rules_answers_none_without_a_configuration_and_translates_refusals() -> None:
    rules = [{"ID": "r", "Status": "Enabled", "Filter": {"Prefix": "p/wal/"}, "Expiration": {"Days": 7}}]
    store, _ = store_on(FakeClient(get_bucket_lifecycle_configuration={"Rules": rules}))
    assert store.lifecycle_rules() == rules
    absent = client_error("NoSuchLifecycleConfiguration", 404, "GetBucketLifecycleConfiguration")
    store, _ = store_on(FakeClient(get_bucket_lifecycle_configuration=absent))
    assert store.lifecycle_rules() is None
    denied = client_error("AccessDenied", 403, "GetBucketLifecycleConfiguration")
    store, _ = store_on(FakeClient(get_bucket_lifecycle_configuration=denied))
    with pytest.raises(
        StoreError, match=r"^access denied \(AccessDenied\) on 'lifecycle configuration of bucket wal-archive'$"
    ):
        store.lifecycle_rules()


def test_list_follows_continuation_tokens() -> None:
    client = FakeClient(
        list_objects_v2=[
            {"Contents": [{"Key": "p/a", "Size": 1}, {"Key": "p/b", "Size": 2}], "IsTruncated": True,
             "NextContinuationToken": "t1"},
            {"Contents": [{"Key": "p/c", "Size": 3}], "IsTruncated": False},
        ]
    )  # fmt: skip
    store, _ = store_on(client)
    assert list(store.list("p/")) == [ObjectInfo("p/a", 1), ObjectInfo("p/b", 2), ObjectInfo("p/c", 3)]
    assert [kwargs for _, kwargs in client.calls] == [
        {"Bucket": "wal-archive", "Prefix": "p/"},
        {"Bucket": "wal-archive", "Prefix": "p/", "ContinuationToken": "t1"},
    ]


def test_list_of_an_empty_prefix_yields_nothing() -> None:
    store, _ = store_on(FakeClient(list_objects_v2={"KeyCount": 0, "IsTruncated": False}))
    assert list(store.list("nothing/")) == []


# --- multipart ----------------------------------------------------------------------------------------------------


def multipart_client(complete: Outcome = {}, head: Outcome = {}) -> FakeClient:  # noqa: B006 - never mutated
    return FakeClient(
        create_multipart_upload={"UploadId": "u1"},
        upload_part=lambda **kw: {"ETag": f'"etag-{kw["PartNumber"]}"'},
        complete_multipart_upload=complete,
        abort_multipart_upload={},
        head_object=head,
        put_object_tagging={},
    )


def test_a_body_above_the_threshold_goes_in_parts_with_checksums() -> None:
    body = bytes(range(256)) * (12 * MIB // 256)
    client = multipart_client(head=held(len(body), {"walbucket-sha256": "abc", "m": "1"}))
    store, _ = store_on(client, multipart_threshold=6 * MIB, multipart_chunk_size=5 * MIB)
    assert store.create(KEY, body, {"m": "1", "walbucket-sha256": "abc"}, {"t": "2"}) is True
    assert client.ops() == ["create_multipart_upload", "upload_part", "upload_part", "upload_part",
                            "complete_multipart_upload", "head_object", "put_object_tagging"]  # fmt: skip
    start = client.calls[0][1]
    assert (start["ChecksumAlgorithm"], start["Metadata"]["m"], start["Tagging"]) == ("SHA256", "1", "t=2")
    parts = [kwargs for op, kwargs in client.calls if op == "upload_part"]
    assert [len(p["Body"]) for p in parts] == [5 * MIB, 5 * MIB, 2 * MIB]
    assert b"".join(p["Body"] for p in parts) == body
    assert all(p["ChecksumSHA256"] == sha(p["Body"]) and p["UploadId"] == "u1" for p in parts)
    complete = client.calls[-3][1]
    assert complete["IfNoneMatch"] == "*"
    assert complete["MultipartUpload"] == {
        "Parts": [
            {"PartNumber": n, "ETag": f'"etag-{n}"', "ChecksumSHA256": parts[n - 1]["ChecksumSHA256"]}
            for n in (1, 2, 3)
        ]
    }


def test_a_body_at_the_threshold_goes_in_one_put() -> None:
    client = FakeClient(put_object=echo)
    store, _ = store_on(client, multipart_threshold=6 * MIB, multipart_chunk_size=5 * MIB)
    store.create(KEY, b"\0" * (6 * MIB), {}, {})
    assert client.ops() == ["put_object"]


def test_a_multipart_create_of_an_existing_key_is_false_and_aborts_the_upload() -> None:
    client = multipart_client(complete=client_error("PreconditionFailed", 412, "CompleteMultipartUpload"))
    store, sleeps = store_on(client, multipart_threshold=5 * MIB, multipart_chunk_size=5 * MIB)
    assert store.create(KEY, b"\0" * (6 * MIB), {}, {}) is False
    assert client.ops()[-2:] == ["complete_multipart_upload", "abort_multipart_upload"]
    assert client.calls[-1][1] == {"Bucket": "wal-archive", "Key": KEY, "UploadId": "u1"}
    assert sleeps == []


def test_a_failing_multipart_upload_is_aborted_even_if_the_abort_fails() -> None:
    client = multipart_client(complete=client_error("AccessDenied", 403, "CompleteMultipartUpload"))
    client.script["abort_multipart_upload"] = [client_error("AccessDenied", 403, "AbortMultipartUpload")]
    store, _ = store_on(client, multipart_threshold=5 * MIB, multipart_chunk_size=5 * MIB)
    with pytest.raises(StoreError, match=r"^access denied \(AccessDenied\) on "):
        store.create(KEY, b"\0" * (6 * MIB), {}, {})
    assert client.ops()[-1] == "abort_multipart_upload"


def test_a_transient_part_failure_restarts_the_upload() -> None:
    client = multipart_client(head=held(6 * MIB))
    client.script["upload_part"] = [client_error("SlowDown", 503, "UploadPart"), {"ETag": '"a"'}]
    store, sleeps = store_on(client, multipart_threshold=5 * MIB, multipart_chunk_size=5 * MIB)
    assert store.create(KEY, b"\0" * (6 * MIB), {}, {}) is True
    assert client.ops() == [
        "create_multipart_upload", "upload_part", "abort_multipart_upload",
        "create_multipart_upload", "upload_part", "upload_part", "complete_multipart_upload", "head_object",
    ]  # fmt: skip
    assert len(sleeps) == 1


# --- transient failures: retried within the budget ------------------------------------------------------------------


TRANSIENT = [
    pytest.param(client_error("SlowDown", 503), id="SlowDown"),
    pytest.param(client_error("ServiceUnavailable", 503), id="503"),
    pytest.param(client_error("InternalError", 500), id="InternalError"),
    pytest.param(client_error("502", 502), id="bare 502"),
    pytest.param(client_error("RequestTimeout", 400), id="RequestTimeout"),
    pytest.param(client_error("Throttling", 400), id="Throttling"),
    pytest.param(client_error("BadDigest", 400), id="BadDigest"),
    pytest.param(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), id="EndpointConnectionError"),
    pytest.param(ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"), id="ConnectTimeoutError"),
    pytest.param(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), id="ReadTimeoutError"),
    pytest.param(ConnectionClosedError(endpoint_url="http://127.0.0.1:1"), id="ConnectionClosedError"),
]


@pytest.mark.parametrize("error", TRANSIENT)
def test_transient_errors_are_retried_until_the_request_succeeds(error: Exception) -> None:
    client = FakeClient(put_object=[error, error, echo])
    store, sleeps = store_on(client)
    assert store.create(KEY, b"body", {}, {}) is True
    assert client.ops() == ["put_object"] * 3
    assert len(sleeps) == 2
    assert all(0 <= s <= 7.5 for s in sleeps)


@pytest.mark.parametrize(
    "error",
    [
        IncompleteReadError(actual_bytes=1, expected_bytes=3),
        ResponseStreamingError(error="connection reset"),
    ],
    ids=["IncompleteReadError", "ResponseStreamingError"],
)
def test_a_body_that_breaks_off_is_read_again(error: Exception) -> None:
    client = FakeClient(get_object=[{"Body": _Body(b"", error), "Metadata": {}}, got(b"abc")])
    store, sleeps = store_on(client)
    stored = store.read(KEY)
    assert stored is not None and stored.body == b"abc"
    assert client.ops() == ["get_object", "get_object"]
    assert len(sleeps) == 1


def test_a_body_failing_the_endpoints_checksum_is_a_damaged_download_for_get_to_read_again() -> None:
    error = FlexibleChecksumError(error_msg="Expected checksum abc= did not match calculated checksum: xyz=")
    client = FakeClient(get_object={"Body": _Body(b"", error), "Metadata": {}})
    store, sleeps = store_on(client)
    with pytest.raises(DamagedDownload) as caught:
        store.read(KEY)
    assert caught.value.message == (
        f"object '{KEY}' fails the endpoint's checksum: Expected checksum abc= did not match calculated checksum: xyz="
    )
    assert (client.ops(), sleeps) == (["get_object"], [])  # not retried here: get decides


def test_a_transient_error_on_a_later_list_page_retries_only_that_page() -> None:
    client = FakeClient(
        list_objects_v2=[
            {"Contents": [{"Key": "p/a", "Size": 1}], "IsTruncated": True, "NextContinuationToken": "t1"},
            client_error("SlowDown", 503, "ListObjectsV2"),
            {"Contents": [{"Key": "p/b", "Size": 2}], "IsTruncated": False},
        ]
    )
    store, _ = store_on(client)
    assert [o.key for o in store.list("p/")] == ["p/a", "p/b"]
    assert [kwargs.get("ContinuationToken") for _, kwargs in client.calls] == [None, "t1", "t1"]


def test_an_outage_that_outlasts_the_budget_is_store_unavailable() -> None:
    client = FakeClient(get_object=EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    store = S3Store(client, "wal-archive", retry_budget=0.3, sleep=lambda s: time.sleep(min(s, 0.01)))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        store.read(KEY)
    assert 0.3 <= time.monotonic() - started < 5
    assert caught.value.message == (
        f"storage unavailable for '{KEY}' after retrying for 0.3s: EndpointConnectionError on '{KEY}'"
    )
    assert caught.value.hint == ("the endpoint is down, unreachable or throttling; raise retry_budget to wait longer")
    assert len(client.calls) > 1
    assert isinstance(caught.value, StoreError)


def test_throttling_that_outlasts_the_budget_names_the_code() -> None:
    client = FakeClient(head_object=client_error("SlowDown", 503, "HeadObject"))
    store = S3Store(client, "wal-archive", retry_budget=0.1, sleep=lambda s: time.sleep(min(s, 0.01)))
    with pytest.raises(StoreUnavailable, match=rf"^storage unavailable for '{KEY}' after retrying for 0.1s: SlowDown"):
        store.head(KEY)


# --- refusals: translated, never retried ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"])
def test_access_denied_is_a_store_error_and_not_retried(code: str) -> None:
    client = FakeClient(put_object=client_error(code, 403))
    store, sleeps = store_on(client)
    with pytest.raises(StoreError) as caught:
        store.create(KEY, b"body", {}, {})
    assert type(caught.value) is StoreError
    label = "HTTP 403" if code == "403" else code  # a bare 403 (no S3 error document) is named by its status
    assert caught.value.message == f"access denied ({label}) on '{KEY}'"
    assert caught.value.hint == (
        "check the credentials and that the policy grants this operation on the bucket and prefix"
    )
    assert len(client.calls) == 1
    assert sleeps == []


def test_no_such_bucket_is_a_store_error_with_a_hint() -> None:
    client = FakeClient(get_object=client_error("NoSuchBucket", 404, "GetObject"))
    store, sleeps = store_on(client)
    with pytest.raises(StoreError) as caught:
        store.read(KEY)
    assert caught.value.message == f"no such bucket for '{KEY}'"
    assert caught.value.hint == "check the 'bucket' and 'endpoint_url' settings"
    assert (len(client.calls), sleeps) == (1, [])


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        ("InvalidStorageClass", 400, f"InvalidStorageClass (HTTP 400) on '{KEY}'"),
        ("EntityTooLarge", 400, f"EntityTooLarge (HTTP 400) on '{KEY}'"),
        ("NotImplemented", 501, f"NotImplemented (HTTP 501) on '{KEY}'"),
        ("PreconditionFailed", 412, f"PreconditionFailed (HTTP 412) on '{KEY}'"),
    ],
)
def test_other_refusals_of_a_put_are_store_errors_naming_code_and_status(code: str, status: int, message: str) -> None:
    client = FakeClient(put_object=client_error(code, status))
    store, sleeps = store_on(client)
    with pytest.raises(StoreError) as caught:
        store.put(KEY, b"body", {}, {})
    assert caught.value.message == message
    assert (len(client.calls), sleeps) == (1, [])


@pytest.mark.parametrize(("code", "status"), [("NotImplemented", 501), ("501", 501)])
def test_a_rejected_conditional_create_is_conditional_writes_unsupported(code: str, status: int) -> None:
    client = FakeClient(put_object=client_error(code, status))
    store, sleeps = store_on(client)
    with pytest.raises(ConditionalWritesUnsupported) as caught:
        store.create(KEY, b"body", {}, {})
    assert caught.value.message == f"the endpoint rejects conditional writes (If-None-Match) for '{KEY}'"
    assert caught.value.hint == (
        'use an endpoint that honours them, or set conditional_writes = "auto" to fall back to HEAD-then-PUT'
    )
    assert (len(client.calls), sleeps) == (1, [])


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (NoCredentialsError(), "Unable to locate credentials"),
        (PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), "Partial credentials found in env"),
    ],
)
def test_missing_credentials_are_a_config_error(error: Exception, text: str) -> None:
    client = FakeClient(head_object=error)
    store, sleeps = store_on(client)
    with pytest.raises(ConfigError) as caught:
        store.head(KEY)
    assert caught.value.message.startswith(f"no usable AWS credentials: {text}")
    assert caught.value.hint == "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, or an instance role"
    assert (len(client.calls), sleeps) == (1, [])


def test_a_tls_failure_is_a_store_error_pointing_at_ca_bundle() -> None:
    client = FakeClient(get_object=SSLError(endpoint_url="https://s3.example", error="certificate verify failed"))
    store, sleeps = store_on(client)
    with pytest.raises(StoreError) as caught:
        store.read(KEY)
    assert type(caught.value) is StoreError
    assert caught.value.message == (
        f"TLS failure talking to the endpoint for '{KEY}': SSL validation failed for https://s3.example "
        "certificate verify failed"
    )
    assert caught.value.hint == "check ca_bundle"
    assert (len(client.calls), sleeps) == (1, [])


def test_other_botocore_errors_are_store_errors() -> None:
    client = FakeClient(put_object=ParamValidationError(report="Invalid bucket name"))
    store, _ = store_on(client)
    with pytest.raises(StoreError) as caught:
        store.put(KEY, b"", {}, {})
    assert caught.value.message == f"Parameter validation failed:\nInvalid bucket name on '{KEY}'"
    assert len(client.calls) == 1


def test_botocore_errors_never_leave_the_adapter() -> None:
    failures: list[Exception] = [p.values[0] for p in TRANSIENT] + [
        client_error("AccessDenied", 403),
        NoCredentialsError(),
        ParamValidationError(report="x"),
    ]
    for failure in failures:
        store = S3Store(FakeClient(put_object=failure), "b", retry_budget=0.01, sleep=lambda s: None)
        with pytest.raises(Exception) as caught:
            store.put(KEY, b"", {}, {})
        assert type(caught.value).__module__ == "walbucket.core.errors"


def test_bugs_are_not_translated() -> None:
    client = FakeClient(get_object=lambda **_: {"Metadata": {}})  # no Body: a KeyError in the adapter
    store, sleeps = store_on(client)
    with pytest.raises(KeyError, match="Body"):
        store.read(KEY)
    assert sleeps == []


def test_retry_policy_stops_after_the_budget_and_reraises_the_last_error() -> None:
    calls: list[int] = []

    def always_fails() -> None:
        calls.append(1)
        raise ValueError("not transient")

    with pytest.raises(ValueError, match=r"^not transient$"):
        retry_policy(10.0, sleep=lambda s: None)(always_fails)
    assert len(calls) == 1


def test_open_store_reports_a_client_it_cannot_create_as_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    settings = load_settings({}, {"WALBUCKET_BUCKET": "wal-archive", "WALBUCKET_PROFILE": "absent-profile"})
    with pytest.raises(ConfigError) as caught:
        open_store(settings)
    assert caught.value.message == "cannot create the S3 client: The config profile (absent-profile) could not be found"


def test_open_store_builds_an_s3_store_without_touching_the_network(tmp_path: Path) -> None:
    settings = load_settings(
        {},
        {"WALBUCKET_BUCKET": "wal-archive", "WALBUCKET_ENDPOINT_URL": "http://127.0.0.1:1", "WALBUCKET_REGION": "x"},
    )
    assert isinstance(open_store(settings), S3Store)


# --- proof of storage: exit 0 only when the store's answer proves it holds the bytes ---------------------------------


def test_an_echoed_checksum_equal_to_the_one_sent_proves_the_upload_without_another_request() -> None:
    client = FakeClient(put_object=echo)
    store, _ = store_on(client)
    assert store.create(KEY, b"body", {"walbucket-sha256": "x"}, {}) is True
    assert client.ops() == ["put_object"]


def test_an_etag_equal_to_the_bodys_md5_proves_a_single_part_upload() -> None:
    etag = f'"{hashlib.md5(b"body").hexdigest()}"'
    client = FakeClient(put_object={"ETag": etag})
    store, _ = store_on(client)
    assert store.create(KEY, b"body", {}, {}) is True
    assert client.ops() == ["put_object"]


def test_without_echo_or_md5_etag_one_head_comparing_size_and_sha256_proves_it() -> None:
    client = FakeClient(put_object={"ETag": '"kms-etag"'}, head_object=held(4, {"walbucket-sha256": "abc"}))
    store, _ = store_on(client)
    assert store.create(KEY, b"body", {"walbucket-sha256": "abc"}, {}) is True
    assert client.ops() == ["put_object", "head_object"]


@pytest.mark.parametrize(
    ("answer", "head", "why"),
    [
        pytest.param({}, client_error("404", 404, "HeadObject"), "does not hold the object", id="bare 200, absent"),
        pytest.param({"ETag": '"0f"'}, held(4, {"walbucket-sha256": "other"}), "does not hold its bytes",
                     id="another object"),
        pytest.param({"ETag": '"0f"'}, held(3, {"walbucket-sha256": "abc"}), "does not hold its bytes",
                     id="another size"),
        pytest.param({"ChecksumSHA256": sha(b"other")}, {}, "echoed another SHA-256", id="another checksum"),
    ],
)  # fmt: skip
def test_a_success_answer_that_does_not_prove_storage_is_retried_and_never_success(
    answer: dict[str, Any], head: Outcome, why: str
) -> None:
    client = FakeClient(put_object=answer, head_object=head)
    store = S3Store(client, "wal-archive", retry_budget=0.05, sleep=lambda s: time.sleep(min(s, 0.01)))
    with pytest.raises(StoreUnavailable, match=why):
        store.create(KEY, b"body", {"walbucket-sha256": "abc"}, {})
    assert client.ops().count("put_object") > 1


def test_an_unproven_upload_retried_into_the_objects_412_is_false() -> None:
    """The first answer proved nothing; the second attempt meets the stored object: the caller compares it."""
    client = FakeClient(put_object=[{}, client_error("PreconditionFailed", 412)],
                        head_object=client_error("404", 404, "HeadObject"))  # fmt: skip
    store, _ = store_on(client)
    assert store.create(KEY, b"body", {"walbucket-sha256": "abc"}, {}) is False


# --- what uploads carry: StoreFeatures, and probing them --------------------------------------------------------------


@pytest.mark.parametrize(
    ("features", "sent", "absent"),
    [
        (StoreFeatures(), {"ChecksumSHA256": sha(b"body"), "Tagging": "t=1"}, ["ContentMD5"]),
        (StoreFeatures(tags=False), {"ChecksumSHA256": sha(b"body")}, ["Tagging", "ContentMD5"]),
        (StoreFeatures(checksum="md5"), {"ContentMD5": base64.b64encode(hashlib.md5(b"body").digest()).decode()},
         ["ChecksumSHA256"]),
        (StoreFeatures(checksum="none", tags=False), {}, ["ChecksumSHA256", "ContentMD5", "Tagging"]),
    ],
)  # fmt: skip
def test_uploads_carry_the_tags_and_checksum_header_the_features_say(
    features: StoreFeatures, sent: dict[str, str], absent: list[str]
) -> None:
    client = FakeClient(put_object={"ETag": f'"{hashlib.md5(b"body").hexdigest()}"'})
    store, _ = store_on(client)
    assert store.with_features(features).create(KEY, b"body", {}, {"t": "1"}) is True
    kwargs = client.calls[0][1]
    assert sent.items() <= kwargs.items()
    assert not set(absent) & set(kwargs)


def test_where_multipart_completion_ignores_the_condition_a_large_create_goes_as_one_conditional_put() -> None:
    client = FakeClient(put_object=echo)
    store, _ = store_on(client, multipart_threshold=5 * MIB, multipart_chunk_size=5 * MIB)
    body = b"\0" * (12 * MIB)
    assert store.with_features(StoreFeatures(conditional_multipart=False)).create(KEY, body, {}, {}) is True
    assert client.ops() == ["put_object"]
    assert client.calls[0][1]["IfNoneMatch"] == "*"


def test_an_unconditional_large_put_still_goes_in_parts_where_completion_ignores_conditions() -> None:
    client = multipart_client(head=held(12 * MIB))
    store, _ = store_on(client, multipart_threshold=5 * MIB, multipart_chunk_size=5 * MIB)
    store.with_features(StoreFeatures(conditional_multipart=False)).put(KEY, b"\0" * (12 * MIB), {}, {})
    assert client.ops()[0] == "create_multipart_upload"


def _probe_client(put_object: list[Outcome], complete: list[Outcome], tagging: Outcome | None = None) -> FakeClient:
    return FakeClient(
        put_object=put_object, create_multipart_upload={"UploadId": "u1"}, upload_part={"ETag": '"p"'},
        complete_multipart_upload=complete, abort_multipart_upload={},
        get_object_tagging=tagging or {"TagSet": [{"Key": "walbucket-kind", "Value": "probe"}]},
    )  # fmt: skip


BAD_DIGEST = client_error("BadDigest", 400)


def test_the_probe_finds_a_store_that_checks_and_honours_everything() -> None:
    """AWS S3: a wrong checksum is refused, tags read back, a second conditional completion is refused."""
    client = _probe_client([BAD_DIGEST, BAD_DIGEST, {}], [{}, client_error("PreconditionFailed", 412)])
    store, sleeps = store_on(client)
    assert store.probe_features("p/probe/features") == StoreFeatures(tags=True, checksum="sha256")
    puts = [kwargs for op, kwargs in client.calls if op == "put_object"]
    assert puts[0]["ChecksumSHA256"] != sha(puts[0]["Body"]), "the first probe sends a wrong checksum on purpose"
    assert ["ChecksumSHA256" in puts[0], "ContentMD5" in puts[1], "Tagging" in puts[2]] == [True, True, True]
    assert puts[2]["ChecksumSHA256"] == sha(puts[2]["Body"])
    assert all(kwargs["IfNoneMatch"] == "*" for op, kwargs in client.calls if op == "complete_multipart_upload")
    assert sleeps == [], "a refused wrong checksum is the answer, not a transient failure"


def test_the_probe_prefers_the_header_the_store_checks() -> None:
    """Ceph RGW before Tentacle: a wrong SHA-256 is accepted, a wrong Content-MD5 refused; completion overwrites."""
    client = _probe_client([{}, BAD_DIGEST, {}], [{}, {}])
    store, _ = store_on(client)
    assert store.probe_features("p/probe/features") == StoreFeatures(True, "md5", conditional_multipart=False)


def test_the_probe_falls_back_from_refused_headers() -> None:
    """Backblaze B2: the SHA-256 header and tags refused; Content-MD5 accepted."""
    client = _probe_client([client_error("InvalidArgument", 400), {}, client_error("NotImplemented", 501)], [{}, {}])
    store, _ = store_on(client)
    found = store.probe_features("p/probe/features")
    assert found == StoreFeatures(False, "md5", conditional_multipart=False, checksum_checked=False)
    assert "get_object_tagging" not in client.ops()


def test_the_probe_reads_tags_back_from_a_store_that_drops_them() -> None:
    """Garage: the tagging header is accepted and dropped; its tagging API answers 501."""
    client = _probe_client([{}, {}, {}], [{}, {}], tagging=client_error("NotImplemented", 501, "GetObjectTagging"))
    store, _ = store_on(client)
    assert store.probe_features("p/probe/features") == StoreFeatures(
        False, "sha256", conditional_multipart=False, checksum_checked=False
    )


def test_a_probe_refused_for_lack_of_permission_is_an_error_not_a_missing_feature() -> None:
    client = _probe_client([BAD_DIGEST, BAD_DIGEST, client_error("AccessDenied", 403)], [{}])
    store, _ = store_on(client)
    with pytest.raises(StoreError, match=r"^access denied \(AccessDenied\)"):
        store.probe_features("p/probe/features")


def test_tags_dropped_by_a_multipart_upload_are_set_after_it() -> None:
    """Ceph RGW 16.2 ignores x-amz-tagging on CreateMultipartUpload: HEAD shows no tag count, so tag the object."""
    body = b"\0" * (6 * MIB)
    client = multipart_client(head=held(len(body)))
    store, _ = store_on(client, multipart_threshold=5 * MIB, multipart_chunk_size=5 * MIB)
    store.put(KEY, body, {}, {"a b": "c"})
    assert client.calls[-1] == (
        "put_object_tagging",
        {"Bucket": "wal-archive", "Key": KEY, "Tagging": {"TagSet": [{"Key": "a b", "Value": "c"}]}},
    )
    assert client.calls[0][1]["Tagging"] == "a%20b=c"


def test_tags_kept_by_a_multipart_upload_are_not_set_again() -> None:
    body = b"\0" * (6 * MIB)
    client = multipart_client(head={**held(len(body)), "TagCount": 1})
    store, _ = store_on(client, multipart_threshold=5 * MIB, multipart_chunk_size=5 * MIB)
    store.put(KEY, body, {}, {"a": "b"})
    assert "put_object_tagging" not in client.ops()


def test_an_object_without_tags_answered_with_an_empty_body_has_no_tags() -> None:
    store, _ = store_on(FakeClient(get_object_tagging={}))
    assert store.tags(KEY) == {}


def test_every_probe_write_is_a_conditional_create_of_its_own_key_with_the_uploads_extras() -> None:
    """A bucket policy may require If-None-Match (the Terraform module's does) or an encryption header on PUT."""
    client = _probe_client([BAD_DIGEST, BAD_DIGEST, {}], [{}, client_error("PreconditionFailed", 412)])
    store, _ = store_on(client, sse="aws:kms")
    store.probe_features("p/probe/features-1")
    puts = [kwargs for op, kwargs in client.calls if op == "put_object"]
    assert [p["Key"] for p in puts] == [
        "p/probe/features-1-sha256",
        "p/probe/features-1-md5",
        "p/probe/features-1-tags",
    ]
    assert all(p["IfNoneMatch"] == "*" and p["ServerSideEncryption"] == "aws:kms" for p in puts)


def test_a_probe_of_an_endpoint_without_conditional_writes_sends_no_condition_and_skips_multipart() -> None:
    client = _probe_client([{}, {}, {}], [])
    store, _ = store_on(client)
    assert store.probe_features("p/probe/f", conditional=False).conditional_multipart is False
    assert all("IfNoneMatch" not in kwargs for _, kwargs in client.calls)
    assert "complete_multipart_upload" not in client.ops()


def test_a_transient_400_during_the_probe_is_retried_not_taken_for_a_refused_header() -> None:
    client = _probe_client([client_error("RequestTimeout", 400), BAD_DIGEST, BAD_DIGEST, {}], [{}, {}])
    store, sleeps = store_on(client)
    assert store.probe_features("p/probe/f").checksum == "sha256"
    assert len(sleeps) == 1


def test_a_501_on_conditional_completion_means_not_honoured() -> None:
    client = _probe_client([BAD_DIGEST, BAD_DIGEST, {}], [client_error("NotImplemented", 501)])
    store, _ = store_on(client)
    assert store.probe_features("p/probe/f").conditional_multipart is False


def test_an_etag_in_md5_form_that_is_not_the_bodys_md5_is_checked_by_reading_the_object_back() -> None:
    """MinIO with encryption answers such ETags for good uploads; a damaged upload stored other bytes."""
    client = FakeClient(put_object={"ETag": '"' + "ab" * 16 + '"'}, get_object=got(b"body"))
    store, _ = store_on(client)
    assert store.create(KEY, b"body", {}, {}) is True
    assert client.ops() == ["put_object", "get_object"]
    damaged = FakeClient(put_object={"ETag": '"' + "ab" * 16 + '"'}, get_object=got(b"bodz"))
    store, _ = store_on(damaged)
    with pytest.raises(IntegrityError, match=r"^the store holds other bytes under .* than were uploaded"):
        store.create(KEY, b"body", {}, {})


@pytest.mark.parametrize("error", [client_error("NotImplemented", 501), client_error("InvalidRequest", 400)])
def test_a_store_without_the_tagging_api_has_objects_without_tags(error: ClientError) -> None:
    store, _ = store_on(FakeClient(get_object_tagging=error))
    assert store.tags(KEY) == {}
