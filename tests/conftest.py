"""Shared fixtures: a real S3 endpoint (moto's server on 127.0.0.1), buckets, and the walbucket executable."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

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
    """Environment for running the walbucket CLI against this test's bucket, and nothing else of the caller's."""
    state = tmp_path / "state"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "WALBUCKET_STATE_DIR": str(state),
        "WALBUCKET_RETRY_BUDGET": "5",
        **moto_server.env(bucket, prefix="test"),
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
