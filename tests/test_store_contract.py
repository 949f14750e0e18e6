"""The Store contract (store/protocol.py), one set of tests run against every adapter.

MemoryStore is what the unit tests trust; S3Store runs against real S3 endpoints on 127.0.0.1 (moto's server over
http, a Ceph 16.2 RADOS Gateway over http and over https; see conftest.ENDPOINTS), built the way the CLI builds it
(Settings -> open_store, then the features probed on the endpoint: tags, checksum header, conditional multipart
completion). Any behaviour a service relies on belongs here, so the fake cannot drift, and what a real store does
differently from moto shows up here first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import ENDPOINTS, StoreEndpoint, make_endpoint
from walbucket.archive.conditional import upload_features
from walbucket.core.keylayout import KeyLayout
from walbucket.core.settings import Settings, load_settings
from walbucket.store.factory import open_store
from walbucket.store.memory import MemoryStore
from walbucket.store.protocol import ObjectInfo, Store, StoreFeatures

MIB = 1 << 20
META = {"walbucket-format": "1", "walbucket-sha256": "ab" * 32, "walbucket-size": "5", "walbucket-codec": "none"}
TAGS = {"walbucket-kind": "segment", "walbucket-timeline": "1", "walbucket-system-id": "7300000000000000001"}
STORES = ("memory", *ENDPOINTS)
# Listing and bucket configuration are about the store, not the transport: over http alone. Writes and reads run
# over https too (botocore sends uploads differently there).
HTTP_STORES = ("memory", "moto", "rgw")
HTTP_ONLY = pytest.mark.parametrize("backend", HTTP_STORES, indirect=True)


@dataclass(frozen=True)
class Backend:
    """The store under test and, for S3Store, the endpoint and bucket behind it."""

    store: Store
    endpoint: StoreEndpoint | None = None
    bucket: str = ""


_PROBED: dict[str, StoreFeatures] = {}  # endpoint name -> what the feature probe found there, once per session


def _settings(endpoint: StoreEndpoint, bucket: str, state_dir: Path) -> Settings:
    return load_settings(
        {},
        endpoint.env(bucket)
        | {
            "WALBUCKET_STATE_DIR": str(state_dir),
            "WALBUCKET_RETRY_BUDGET": "5",
            "WALBUCKET_MULTIPART_THRESHOLD": "6MiB",
            "WALBUCKET_MULTIPART_CHUNK_SIZE": "5MiB",
        },
    )


def _features(endpoint: StoreEndpoint, state_dir: Path) -> StoreFeatures:
    """What push would find on this endpoint (conditional.upload_features), probed in a bucket of its own: the probe
    leaves objects behind, which the listing tests must not see."""
    if endpoint.name not in _PROBED:
        bucket = endpoint.create_bucket()
        settings = _settings(endpoint, bucket, state_dir)
        _PROBED[endpoint.name] = upload_features(
            settings.object_tags, settings.upload_checksum, True, open_store(settings), KeyLayout(""),
            f"{endpoint.url}/{bucket}", None,
        )  # fmt: skip
    return _PROBED[endpoint.name]


@pytest.fixture(params=STORES)
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    if request.param == "memory":
        yield Backend(MemoryStore())
        return
    endpoint = make_endpoint(request, request.param)
    bucket = endpoint.create_bucket()
    settings = _settings(endpoint, bucket, tmp_path / "state")
    # credentials come from boto3's own chain (the process environment), never from walbucket's settings; over https
    # the CA is walbucket's ca_bundle setting alone, not the caller's AWS_CA_BUNDLE
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    credentials = endpoint.env(bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials["AWS_SECRET_ACCESS_KEY"])
    store = open_store(settings).with_features(_features(endpoint, tmp_path / "state"))
    yield Backend(store, endpoint, bucket)


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store


@pytest.mark.parametrize("key", ["absent", "p/wal/0000000100000000/000000010000000000000001"])
def test_an_absent_key_reads_heads_and_tags_as_none(store: Store, key: str) -> None:
    assert store.read(key) is None
    assert store.head(key) is None
    assert store.tags(key) is None


def test_create_stores_body_metadata_and_tags(store: Store) -> None:
    assert store.create("p/k", b"hello", META, TAGS) is True
    stored = store.read("p/k")
    assert stored is not None
    assert stored.body == b"hello"
    assert stored.info == ObjectInfo("p/k", 5, META)
    assert store.head("p/k") == ObjectInfo("p/k", 5, META)
    assert store.tags("p/k") == TAGS


def test_create_of_an_existing_key_is_false_and_changes_nothing(store: Store) -> None:
    assert store.create("p/k", b"first", META, TAGS) is True
    other_meta = {**META, "walbucket-sha256": "cd" * 32}
    assert store.create("p/k", b"second, longer", other_meta, {"walbucket-kind": "other"}) is False
    stored = store.read("p/k")
    assert stored is not None
    assert (stored.body, stored.info.metadata) == (b"first", META)
    assert store.tags("p/k") == TAGS


def test_create_after_put_is_false(store: Store) -> None:
    store.put("p/k", b"put", {}, {})
    assert store.create("p/k", b"create", {}, {}) is False
    stored = store.read("p/k")
    assert stored is not None and stored.body == b"put"


def test_put_creates_and_overwrites(store: Store) -> None:
    store.put("p/k", b"first", META, TAGS)
    store.put("p/k", b"second", {"walbucket-codec": "zstd"}, {"walbucket-kind": "history"})
    stored = store.read("p/k")
    assert stored is not None
    assert (stored.body, stored.info) == (b"second", ObjectInfo("p/k", 6, {"walbucket-codec": "zstd"}))
    assert store.tags("p/k") == {"walbucket-kind": "history"}


def test_empty_body_metadata_and_tags(store: Store) -> None:
    assert store.create("p/empty", b"", {}, {}) is True
    stored = store.read("p/empty")
    assert stored is not None
    assert (stored.body, stored.info) == (b"", ObjectInfo("p/empty", 0, {}))
    assert store.tags("p/empty") == {}


def test_binary_bodies_round_trip(store: Store) -> None:
    body = bytes(range(256)) * 64 + os.urandom(1000)
    store.create("p/bin", body, META, {})
    stored = store.read("p/bin")
    assert stored is not None and stored.body == body


@pytest.mark.parametrize(
    "metadata",
    [
        META,
        {"walbucket-system-id": "18446744073709551615", "walbucket-size": "1073741824"},
        {"x-with-dashes": "value with spaces", "digits-1": "0"},
    ],
)
def test_metadata_round_trips(store: Store, metadata: dict[str, str]) -> None:
    store.create("p/m", b"x", metadata, {})
    stored = store.read("p/m")
    assert stored is not None and stored.info.metadata == metadata
    info = store.head("p/m")
    assert info is not None and info.metadata == metadata


@pytest.mark.parametrize(
    "tags",
    [
        TAGS,
        {"walbucket-kind": "probe"},
        {"a b": "c d", "path": "x/y:z@w", "plus": "1+2=3", "dot_under-dash": "v.1_2-3"},
    ],
)
def test_tags_round_trip(store: Store, tags: dict[str, str]) -> None:
    store.create("p/t", b"x", {}, tags)
    assert store.tags("p/t") == tags
    store.put("p/u", b"x", {}, tags)
    assert store.tags("p/u") == tags


@HTTP_ONLY
def test_list_yields_keys_under_the_prefix_in_key_order(store: Store) -> None:
    keys = ["p/wal/b", "p/wal/a/2", "p/wal/a/10", "p/walx", "p/history/1", "q/wal/a", "p/wal/a/1"]
    for n, key in enumerate(keys):
        store.put(key, b"x" * n, {"m": "v"}, {})
    assert list(store.list("p/wal/")) == [
        ObjectInfo("p/wal/a/1", 6),
        ObjectInfo("p/wal/a/10", 2),
        ObjectInfo("p/wal/a/2", 1),
        ObjectInfo("p/wal/b", 0),
    ]
    assert [o.key for o in store.list("p/wal")] == ["p/wal/a/1", "p/wal/a/10", "p/wal/a/2", "p/wal/b", "p/walx"]
    assert [o.key for o in store.list("")] == sorted(keys)
    assert list(store.list("p/nothing/")) == []


@HTTP_ONLY
def test_list_goes_beyond_one_page(store: Store) -> None:
    keys = [f"p/many/{n:05d}" for n in range(1100)]  # S3 lists at most 1000 keys per request
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda key: store.put(key, key.encode(), {}, {}), keys))
    store.put("p/other", b"", {}, {})
    listed = list(store.list("p/many/"))
    assert [o.key for o in listed] == keys
    assert {o.size for o in listed} == {len(keys[0])}


# The S3 adapter is built with multipart_threshold = 6MiB, chunk = 5MiB: 12MiB goes in three parts.
LARGE = (bytes(range(256)) * 4096) * 12


def test_a_large_body_round_trips_with_its_metadata_and_tags(store: Store) -> None:
    assert len(LARGE) == 12 * MIB
    assert store.create("p/large", LARGE, META, TAGS) is True
    stored = store.read("p/large")
    assert stored is not None
    assert stored.body == LARGE
    assert stored.info == ObjectInfo("p/large", 12 * MIB, META)
    assert store.tags("p/large") == TAGS


def test_create_of_a_large_body_under_an_existing_key_is_false_and_changes_nothing(store: Store) -> None:
    assert store.create("p/large", LARGE, META, {}) is True
    assert store.create("p/large", b"\xff" * (12 * MIB), {"walbucket-codec": "other"}, {}) is False
    stored = store.read("p/large")
    assert stored is not None and stored.body == LARGE
    info = store.head("p/large")
    assert info is not None and info.metadata == META


def test_put_of_a_large_body_keeps_its_metadata_and_tags(store: Store) -> None:
    store.put("p/large", LARGE, META, TAGS)
    stored = store.read("p/large")
    assert stored is not None
    assert stored.body == LARGE
    assert stored.info == ObjectInfo("p/large", 12 * MIB, META)
    assert store.tags("p/large") == TAGS


def test_put_of_a_large_body_overwrites(store: Store) -> None:
    store.put("p/large", b"small", {}, {})
    body = os.urandom(7 * MIB)
    store.put("p/large", body, META, {})
    stored = store.read("p/large")
    assert stored is not None and stored.body == body and stored.info.metadata == META


def test_concurrent_creates_of_one_key_let_exactly_one_win(store: Store) -> None:
    bodies = [f"writer {n}".encode() for n in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda body: store.create("p/race", body, {}, {}), bodies))
    assert results.count(True) == 1
    stored = store.read("p/race")
    assert stored is not None and stored.body == bodies[results.index(True)]


@HTTP_ONLY
def test_list_prefixes_yields_one_level_of_sub_prefixes_in_key_order(store: Store) -> None:
    keys = ["p/wal/b/1", "p/wal/a/2", "p/wal/a/1", "p/wal/a/x/deeper", "p/wal/loose", "p/walx/c/1", "p/history/1"]
    for key in keys:
        store.put(key, b"x", {}, {})
    assert list(store.list_prefixes("p/wal/")) == ["p/wal/a/", "p/wal/b/"]
    assert list(store.list_prefixes("p/")) == ["p/history/", "p/wal/", "p/walx/"]
    assert list(store.list_prefixes("p/wal/a/")) == ["p/wal/a/x/"]
    assert list(store.list_prefixes("p/nothing/")) == []


@HTTP_ONLY
def test_list_prefixes_goes_beyond_one_page(store: Store) -> None:
    dirs = [f"p/dirs/{n:04d}/" for n in range(1010)]  # S3 answers at most 1000 common prefixes per request
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda d: store.put(d + "k", b"", {}, {}), dirs))
    assert list(store.list_prefixes("p/dirs/")) == dirs


@HTTP_ONLY
def test_list_gives_each_object_its_upload_time(store: Store) -> None:
    before = time.time()
    store.put("p/a", b"x", {}, {})
    store.create("p/b", b"y", {}, {})
    after = time.time()
    listed = list(store.list("p/"))
    assert [o.key for o in listed] == ["p/a", "p/b"]
    for info in listed:
        assert info.last_modified is not None
        assert before - 2 <= info.last_modified <= after + 2  # S3 keeps whole seconds (or milliseconds)


RULES = [
    {"ID": "walbucket-segment:p", "Status": "Enabled", "Filter": {"Prefix": "p/wal/"}, "Expiration": {"Days": 3}},
    {"ID": "walbucket-backup:p", "Status": "Enabled", "Filter": {"Prefix": "p/backup/"}, "Expiration": {"Days": 5}},
]


def _rule_id(rule: dict[str, Any]) -> str:
    return str(rule["ID"])


@HTTP_ONLY
def test_lifecycle_rules_are_none_until_the_bucket_has_a_configuration(backend: Backend) -> None:
    store = backend.store
    assert store.lifecycle_rules() is None
    if isinstance(store, MemoryStore):
        store.lifecycle = RULES
    else:
        assert backend.endpoint is not None
        client: Any = backend.endpoint.client()
        client.put_bucket_lifecycle_configuration(Bucket=backend.bucket, LifecycleConfiguration={"Rules": RULES})
    rules = store.lifecycle_rules()
    # S3 defines no order of the rules: moto answers them as given, Ceph RGW sorted by ID
    assert rules is not None and sorted(rules, key=_rule_id) == sorted(RULES, key=_rule_id)
