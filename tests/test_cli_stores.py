"""The walbucket executable against real S3 endpoints: moto over http, Ceph RGW 16.2 over http and over https.

What the store decides is asserted on RGW (duplicates, conflicts, absence, outages, racing writers), with moto as
the reference where RGW differs: the probes, and a conflicting push with multipart settings (RGW ignores
If-None-Match on CompleteMultipartUpload). moto's side of the rest is in test_cli.py and test_cli_faults.py. Over
https on RGW: the probes, absence and outages; uploads must not use botocore's aws-chunked trailing checksum (RGW
16.2 refuses it with 411 MissingContentLength), single-part and multipart; and the CA is found where boto3 looks for
it when walbucket's own ``ca_bundle`` is not set.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zstandard
from botocore.exceptions import ClientError

from conftest import StoreEndpoint, run_walbucket, untimed
from lab_rgw import RgwServer
from lab_s3 import free_port
from walfactory import segment_bytes

SEG1 = "000000010000000000000001"
KEY1 = f"test/wal/{SEG1[:16]}/{SEG1}"
PROBE_KEY = "test/probe/conditional-write"
RACERS = 8
CONFLICT = f"WAL file '{SEG1}' already exists in the archive with different content"
# A 16 MiB segment, uncompressed, in parts of 5 MiB: four parts (5 + 5 + 5 + 1 MiB).
MULTIPART = {
    "WALBUCKET_COMPRESSION": "none",
    "WALBUCKET_MULTIPART_THRESHOLD": "5MiB",
    "WALBUCKET_MULTIPART_CHUNK_SIZE": "5MiB",
}
RGW = pytest.mark.parametrize("store_endpoint", ["rgw", "rgw-https"], indirect=True)
RGW_HTTP = pytest.mark.parametrize("store_endpoint", ["rgw"], indirect=True)
RGW_HTTPS = pytest.mark.parametrize("store_endpoint", ["rgw-https"], indirect=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def head(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return dict(s3.head_object(Bucket=bucket, Key=key))


def run_all(calls: list[tuple[list[str], Mapping[str, str], Path]]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent walbucket processes concurrently; results in the order of ``calls``."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: run_walbucket(*call), calls))


def assert_error(result: subprocess.CompletedProcess[str], code: int, subject: str, message: str) -> None:
    """Assert the exit code and the line ``walbucket <subject>: ERROR: <message> (exit <code> after <s>s)``."""
    assert result.returncode == code, result.stderr
    line = f"walbucket {subject}: ERROR: {message} (exit {code})"
    assert line in untimed(result.stderr).splitlines(), result.stderr


def restored(env: Mapping[str, str], data_dir: Path, name: str = SEG1) -> bytes:
    """``walbucket get name`` into the data directory: the bytes it wrote (the test fails if it did not succeed)."""
    result = run_walbucket(["get", name, "pg_wal/RECOVERYXLOG"], env, cwd=data_dir)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"walbucket get {name}: restored 16\.0 MiB from .+ stored in \d+\.\d+s\n", result.stderr)
    return (data_dir / "pg_wal" / "RECOVERYXLOG").read_bytes()


# --- duplicates, conflicts, absence ---------------------------------------------------------------------------------


@RGW_HTTP
def test_push_of_the_same_segment_again_is_success_as_a_duplicate(
    store_endpoint: StoreEndpoint,
    endpoint_bucket: str,
    endpoint_env: dict[str, str],
    data_dir: Path,
    wal_file: Callable[..., Path],
) -> None:
    s3 = store_endpoint.client()
    path = str(wal_file(SEG1))
    first = run_walbucket(["push", path], endpoint_env, cwd=data_dir)
    assert first.returncode == 0, first.stderr
    assert f"walbucket push {SEG1}: archived 16.0 MiB as " in first.stderr
    before = head(s3, endpoint_bucket, KEY1)

    again = run_walbucket(["push", path], endpoint_env, cwd=data_dir)

    assert again.returncode == 0, again.stderr
    assert re.fullmatch(
        rf"walbucket push {SEG1}: already archived with identical content \(duplicate\), 16\.0 MiB in \d+\.\d+s\n",
        again.stderr,
    )
    after = head(s3, endpoint_bucket, KEY1)
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])


@RGW_HTTP
def test_push_of_different_content_under_an_archived_name_exits_6_and_leaves_the_object(
    store_endpoint: StoreEndpoint,
    endpoint_bucket: str,
    endpoint_env: dict[str, str],
    data_dir: Path,
    wal_file: Callable[..., Path],
) -> None:
    s3 = store_endpoint.client()
    data = segment_bytes(SEG1)
    path = str(wal_file(SEG1))
    assert run_walbucket(["push", path], endpoint_env, cwd=data_dir).returncode == 0
    before = head(s3, endpoint_bucket, KEY1)
    wal_file(SEG1, fill=b"the other primary wrote this")

    result = run_walbucket(["push", path], endpoint_env, cwd=data_dir)

    assert_error(result, 6, f"push {SEG1}", CONFLICT)
    after = head(s3, endpoint_bucket, KEY1)
    assert (after["ETag"], after["Metadata"]) == (before["ETag"], before["Metadata"])
    assert after["Metadata"]["walbucket-sha256"] == sha256(data)
    assert restored(endpoint_env, data_dir) == data


@RGW_HTTP
def test_get_restores_a_pushed_segment_byte_for_byte(
    endpoint_env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    push = run_walbucket(["push", str(wal_file(SEG1))], endpoint_env, cwd=data_dir)
    assert push.returncode == 0, push.stderr

    assert restored(endpoint_env, data_dir) == segment_bytes(SEG1)


@RGW
def test_get_of_a_name_not_in_the_archive_exits_1_and_writes_nothing(
    endpoint_env: dict[str, str], data_dir: Path
) -> None:
    result = run_walbucket(["get", SEG1, "pg_wal/RECOVERYXLOG"], endpoint_env, cwd=data_dir)

    assert result.returncode == 1, result.stderr
    assert re.fullmatch(rf"walbucket get {SEG1}: not in the archive in \d+\.\d+s\n", result.stderr)
    assert list((data_dir / "pg_wal").iterdir()) == []


# --- conditional writes ---------------------------------------------------------------------------------------------


def test_the_probes_find_what_the_endpoint_honours_and_remember_it_in_the_state_dir(
    store_endpoint: StoreEndpoint,
    endpoint_bucket: str,
    endpoint_env: dict[str, str],
    data_dir: Path,
    wal_file: Callable[..., Path],
) -> None:
    result = run_walbucket(["push", str(wal_file(SEG1))], endpoint_env, cwd=data_dir)

    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, "no HEAD-then-PUT fallback on an endpoint that honours If-None-Match"
    state_dir, endpoint_id = Path(endpoint_env["WALBUCKET_STATE_DIR"]), f"{store_endpoint.url}/{endpoint_bucket}"
    assert json.loads((state_dir / "conditional-writes.json").read_text()) == {endpoint_id: True}
    assert head(store_endpoint.client(), endpoint_bucket, PROBE_KEY)["ContentLength"] > 0
    # RGW 16.2 ignores If-None-Match on CompleteMultipartUpload: the feature probe must find that out
    features = json.loads((state_dir / "store-features.json").read_text())
    assert list(features) == [endpoint_id]
    assert features[endpoint_id]["tags"] is True
    assert features[endpoint_id]["conditional_multipart"] is (store_endpoint.name == "moto")


@RGW_HTTP
def test_racing_pushes_of_different_content_under_one_name_have_exactly_one_winner(
    store_endpoint: StoreEndpoint, endpoint_bucket: str, endpoint_env: dict[str, str], tmp_path: Path
) -> None:
    contents = [segment_bytes(SEG1, fill=f"primary number {n} wrote this".encode()) for n in range(RACERS)]
    calls: list[tuple[list[str], Mapping[str, str], Path]] = []
    for n, data in enumerate(contents):  # one data directory per would-be primary, all archiving SEG1
        pg_wal = tmp_path / f"primary-{n}" / "pg_wal"
        pg_wal.mkdir(parents=True)
        (pg_wal / SEG1).write_bytes(data)
        calls.append((["push", f"pg_wal/{SEG1}"], endpoint_env, pg_wal.parent))

    results = run_all(calls)

    codes = [r.returncode for r in results]
    assert sorted(codes) == [0] + [6] * (RACERS - 1), [r.stderr for r in results]
    for result in results:
        if result.returncode == 6:
            assert f"ERROR: {CONFLICT} (exit 6)" in untimed(result.stderr), result.stderr
    winner = contents[codes.index(0)]
    stored = store_endpoint.client().get_object(Bucket=endpoint_bucket, Key=KEY1)
    assert stored["Metadata"]["walbucket-sha256"] == sha256(winner)
    assert zstandard.ZstdDecompressor().decompress(stored["Body"].read()) == winner


@pytest.mark.parametrize("store_endpoint", ["moto", "rgw"], indirect=True)
@pytest.mark.parametrize("mode", ["auto", "required"])
def test_a_push_of_different_content_with_multipart_settings_exits_6_and_leaves_the_object(
    store_endpoint: StoreEndpoint,
    endpoint_bucket: str,
    endpoint_env: dict[str, str],
    data_dir: Path,
    wal_file: Callable[..., Path],
    mode: str,
) -> None:
    # Ceph RGW 16.2 honours If-None-Match on PutObject but ignores it on CompleteMultipartUpload (tools/lab_rgw.py):
    # a conditional multipart upload would overwrite the archived object there, so it must not be one.
    s3 = store_endpoint.client()
    env = {**endpoint_env, **MULTIPART, "WALBUCKET_CONDITIONAL_WRITES": mode}
    archived = segment_bytes(SEG1)
    path = str(wal_file(SEG1))
    first = run_walbucket(["push", path], env, cwd=data_dir)
    assert first.returncode == 0, first.stderr
    before = head(s3, endpoint_bucket, KEY1)
    assert before["Metadata"]["walbucket-sha256"] == sha256(archived)
    wal_file(SEG1, fill=b"the other primary wrote this")

    result = run_walbucket(["push", path], env, cwd=data_dir)

    assert_error(result, 6, f"push {SEG1}", CONFLICT)
    after = head(s3, endpoint_bucket, KEY1)
    assert after["Metadata"]["walbucket-sha256"] == sha256(archived)
    assert after["ETag"] == before["ETag"]
    assert restored(env, data_dir) == archived
    assert s3.list_multipart_uploads(Bucket=endpoint_bucket).get("Uploads", []) == []


# --- outages --------------------------------------------------------------------------------------------------------


@RGW
@pytest.mark.parametrize(("command", "code"), [("push", 8), ("get", 208)])
def test_an_unreachable_endpoint_exits_8_for_push_and_208_for_get_within_the_retry_budget(
    store_endpoint: StoreEndpoint,
    endpoint_env: dict[str, str],
    data_dir: Path,
    wal_file: Callable[..., Path],
    command: str,
    code: int,
) -> None:
    scheme = store_endpoint.url.split("://")[0]
    env = {
        **endpoint_env,
        "WALBUCKET_ENDPOINT_URL": f"{scheme}://127.0.0.1:{free_port()}",
        "WALBUCKET_RETRY_BUDGET": "1",
    }
    args = ["push", str(wal_file(SEG1))] if command == "push" else ["get", SEG1, "pg_wal/RECOVERYXLOG"]

    started = time.monotonic()
    result = run_walbucket(args, env, cwd=data_dir, timeout=30)

    assert time.monotonic() - started < 15
    assert result.returncode == code, result.stderr
    assert "ERROR: storage unavailable for '" in result.stderr and "after retrying for 1s" in result.stderr
    assert not (data_dir / "pg_wal" / "RECOVERYXLOG").exists()


# --- https on RGW 16.2: no aws-chunked trailer ----------------------------------------------------------------------


@RGW_HTTPS
def test_rgw_refuses_botocores_default_trailing_checksum_over_https(
    rgw_server: RgwServer, endpoint_bucket: str
) -> None:
    """Why walbucket sets request_checksum_calculation = 'when_required': with botocore's default, an upload
    without an explicit checksum goes over https as aws-chunked with a trailing CRC32, which RGW 16.2 refuses."""
    s3 = rgw_server.client(https=True, request_checksum_calculation="when_supported")  # botocore's default

    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=endpoint_bucket, Key="k", Body=b"no explicit checksum")

    error = refused.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == ("MissingContentLength", 411)


@RGW_HTTPS
@pytest.mark.parametrize("upload", ["single-part", "multipart"])
def test_uploads_over_https_to_rgw_are_accepted_and_round_trip(
    store_endpoint: StoreEndpoint,
    endpoint_bucket: str,
    endpoint_env: dict[str, str],
    data_dir: Path,
    wal_file: Callable[..., Path],
    upload: str,
) -> None:
    # A conditional create never goes multipart on RGW 16.2 (it ignores If-None-Match on completion): HEAD-then-PUT
    # (conditional_writes = off) is the way a segment goes up in parts there.
    settings = {**MULTIPART, "WALBUCKET_CONDITIONAL_WRITES": "off"} if upload == "multipart" else {}
    env = {**endpoint_env, "WALBUCKET_COMPRESSION": "none", **settings}
    data = segment_bytes(SEG1)

    result = run_walbucket(["push", str(wal_file(SEG1))], env, cwd=data_dir)

    assert result.returncode == 0, result.stderr
    etag = head(store_endpoint.client(), endpoint_bucket, KEY1)["ETag"].strip('"')
    if upload == "multipart":
        assert etag.endswith("-4"), "four parts: 5 + 5 + 5 + 1 MiB"
    else:
        assert etag == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert restored(env, data_dir) == data


# --- https on RGW: where the CA comes from --------------------------------------------------------------------------


@pytest.fixture
def wrong_ca_bundle(tmp_path: Path) -> str:
    """A CA certificate that did not sign the gateway's certificate."""
    key, pem = tmp_path / "wrong-ca.key", tmp_path / "wrong-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(pem), "-days", "1", "-subj", "/CN=not the walbucket test CA"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return str(pem)


def without_ca_setting(env: Mapping[str, str], **extra: str) -> dict[str, str]:
    """``env`` without WALBUCKET_CA_BUNDLE, no AWS config file (HOME has none either), plus ``extra``."""
    base = {k: v for k, v in env.items() if k != "WALBUCKET_CA_BUNDLE"}
    return {**base, "AWS_CONFIG_FILE": str(Path(env["HOME"]) / "no-aws-config"), **extra}


def assert_round_trip(env: Mapping[str, str], data_dir: Path, wal_file: Callable[..., Path]) -> None:
    push = run_walbucket(["push", str(wal_file(SEG1))], env, cwd=data_dir)
    assert push.returncode == 0, push.stderr
    assert restored(env, data_dir) == segment_bytes(SEG1)


@RGW_HTTPS
def test_without_ca_bundle_the_ca_comes_from_aws_ca_bundle(
    store_endpoint: StoreEndpoint, endpoint_env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    assert store_endpoint.ca_bundle is not None
    assert_round_trip(without_ca_setting(endpoint_env, AWS_CA_BUNDLE=store_endpoint.ca_bundle), data_dir, wal_file)


@RGW_HTTPS
def test_without_ca_bundle_the_ca_comes_from_the_aws_config_file(
    store_endpoint: StoreEndpoint,
    endpoint_env: dict[str, str],
    data_dir: Path,
    wal_file: Callable[..., Path],
    tmp_path: Path,
) -> None:
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\nca_bundle = {store_endpoint.ca_bundle}\n")
    assert_round_trip(without_ca_setting(endpoint_env, AWS_CONFIG_FILE=str(config)), data_dir, wal_file)


@RGW_HTTPS
def test_walbucket_ca_bundle_wins_over_aws_ca_bundle(
    store_endpoint: StoreEndpoint,
    endpoint_env: dict[str, str],
    data_dir: Path,
    wal_file: Callable[..., Path],
    wrong_ca_bundle: str,
) -> None:
    path = str(wal_file(SEG1))
    wrong_only = without_ca_setting(endpoint_env, AWS_CA_BUNDLE=wrong_ca_bundle)
    assert run_walbucket(["push", path], wrong_only, cwd=data_dir).returncode == 7, "AWS_CA_BUNDLE is read"

    both = {**wrong_only, "WALBUCKET_CA_BUNDLE": endpoint_env["WALBUCKET_CA_BUNDLE"]}
    assert endpoint_env["WALBUCKET_CA_BUNDLE"] == store_endpoint.ca_bundle
    assert_round_trip(both, data_dir, wal_file)


@RGW_HTTPS
@pytest.mark.parametrize(("command", "code"), [("push", 7), ("get", 207)])
def test_an_untrusted_certificate_is_a_tls_failure_exit_7_for_push_and_207_for_get(
    endpoint_env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path], command: str, code: int
) -> None:
    args = ["push", str(wal_file(SEG1))] if command == "push" else ["get", SEG1, "pg_wal/RECOVERYXLOG"]

    result = run_walbucket(args, without_ca_setting(endpoint_env), cwd=data_dir, timeout=30)

    assert result.returncode == code, result.stderr
    error = [line for line in result.stderr.splitlines() if f"walbucket {command} {SEG1}: ERROR: " in line]
    assert len(error) == 1 and "TLS failure" in error[0], result.stderr
    assert "HINT: check ca_bundle" in result.stderr
    assert not (data_dir / "pg_wal" / "RECOVERYXLOG").exists()
