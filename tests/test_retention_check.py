"""The lifecycle rules against the backups recorded: which rule expires a key, when, and what verify warns about.

Pure tables (rules, backups, now -> findings), then verify on MemoryStore: the one extra request, and a store that
refuses to show its rules.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from walbucket.audit import verify
from walbucket.errors import StoreError, StoreUnavailable
from walbucket.identity import ArchiveIdentity, encode_identity
from walbucket.keylayout import TAG_KIND, KeyLayout, object_metadata, object_tags
from walbucket.lifecycle import RetentionPolicy, lifecycle_configuration
from walbucket.retention_check import DAY, ExpiringRule, expiring_rule, expiry_time, retention_findings
from walbucket.store.memory import MemoryStore
from walbucket.walname import WalName, parse_wal_name
from walfactory import SEG_SIZE, SYSTEM_ID

T0 = datetime(2024, 5, 1, 10, 30, tzinfo=timezone.utc).timestamp()
BACKUP = "000000010000000000000002.00000028.backup"
NEWER = "000000010000000000000009.00000028.backup"
START = "000000010000000000000002"
SEGMENT_KEY = "p/wal/0000000100000000/000000010000000000000002"
SEGMENT_TAGS = {TAG_KIND: "segment", "walbucket-timeline": "1"}


def wal(name: str) -> WalName:
    parsed = parse_wal_name(name)
    assert parsed is not None
    return parsed


def rule(days: int | None = 3, status: str = "Enabled", rule_id: str = "r", **where: Any) -> dict[str, Any]:
    """A lifecycle rule; ``where`` is the rule's Filter (or ``Prefix=`` for the older top-level form)."""
    made: dict[str, Any] = {"ID": rule_id, "Status": status}
    if days is not None:
        made["Expiration"] = {"Days": days}
    if "Prefix" in where:
        made["Prefix"] = where.pop("Prefix")
    else:
        made["Filter"] = where.get("Filter", {})
    return made


def tag(key: str, value: str) -> dict[str, str]:
    return {"Key": key, "Value": value}


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        ([], None),
        ([rule(Filter={})], ExpiringRule("r", 3)),
        ([rule(Prefix="")], ExpiringRule("r", 3)),
        ([rule(Prefix="p/wal/")], ExpiringRule("r", 3)),
        ([rule(Filter={"Prefix": "p/wal/"})], ExpiringRule("r", 3)),
        ([rule(Filter={"Prefix": "p/"})], ExpiringRule("r", 3)),
        ([rule(Filter={"Prefix": "p/wal/00000001"})], ExpiringRule("r", 3)),
        ([rule(Filter={"Prefix": "p/wal/00000002"})], None),  # another timeline's directory
        ([rule(Filter={"Prefix": "wal/"})], None),  # the rule of an archive without a prefix
        ([rule(Filter={"Prefix": "p/backup/"})], None),
        ([rule(status="Disabled", Filter={})], None),
        ([rule(days=None, Filter={})], None),  # e.g. only AbortIncompleteMultipartUpload
        ([{"ID": "r", "Status": "Enabled", "Filter": {}, "Expiration": {"Date": "2024-06-01T00:00:00Z"}}], None),
        ([rule(Filter={"And": {"Prefix": "p/wal/", "Tags": [tag(TAG_KIND, "segment")]}})], ExpiringRule("r", 3)),
        ([rule(Filter={"And": {"Prefix": "p/wal/", "Tags": [tag(TAG_KIND, "backup")]}})], None),
        ([rule(Filter={"And": {"Prefix": "q/wal/", "Tags": [tag(TAG_KIND, "segment")]}})], None),
        ([rule(Filter={"Tag": tag(TAG_KIND, "segment")})], ExpiringRule("r", 3)),
        ([rule(Filter={"Tag": tag(TAG_KIND, "partial")})], None),
        ([rule(Filter={"Tag": tag("walbucket-timeline", "1")})], ExpiringRule("r", 3)),
        ([rule(Filter={"Tag": tag("walbucket-timeline", "2")})], None),
        ([rule(Filter={"Tag": tag("walbucket-system-id", "1")})], ExpiringRule("r", 3)),  # value not known here
        ([rule(Filter={"Tag": tag("team", "db")})], None),  # walbucket never sets it
        ([rule(Filter={"ObjectSizeGreaterThan": 1000})], ExpiringRule("r", 3)),  # sizes always count
        ([rule(9, rule_id="long", Filter={}), rule(2, rule_id="short", Prefix="p/wal/")], ExpiringRule("short", 2)),
        ([rule(2, status="Disabled", Filter={}), rule(9, rule_id="on", Filter={})], ExpiringRule("on", 9)),
    ],
)
def test_the_enabled_rule_with_the_fewest_days_that_can_match_the_key_expires_it(
    rules: list[dict[str, Any]], expected: ExpiringRule | None
) -> None:
    assert expiring_rule(rules, SEGMENT_KEY, SEGMENT_TAGS) == expected


@pytest.mark.parametrize(
    ("uploaded", "days", "expires"),
    [
        ("2024-05-01 10:30", 1, "2024-05-03 00:00"),
        ("2024-05-01 10:30", 14, "2024-05-16 00:00"),
        ("2024-05-01 00:00", 1, "2024-05-02 00:00"),
        ("2024-05-31 23:59", 1, "2024-06-02 00:00"),
    ],
)
def test_expiry_is_upload_plus_days_rounded_up_to_midnight_utc(uploaded: str, days: int, expires: str) -> None:
    def at(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc).timestamp()

    assert expiry_time(at(uploaded), days) == at(expires)


def policy(**days: int) -> list[dict[str, Any]]:
    return list(lifecycle_configuration(KeyLayout("p"), RetentionPolicy(**days))["Rules"])


OUTLIVES_14_30 = (
    "the lifecycle expires WAL after 14 days (rule 'walbucket-segment:p') but keeps backup history files for 30 "
    f"days (rule 'walbucket-backup:p'): the oldest backup recorded ({BACKUP}, taken 2024-05-01 10:30 UTC) needs WAL "
    f"from {START}, which expires on 2024-05-16 00:00 UTC"
)
NEVER = (
    "the lifecycle expires WAL after 14 days (rule 'walbucket-segment:p') but does not expire backup history files: "
    f"the oldest backup recorded ({BACKUP}, taken 2024-05-01 10:30 UTC) needs WAL from {START}, which expired on "
    "2024-05-16 00:00 UTC"
)
ONLY = (
    "the lifecycle expires WAL after 14 days (rule 'walbucket-segment:p'), but the only backup recorded "
    f"({BACKUP}, taken 2024-05-01 10:30 UTC) needs WAL from {START}, which expires on 2024-05-16 00:00 UTC"
)
NEWEST = (
    "the lifecycle expires WAL after 14 days (rule 'walbucket-segment:p'), but the newest of the 2 backups recorded "
    f"({NEWER}, taken 2024-05-08 10:30 UTC) needs WAL from 000000010000000000000009, which expired on "
    "2024-05-23 00:00 UTC"
)


@pytest.mark.parametrize(
    ("rules", "backups", "now", "expected"),
    [
        (None, [(BACKUP, T0)], T0 + 20 * DAY, []),
        ([], [(BACKUP, T0)], T0 + 20 * DAY, []),
        (policy(wal_days=14), [], T0 + 20 * DAY, []),
        (policy(wal_days=14), [(BACKUP, None)], T0 + 20 * DAY, []),
        ([rule(Filter={"Prefix": "p/backup/"})], [(BACKUP, T0)], T0 + 20 * DAY, []),  # WAL never expires
        # backup history files expire with the WAL: the oldest backup retires with its WAL, a newer one remains
        (policy(wal_days=14), [(BACKUP, T0), (NEWER, T0 + 7 * DAY)], T0 + 14.5 * DAY, []),
        (policy(wal_days=14), [(BACKUP, T0)], T0 + 13 * DAY, []),  # more than the margin before
        (policy(wal_days=14), [(BACKUP, T0)], T0 + 13.6 * DAY, [("backup-wal-expiring", ONLY, BACKUP)]),
        (policy(wal_days=14, backup_days=7), [(BACKUP, T0)], T0 + 13.6 * DAY, [("backup-wal-expiring", ONLY, BACKUP)]),
        (
            policy(wal_days=14),
            [(NEWER, T0 + 7 * DAY), (BACKUP, T0)],
            T0 + 30 * DAY,
            [("backup-wal-expiring", NEWEST, NEWER)],
        ),
        # backup history files kept longer than WAL: a configuration problem, whenever it will bite
        (
            policy(wal_days=14, backup_days=30),
            [(BACKUP, T0), (NEWER, T0 + 7 * DAY)],
            T0 + DAY,
            [("backup-outlives-wal", OUTLIVES_14_30, BACKUP)],
        ),
        (
            [rule(14, rule_id="walbucket-segment:p", Filter={"And": {"Prefix": "p/wal/", "Tags": []}})],
            [(BACKUP, T0), (NEWER, T0 + 7 * DAY)],
            T0 + 16 * DAY,
            [("backup-outlives-wal", NEVER, BACKUP)],
        ),
    ],
)
def test_retention_findings(
    rules: list[dict[str, Any]] | None,
    backups: list[tuple[str, float | None]],
    now: float,
    expected: list[tuple[str, str, str]],
) -> None:
    found = retention_findings(rules, KeyLayout("p"), [(wal(name), taken) for name, taken in backups], now)
    assert [(f.code, f.message, *f.objects) for f in found] == expected
    assert {f.severity for f in found} <= {"warning"}


@pytest.mark.parametrize("prefix", ["", "prod/orders"])
def test_walbuckets_own_rules_are_matched_with_and_without_a_prefix(prefix: str) -> None:
    layout = KeyLayout(prefix)
    rules = list(lifecycle_configuration(layout, RetentionPolicy(wal_days=3, backup_days=5))["Rules"])
    [found] = retention_findings(rules, layout, [(wal(BACKUP), T0)], T0)
    segment_rule = f"walbucket-segment:{prefix}" if prefix else "walbucket-segment"
    assert found.code == "backup-outlives-wal"
    assert found.message.startswith(f"the lifecycle expires WAL after 3 days (rule '{segment_rule}') but keeps")
    other = KeyLayout("elsewhere")  # another archive's rules in the same bucket
    assert retention_findings(rules, other, [(wal(BACKUP), T0)], T0 + 30 * DAY) == []


def test_the_wal_a_backup_needs_expires_with_its_first_segment_when_that_is_listed() -> None:
    rules = policy(wal_days=14)
    a_day_before = {START: T0 - DAY}
    [found] = retention_findings(
        rules, KeyLayout("p"), [(wal(BACKUP), T0)], T0 + 12.6 * DAY, segment_times=a_day_before
    )
    assert found.message.endswith(f"needs WAL from {START}, which expires on 2024-05-15 00:00 UTC")
    later = {START: T0 + DAY}  # listed as newer than the backup file: the backup's time is the earlier bound
    assert retention_findings(rules, KeyLayout("p"), [(wal(BACKUP), T0)], T0 + 12.6 * DAY, segment_times=later) == []


# --- verify on MemoryStore ----------------------------------------------------------------------------------------

LAYOUT = KeyLayout("p")


def archive_with(names: list[str]) -> MemoryStore:
    store = MemoryStore()
    store.put(LAYOUT.identity_key, encode_identity(ArchiveIdentity(SYSTEM_ID, 15, SEG_SIZE)), {}, {})
    for name in names:
        parsed = wal(name)
        size = SEG_SIZE if parsed.is_wal_data else 1
        store.put(LAYOUT.key(parsed), b"x", object_metadata("0" * 64, size, "none", SYSTEM_ID),
                  object_tags(parsed, SYSTEM_ID, 15))  # fmt: skip
    return store


def test_verify_reads_the_rules_only_when_backups_are_recorded(tmp_path: Path) -> None:
    store = archive_with([START])
    store.lifecycle = policy(wal_days=1)
    assert verify(store, LAYOUT, work_dir=tmp_path, now=T0).findings == ()
    assert ("lifecycle_rules", "") not in store.requests


def test_verify_warns_with_a_time_in_the_future(tmp_path: Path) -> None:
    store = archive_with([START, "000000010000000000000003", BACKUP])
    store.lifecycle = policy(wal_days=1)
    assert verify(store, LAYOUT, work_dir=tmp_path).findings == ()  # objects just written
    report = verify(
        store, LAYOUT, work_dir=tmp_path, now=expiry_time(store.objects[LAYOUT.key(wal(START))].modified, 1)
    )
    assert [(f.code, f.severity, f.objects) for f in report.findings] == [("backup-wal-expiring", "warning", (BACKUP,))]
    assert not report.errors and report.to_json()["ok"] is True
    assert report.findings[0].message.endswith(
        " (rule 'walbucket-segment:p'), but the only backup recorded ("
        f"{BACKUP}, taken " + report.findings[0].message.split("taken ")[1]
    )


class _RefusingStore(MemoryStore):
    def __init__(self, error: StoreError) -> None:
        super().__init__()
        self.error = error

    def lifecycle_rules(self) -> list[dict[str, Any]] | None:
        raise self.error


def test_rules_that_cannot_be_read_are_a_warning_and_an_outage_stops_verify(tmp_path: Path) -> None:
    refusing = _RefusingStore(StoreError("access denied (AccessDenied) on 'lifecycle configuration of bucket b'"))
    refusing.objects = archive_with([START, BACKUP]).objects
    [found] = verify(refusing, LAYOUT, work_dir=tmp_path).findings
    assert (found.code, found.severity) == ("lifecycle-unreadable", "warning")
    assert found.message == (
        "the bucket's lifecycle rules could not be read (access denied (AccessDenied) on 'lifecycle configuration of "
        "bucket b'): WAL expiry was not compared with the backups recorded"
    )
    assert "s3:GetLifecycleConfiguration" in found.hint
    down = _RefusingStore(StoreUnavailable("storage unavailable"))
    down.objects = refusing.objects
    with pytest.raises(StoreUnavailable):
        verify(down, LAYOUT, work_dir=tmp_path)
