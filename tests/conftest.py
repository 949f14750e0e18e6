"""Shared fixtures: real S3 endpoints on 127.0.0.1 (moto's server; a Ceph RADOS Gateway over http and https),
buckets, and the walbucket executable.

``moto_server``, ``bucket``, ``s3_client`` and ``wb_env`` are moto's, for the tests written against moto alone.
``store_endpoint`` is parametrized over ``ENDPOINTS`` (moto over http, RGW over http, RGW over https), with
``endpoint_bucket`` and ``endpoint_env`` on it: a test that takes them runs against each. A test that needs only some
endpoints narrows them with ``@pytest.mark.parametrize("store_endpoint", [...], indirect=True)``.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab_rgw import RgwServer
from lab_s3 import MotoServer
from walfactory import segment_bytes

_BUCKETS = itertools.count(1)
WALBUCKET = Path(sys.executable).with_name("walbucket")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(log_path=tmp_path_factory.mktemp("moto") / "moto.log")
    with server:
        yield server


@pytest.fixture
def bucket(moto_server: MotoServer) -> str:
    name = f"wb-test-{os.getpid()}-{next(_BUCKETS)}"
    moto_server.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name


@pytest.fixture
def s3_client(moto_server: MotoServer) -> object:
    return moto_server.client()


@pytest.fixture
def wb_env(moto_server: MotoServer, bucket: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running the walbucket CLI against this test's bucket, and nothing else of the caller's.

    The state directory already knows what moto takes in an upload (``store-features.json``), as it would after a
    first push: the probe itself is tested in test_cli_stores.py, test_providers_emulated.py and test_s3_adapter.py,
    and every other test spares its dozen requests.
    """
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    features = {"tags": True, "checksum": "sha256", "conditional_multipart": True, "checksum_checked": False}
    (state / "store-features.json").write_text(json.dumps({f"{moto_server.url}/{bucket}": features}))
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "WALBUCKET_STATE_DIR": str(state),
        "WALBUCKET_RETRY_BUDGET": "5",
        **moto_server.env(bucket, prefix="test"),
    }


# --- every S3 endpoint: moto, Ceph RGW over http, Ceph RGW over https -----------------------------------------------

ENDPOINTS = ("moto", "rgw", "rgw-https")


@pytest.fixture(scope="session")
def rgw_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RgwServer]:
    """A Ceph 16.2 RADOS Gateway on 127.0.0.1 (http and https), started once, on first use (about 4 s)."""
    server = RgwServer(log_path=tmp_path_factory.mktemp("rgw") / "rgw.log")
    with server:
        yield server


@dataclass(frozen=True)
class StoreEndpoint:
    """One S3 endpoint as walbucket and the tests see it: its name (an ``ENDPOINTS`` entry) and URL, the walbucket
    environment for a bucket on it, a boto3 client for checking objects directly, and for https the CA to trust."""

    name: str
    url: str
    server: MotoServer | RgwServer
    https: bool = False

    @property
    def ca_bundle(self) -> str | None:
        """The PEM file of the CA that signed the endpoint's certificate (https only)."""
        return self.server.ca_bundle if isinstance(self.server, RgwServer) and self.https else None

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The walbucket settings and credentials for ``bucket`` (with WALBUCKET_CA_BUNDLE over https)."""
        if isinstance(self.server, RgwServer) and self.https:
            return self.server.https_env(bucket, prefix)
        return self.server.env(bucket, prefix)

    def client(self) -> Any:
        """A boto3 client for this endpoint. For RGW, botocore's checksums only where an operation requires them:
        its default (a trailing checksum in an aws-chunked body over https) is refused by RGW 16.2 with 411."""
        if isinstance(self.server, RgwServer):
            return self.server.client(https=self.https, request_checksum_calculation="when_required")
        return self.server.client()

    def create_bucket(self) -> str:
        """A new, empty bucket (a valid S3 name: lowercase, digits and dashes, at most 63 characters)."""
        name = f"wb-test-{os.getpid()}-{next(_BUCKETS)}"
        self.client().create_bucket(Bucket=name)
        return name


def make_endpoint(request: pytest.FixtureRequest, name: str) -> StoreEndpoint:
    """The ``StoreEndpoint`` called ``name``, starting its server (a session fixture) if it is not running yet."""
    if name == "moto":
        moto: MotoServer = request.getfixturevalue("moto_server")
        return StoreEndpoint(name, moto.url, moto)
    rgw: RgwServer = request.getfixturevalue("rgw_server")
    if name == "rgw":
        return StoreEndpoint(name, rgw.url, rgw)
    if name == "rgw-https":
        return StoreEndpoint(name, rgw.https_url, rgw, https=True)
    raise ValueError(f"unknown endpoint {name!r}; known: {', '.join(ENDPOINTS)}")


@pytest.fixture(params=ENDPOINTS)
def store_endpoint(request: pytest.FixtureRequest) -> StoreEndpoint:
    return make_endpoint(request, request.param)


@pytest.fixture
def endpoint_bucket(store_endpoint: StoreEndpoint) -> str:
    return store_endpoint.create_bucket()


@pytest.fixture
def endpoint_env(store_endpoint: StoreEndpoint, endpoint_bucket: str, tmp_path: Path) -> dict[str, str]:
    """Like ``wb_env``, for this test's bucket on ``store_endpoint``, with prefix 'test'."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "WALBUCKET_STATE_DIR": str(tmp_path / "state"),
        "WALBUCKET_RETRY_BUDGET": "5",
        **store_endpoint.env(endpoint_bucket, prefix="test"),
    }


_ELAPSED = re.compile(r"\(exit (\d+) after \d+\.\d{3}s\)")


def untimed(text: str) -> str:
    """``text`` with the time of each failure line taken out: '(exit 6 after 0.123s)' becomes '(exit 6)'."""
    return _ELAPSED.sub(r"(exit \1)", text)


def run_walbucket(
    args: list[str], env: Mapping[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed walbucket executable as PostgreSQL would: a fresh process, exit code and stderr."""
    return subprocess.run(
        [str(WALBUCKET), *args], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


# --- CLI tests (tests/test_cli.py, tests/test_cli_faults.py) ---------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A cluster's data directory: the working directory of archive_command and restore_command."""
    path = tmp_path / "pgdata"
    (path / "pg_wal").mkdir(parents=True)
    return path


@pytest.fixture
def wal_file(data_dir: Path) -> Callable[..., Path]:
    """Write a WAL file into data_dir/pg_wal: ``wal_file(name)`` a valid segment, ``wal_file(name, data)`` any bytes."""

    def write(name: str, data: bytes | None = None, **segment: Any) -> Path:
        path = data_dir / "pg_wal" / name
        path.write_bytes(segment_bytes(name, **segment) if data is None else data)
        return path

    return write


@pytest.fixture
def bucket_keys(s3_client: Any, bucket: str) -> Callable[[], list[str]]:
    """List every key in this test's bucket, read directly with boto3."""

    def keys() -> list[str]:
        pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    return keys
