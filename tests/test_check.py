"""check on MemoryStore: each item's OK/FAIL/WARN/SKIP with its detail, and that one failure does not hide others."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from walbucket.admin import check as check_module
from walbucket.admin.check import CheckReport, run_checks
from walbucket.core.errors import ConfigError, StoreError, StoreUnavailable
from walbucket.core.identity import ArchiveIdentity, encode_identity
from walbucket.core.keylayout import KeyLayout
from walbucket.store.memory import MemoryStore
from walbucket.store.protocol import StoreFeatures
from walfactory import SEG_SIZE, SYSTEM_ID

LAYOUT = KeyLayout("p")
PROBE = "p/probe/check-t0k3n"
OTHER_SYSTEM_ID = 7_400_000_000_000_000_002


def data_dir(tmp_path: Path, system_id: int | None = SYSTEM_ID, version: str = "15") -> Path:
    path = tmp_path / "pgdata"
    (path / "global").mkdir(parents=True, exist_ok=True)
    if system_id is not None:
        (path / "global" / "pg_control").write_bytes(system_id.to_bytes(8, "little") + bytes(248))
    (path / "PG_VERSION").write_text(version + "\n")
    return path


def with_identity(store: MemoryStore) -> MemoryStore:
    store.put(LAYOUT.identity_key, encode_identity(ArchiveIdentity(SYSTEM_ID, 15, SEG_SIZE)), {}, {})
    return store


def run(
    store: MemoryStore,
    pgdata: Path,
    *,
    mode: str = "auto",
    credentials: Callable[[], str | None] = lambda: "env",
    switch_wal: Callable[[], str] | None = None,
    wait_timeout: float = 5.0,
    sleep: Callable[[float], None] = lambda _s: None,
) -> CheckReport:
    return run_checks(
        store, LAYOUT, settings_detail="bucket 'b'", credentials=credentials, conditional_mode=mode,
        data_dir=pgdata, switch_wal=switch_wal, wait_timeout=wait_timeout, token="t0k3n", sleep=sleep,
    )  # fmt: skip


def statuses(report: CheckReport) -> dict[str, str]:
    return {item.name: item.status for item in report.items}


def test_a_working_setup_passes_every_check(tmp_path: Path) -> None:
    store = with_identity(MemoryStore())
    report = run(store, data_dir(tmp_path))
    assert [(item.name, item.status, item.detail) for item in report.items] == [
        ("settings", "OK", "bucket 'b'"),
        ("credentials", "OK", "found (env)"),
        ("bucket reachable", "OK", "listed 'p/history/': 0 history files"),
        ("conditional writes", "OK", "a second create of one key is refused (If-None-Match)"),
        ("tags on upload", "OK", "object tags are kept"),
        (
            "checksum header",
            "OK",
            "x-amz-checksum-sha256 checked: the store refuses a body damaged in transit",
        ),
        ("conditional multipart completion", "OK", "a second completion of one key is refused (If-None-Match)"),
        ("write with tags (s3:PutObject)", "OK", f"created '{PROBE}' with tags"),
        ("read (s3:GetObject)", "OK", "body and metadata read back"),
        ("head (s3:GetObject)", "OK", "size and metadata"),
        ("list (s3:ListBucket)", "OK", "the probe object is listed"),
        ("read tags (s3:GetObjectTagging)", "OK", "tags read back"),
        ("archive identity", "OK", f"system id {SYSTEM_ID}, PostgreSQL 15, 16 MiB segments"),
        ("local cluster", "OK", f"system id {SYSTEM_ID} matches the archive"),
        ("archiving", "SKIP", "give --dsn to force a WAL switch and watch the segment arrive"),
    ]
    assert report.failed == () and report.to_json()["ok"] is True
    assert PROBE in store.objects, "the probe object stays: walbucket needs no delete permission"


@pytest.mark.parametrize(
    ("mode", "status", "hint"),
    [
        ("auto", "WARN", "push falls back to HEAD-then-PUT, which a racing writer (split brain) can defeat"),
        ("off", "WARN", "push falls back to HEAD-then-PUT, which a racing writer (split brain) can defeat"),
        ("required", "FAIL", 'use an endpoint that honours If-None-Match, or conditional_writes = "auto"'),
    ],
)
def test_an_endpoint_that_ignores_conditional_writes(tmp_path: Path, mode: str, status: str, hint: str) -> None:
    report = run(with_identity(MemoryStore(honours_conditions=False)), data_dir(tmp_path), mode=mode)
    [item] = [item for item in report.items if item.name == "conditional writes"]
    assert (item.status, item.detail, item.hint) == (status, "ignored: a second create of one key overwrote it", hint)


def test_without_credentials_nothing_is_asked_of_the_store(tmp_path: Path) -> None:
    store = MemoryStore()
    report = run(store, data_dir(tmp_path), credentials=lambda: None)
    assert statuses(report)["credentials"] == "FAIL"
    assert {statuses(report)[name] for name in ("bucket reachable", "conditional writes", "archive identity")} == {
        "SKIP"
    }
    assert store.requests == []


def test_a_profile_that_does_not_exist_is_a_credentials_failure(tmp_path: Path) -> None:
    def missing_profile() -> str:
        raise ConfigError("cannot load AWS credentials: The config profile (x) could not be found")

    report = run(MemoryStore(), data_dir(tmp_path), credentials=missing_profile)
    [item] = [item for item in report.items if item.name == "credentials"]
    assert (item.status, item.hint) == (
        "FAIL",
        "cannot load AWS credentials: The config profile (x) could not be found",
    )


class _ReadOnlyStore(MemoryStore):
    def create(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> bool:
        raise StoreError(f"access denied (AccessDenied) on '{key}'", hint="check the policy")


def test_a_refused_write_fails_and_skips_what_needs_the_probe_but_not_the_rest(tmp_path: Path) -> None:
    report = run(with_identity(_ReadOnlyStore()), data_dir(tmp_path))
    items = {item.name: item for item in report.items}
    write = items["write with tags (s3:PutObject)"]
    assert (write.status, write.detail, write.hint) == ("FAIL", f"access denied (AccessDenied) on '{PROBE}'",
                                                        "check the policy")  # fmt: skip
    assert {items[name].status for name in ("read (s3:GetObject)", "head (s3:GetObject)", "list (s3:ListBucket)",
                                            "read tags (s3:GetObjectTagging)")} == {"SKIP"}  # fmt: skip
    assert len(report.items) == 15
    assert items["conditional writes"].status == "FAIL"
    assert items["archive identity"].status == "OK" and items["local cluster"].status == "OK"
    assert [item.name for item in report.failed] == ["conditional writes", "write with tags (s3:PutObject)"]


class _DownStore(MemoryStore):
    def list(self, prefix: str):  # type: ignore[no-untyped-def]
        raise StoreUnavailable("storage unavailable for 'p/history/' after retrying for 10s: ConnectionError")


def test_an_unreachable_store_fails_once_and_skips_the_rest(tmp_path: Path) -> None:
    report = run(_DownStore(), data_dir(tmp_path))
    got = statuses(report)
    assert got["bucket reachable"] == "FAIL"
    assert got["write with tags (s3:PutObject)"] == "SKIP" and got["archive identity"] == "SKIP"
    assert len(report.failed) == 1


@pytest.mark.parametrize(
    ("system_id", "version", "status", "detail"),
    [
        (OTHER_SYSTEM_ID, "15", "FAIL", f"system id {OTHER_SYSTEM_ID} differs from the archive's {SYSTEM_ID}"),
        (SYSTEM_ID, "16", "FAIL", "PostgreSQL 16 differs from the archive's 15"),
        (None, "15", "SKIP", "no readable global/pg_control in '{pgdata}' (give --pgdata)"),
    ],
)
def test_the_local_cluster_against_the_archive_identity(
    tmp_path: Path, system_id: int | None, version: str, status: str, detail: str
) -> None:
    pgdata = data_dir(tmp_path, system_id, version)
    [item] = [item for item in run(with_identity(MemoryStore()), pgdata).items if item.name == "local cluster"]
    assert (item.status, item.detail) == (status, detail.format(pgdata=pgdata))


def test_an_archive_without_identity_is_fine_for_a_new_setup(tmp_path: Path) -> None:
    report = run(MemoryStore(), data_dir(tmp_path))
    items = {item.name: item for item in report.items}
    assert items["archive identity"].detail == "none yet: the first push of a segment creates it"
    assert items["local cluster"].detail == f"system id {SYSTEM_ID}; the archive has no identity to compare with"
    assert report.failed == ()


class _Clock:
    """check's clock (time.monotonic) that only its sleep moves on: waiting out a timeout takes no time."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_archiving_waits_for_the_switched_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(check_module, "time", clock)  # check.py's own reference to the time module, no other's
    store = with_identity(MemoryStore())
    name = "000000010000000000000005"
    arrived = run(store, data_dir(tmp_path), switch_wal=lambda: name, sleep=clock.sleep)
    assert statuses(arrived)["archiving"] == "FAIL"  # nothing archives in this test: it never arrives
    [item] = [item for item in arrived.items if item.name == "archiving"]
    assert item.detail == f"'{name}' did not arrive in the archive within 5s"

    store.put(f"p/wal/0000000100000000/{name}", b"x", {}, {})
    [item] = [
        item
        for item in run(store, data_dir(tmp_path), switch_wal=lambda: name, sleep=clock.sleep).items
        if item.name == "archiving"
    ]
    assert item.status == "OK" and item.detail.startswith(f"'{name}' arrived in the archive after ")


def test_a_failing_wal_switch_is_a_failure(tmp_path: Path) -> None:
    def refuse() -> str:
        raise ValueError('psql: error: connection to server on socket "/x" failed')

    report = run(with_identity(MemoryStore()), data_dir(tmp_path), switch_wal=refuse)
    [item] = [item for item in report.items if item.name == "archiving"]
    assert (item.status, item.detail) == (
        "FAIL", 'cannot force a WAL switch: psql: error: connection to server on socket "/x" failed'
    )  # fmt: skip


def test_conditional_writes_honoured_but_switched_off_is_a_warning(tmp_path: Path) -> None:
    report = run(with_identity(MemoryStore()), data_dir(tmp_path), mode="off")
    [item] = [item for item in report.items if item.name == "conditional writes"]
    assert (item.status, item.hint) == (
        "WARN", 'set conditional_writes = "required" (or "auto") so that pushes never overwrite'
    )  # fmt: skip
    assert report.failed == ()


@pytest.mark.parametrize(
    ("honours", "tags_mode", "expected"),
    [
        (StoreFeatures(tags=False), "auto", [("tags on upload", "WARN"), ("write (s3:PutObject)", "OK")]),
        (StoreFeatures(tags=False), "on", [("tags on upload", "FAIL"), ("write with tags (s3:PutObject)", "OK")]),
        (StoreFeatures(checksum="md5", checksum_checked=False), "auto", [("checksum header", "WARN")]),
        (StoreFeatures(checksum="none", checksum_checked=False), "auto", [("checksum header", "WARN")]),
        (StoreFeatures(conditional_multipart=False), "auto", [("conditional multipart completion", "WARN")]),
    ],
)
def test_what_a_store_does_not_honour_is_reported_with_what_it_means(
    tmp_path: Path, honours: StoreFeatures, tags_mode: str, expected: list[tuple[str, str]]
) -> None:
    store = with_identity(MemoryStore(honours=honours))
    report = run_checks(
        store, LAYOUT, settings_detail="bucket 'b'", credentials=lambda: "env", conditional_mode="auto",
        data_dir=data_dir(tmp_path), token="t0k3n", tags_mode=tags_mode,
    )  # fmt: skip
    got = {item.name: item.status for item in report.items}
    assert [(name, got.get(name)) for name, _ in expected] == expected
    assert ("read tags (s3:GetObjectTagging)" in got) is (honours.tags or tags_mode == "on")
