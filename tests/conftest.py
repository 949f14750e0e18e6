"""Shared fixtures: real S3 endpoints on 127.0.0.1 (moto's server; a Ceph RADOS Gateway over http and https),
buckets, and the walbucket executable.

``moto_server``, ``bucket``, ``s3_client`` and ``wb_env`` are moto's, for the tests written against moto alone.
``store_endpoint`` is parametrized over ``ENDPOINTS`` (moto over http, RGW over http, RGW over https), with
``endpoint_bucket`` and ``endpoint_env`` on it: a test that takes them runs against each. A test that needs only some
endpoints narrows them with ``@pytest.mark.parametrize("store_endpoint", [...], indirect=True)``.

``cli`` is the command line of the CLI tests: ``walbucket.cli.main.main`` called in this process against an in-memory
store, or (parametrized with "process") the walbucket executable against moto (see ``Cli``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from lab_rgw import RgwServer
from lab_s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
from walbucket.cli.main import main as cli_main
from walbucket.core.settings import Settings
from walbucket.store.memory import MemoryStore
from walbucket.store.protocol import Store, StoreFeatures
from walfactory import segment_bytes

_BUCKETS = itertools.count(1)
WALBUCKET = Path(sys.executable).with_name("walbucket")
# What moto takes in an upload, as its probe finds it (wb_env's store-features.json); the in-memory store of the
# in-process CLI tests is made to answer the probe the same way, so that both report alike.
MOTO_FEATURES = StoreFeatures(tags=True, checksum="sha256", conditional_multipart=True, checksum_checked=False)


# The files that keep one worker busy longest (20-130 s each on 2 cores, 2026-12-03), the PostgreSQL scenarios
# (long chains of waiting) first, each group longest first. Only an order: a PostgreSQL file missing here starts
# before all of them, any other file after them, in collection order.
_LONG_FILES = (
    "test_ha_postgres.py", "test_e2e_postgres.py", "test_faults_postgres.py", "test_ha_shared_archive.py",
    "test_admin_postgres.py", "test_async_postgres.py",
    "test_faults.py", "test_store_contract.py", "test_cli_faults.py", "test_async.py", "test_faults_worker.py",
    "test_cli_stores.py", "test_cli.py", "test_providers_emulated.py", "test_terraform.py", "test_admin_cli.py",
)  # fmt: skip


def _start_rank(item: pytest.Item) -> int:
    name = item.path.name
    if name in _LONG_FILES:
        return _LONG_FILES.index(name)
    return -1 if item.get_closest_marker("postgres") is not None else len(_LONG_FILES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first: under ``--dist loadfile`` (make test) each test file runs on one worker, so a module's
    scenario fixture runs once; the PostgreSQL scenarios and then the longest files start before the short files that
    fill the other workers around them, so that no long file starts last."""
    items.sort(key=_start_rank)  # stable: collection order within a file and among the short files


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
    features = asdict(MOTO_FEATURES)
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


# --- CLI tests: main() in this process against a MemoryStore, or the executable against moto ------------------------

MEMORY_ENDPOINT = "http://walbucket-memory-store.invalid"  # in settings only: the in-process store is a MemoryStore


class Cli:
    """The walbucket command line a test drives, with the archive it writes to.

    ``InProcessCli`` calls ``walbucket.cli.main.main`` in this process with a ``MemoryStore`` (the default: no process
    start, no boto3, no HTTP); ``ProcessCli`` runs the installed executable, as PostgreSQL does, against moto's S3
    server. A test takes the fixture ``cli`` and runs in process; it keeps the executable, for what only a process
    shows (exit status, the process environment, the console script, a real endpoint), with
    ``@pytest.mark.parametrize("cli", ["process"], indirect=True)`` (or "process" among its parameters).
    ``run`` returns a CompletedProcess either way: returncode, stdout, stderr.
    """

    name: str
    env: dict[str, str]  # the environment of the command: settings for this test's archive, HOME and state_dir
    store: Store  # the archive, for filling it through walbucket's own services

    def run(
        self, args: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        raise NotImplementedError

    def run_all(self, calls: list[tuple[list[str], Mapping[str, str], Path]]) -> list[subprocess.CompletedProcess[str]]:
        """Run independent commands, (args, env, cwd) each; results in the order of ``calls``."""
        return [self.run(args, env, cwd) for args, env, cwd in calls]

    def bucket_keys(self) -> list[str]:
        """Every key in the archive's bucket, sorted."""
        raise NotImplementedError

    def metadata(self, key: str) -> dict[str, str]:
        raise NotImplementedError

    def body(self, key: str) -> bytes:
        raise NotImplementedError

    def tags(self, key: str) -> dict[str, str]:
        raise NotImplementedError

    def version(self, key: str) -> object:
        """What changes when the object is written again, even with the same bytes (S3: ETag and LastModified)."""
        raise NotImplementedError

    def put(
        self, key: str, body: bytes, metadata: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None
    ) -> None:
        """Write an object behind walbucket's back, as a person with the bucket's credentials would."""
        raise NotImplementedError


class InProcessCli(Cli):
    """``main(argv, env, open_store)`` in this process, against ``store``; stdout and stderr captured with capsys."""

    name = "in-process"

    def __init__(self, store: MemoryStore, env: dict[str, str], capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
        self.store: MemoryStore = store
        self.env = env
        self.bucket = env["WALBUCKET_BUCKET"]
        self._capsys = capsys
        self._monkeypatch = monkeypatch
        self._start_dir = Path.cwd()  # a command without cwd runs here, as a process would: in the test's directory
        self._versions: list[object] = []  # every entry version() saw, kept alive so that no id is reused

    def run(
        self, args: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        # the data directory is the working directory, as for PostgreSQL's commands
        self._monkeypatch.chdir(self._start_dir if cwd is None else cwd)
        self._capsys.readouterr()  # what the test printed before is not the command's
        code = cli_main(args, self.env if env is None else env, open_store=self._open_store)
        out, err = self._capsys.readouterr()
        return subprocess.CompletedProcess(["walbucket", *args], code, out, err)

    def _open_store(self, settings: Settings) -> MemoryStore:
        # The store is this test's bucket and no other: settings that name another one fail the command (exit 70 or
        # 250, the error on stderr), as they would fail to find this bucket's objects on S3.
        if settings.bucket != self.bucket:
            raise AssertionError(f"the in-process store is bucket '{self.bucket}', not '{settings.bucket}'")
        return self.store

    def bucket_keys(self) -> list[str]:
        return sorted(self.store.objects)

    def metadata(self, key: str) -> dict[str, str]:
        return dict(self.store.objects[key].metadata)

    def body(self, key: str) -> bytes:
        return self.store.objects[key].body

    def tags(self, key: str) -> dict[str, str]:
        return dict(self.store.objects[key].tags)

    def version(self, key: str) -> object:
        entry = self.store.objects[key]  # each write stores a new entry
        self._versions.append(entry)
        return id(entry)

    def put(
        self, key: str, body: bytes, metadata: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None
    ) -> None:
        self.store.put(key, body, metadata or {}, tags or {})


class ProcessCli(Cli):
    """The walbucket executable in a fresh process (``run_walbucket``), against this test's bucket on moto."""

    name = "process"

    def __init__(self, moto: MotoServer, bucket: str, env: dict[str, str]) -> None:
        from walbucket.store.s3 import S3Store

        self.bucket = bucket
        self.env = env
        self.s3: Any = moto.client()
        self.store = S3Store(self.s3, bucket, retry_budget=5)

    def run(
        self, args: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run_walbucket(args, self.env if env is None else env, cwd)

    def run_all(self, calls: list[tuple[list[str], Mapping[str, str], Path]]) -> list[subprocess.CompletedProcess[str]]:
        """Concurrently: independent processes, as PostgreSQL's archiver and startup process may run them."""
        with ThreadPoolExecutor(max_workers=len(calls)) as pool:
            return list(pool.map(lambda call: run_walbucket(*call), calls))

    def bucket_keys(self) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def head(self, key: str) -> dict[str, Any]:
        return dict(self.s3.head_object(Bucket=self.bucket, Key=key))

    def metadata(self, key: str) -> dict[str, str]:
        return dict(self.head(key)["Metadata"])

    def body(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def tags(self, key: str) -> dict[str, str]:
        tag_set = self.s3.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]
        return {tag["Key"]: tag["Value"] for tag in tag_set}

    def version(self, key: str) -> object:
        info = self.head(key)
        return (info["ETag"], info["LastModified"])

    def put(
        self, key: str, body: bytes, metadata: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None
    ) -> None:
        extra = {"Tagging": urlencode(dict(tags))} if tags else {}
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata=dict(metadata or {}), **extra)


@pytest.fixture
def memory_env(tmp_path: Path) -> dict[str, str]:
    """Like ``wb_env``, for the in-process CLI: the same settings, for a bucket that only a MemoryStore holds."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "WALBUCKET_STATE_DIR": str(state),
        "WALBUCKET_RETRY_BUDGET": "5",
        "WALBUCKET_BUCKET": f"wb-test-{os.getpid()}-{next(_BUCKETS)}",
        "WALBUCKET_PREFIX": "test",
        "WALBUCKET_ENDPOINT_URL": MEMORY_ENDPOINT,
        "WALBUCKET_REGION": REGION,
        "WALBUCKET_PATH_STYLE": "true",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }


@pytest.fixture
def cli(request: pytest.FixtureRequest) -> Cli:
    """The command line of this test: in process against a MemoryStore unless parametrized with "process"."""
    mode = getattr(request, "param", "in-process")
    if mode == "process":
        return ProcessCli(request.getfixturevalue("moto_server"), request.getfixturevalue("bucket"),
                          request.getfixturevalue("wb_env"))  # fmt: skip
    if mode != "in-process":
        raise ValueError(f"unknown cli {mode!r}: 'in-process' or 'process'")
    store = MemoryStore(honours=MOTO_FEATURES)
    capsys: pytest.CaptureFixture[str] = request.getfixturevalue("capsys")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    return InProcessCli(store, request.getfixturevalue("memory_env"), capsys, monkeypatch)
