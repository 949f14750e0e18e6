"""The lifecycle rules against the backups recorded: which rule expires a key, when, and what verify warns about.

Pure tables (rules, backups, now -> findings), then verify on MemoryStore: the one extra request, and a store that
refuses to show its rules.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from walbucket.admin.lifecycle import RetentionPolicy, lifecycle_configuration
from walbucket.admin.retention import DAY, ExpiringRule, expiring_rule, expiry_time, retention_findings
from walbucket.admin.verify import verify
from walbucket.core.errors import StoreError, StoreUnavailable
from walbucket.core.identity import ArchiveIdentity, encode_identity
from walbucket.core.keylayout import TAG_KIND, KeyLayout, object_metadata, object_tags
from walbucket.core.walname import WalName, parse_wal_name
from walbucket.store.memory import MemoryStore
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


def at(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc).timestamp()


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
    assert expiry_time(at(uploaded), days) == at(expires)


def policy(**days: int) -> list[dict[str, Any]]:
    """Rules for ``days``; backup history files kept as long as WAL unless given (the default, a day less, is tested
    on its own)."""
    if "wal_days" in days:
        days.setdefault("backup_days", days["wal_days"])
    return list(lifecycle_configuration(KeyLayout("p"), RetentionPolicy(**days))["Rules"])


NEWER_START = "000000010000000000000009"
N0 = T0 + 7 * DAY  # NEWER taken 2024-05-08 10:30
LISTED = {START: T0 - 600, NEWER_START: N0 - 600}  # each first segment uploaded 10 minutes before its .backup file
TAKEN = f"({BACKUP}, taken 2024-05-01 10:30 UTC)"
NEWER_TAKEN = f"({NEWER}, taken 2024-05-08 10:30 UTC)"
SEGMENT_RULE = "rule 'walbucket-segment:p'"

OUTLIVES_14_30 = (
    f"the oldest backup recorded {TAKEN} needs WAL from {START}, which expires on 2024-05-16 00:00 UTC "
    f"({SEGMENT_RULE}, 14 days), but its backup history file stays until 2024-06-01 00:00 UTC "
    "(rule 'walbucket-backup:p', 30 days)"
)
NEVER = (
    f"the oldest backup recorded {TAKEN} needs WAL from {START}, which expired on 2024-05-16 00:00 UTC "
    f"({SEGMENT_RULE}, 14 days), but no rule expires its backup history file"
)
NEVER_NEXT = (
    f"the oldest backup recorded with its WAL {NEWER_TAKEN} needs WAL from {NEWER_START}, which expires on "
    f"2024-05-23 00:00 UTC ({SEGMENT_RULE}, 14 days), but no rule expires its backup history file"
)
ONLY = (
    f"the lifecycle expires WAL after 14 days ({SEGMENT_RULE}), but the only backup recorded {TAKEN} needs WAL "
    f"from {START}, which expires on 2024-05-16 00:00 UTC"
)
NEWEST = (
    f"the lifecycle expires WAL after 14 days ({SEGMENT_RULE}), but the newest of the 2 backups recorded "
    f"{NEWER_TAKEN} needs WAL from {NEWER_START}, which expired on 2024-05-23 00:00 UTC"
)
RECORD_ONLY = (
    "the lifecycle expires backup history files after 7 days (rule 'walbucket-backup:p'): the backup history file "
    f"of the only backup recorded {TAKEN} expires on 2024-05-09 00:00 UTC, and with it the archive's last record of "
    "a backup"
)
RECORD_NEWEST = (
    "the lifecycle expires backup history files after 7 days (rule 'walbucket-backup:p'): the backup history file "
    f"of the newest of the 2 backups recorded {NEWER_TAKEN} expired on 2024-05-16 00:00 UTC, and with it the "
    "archive's last record of a backup"
)
MISSING = (
    f"the oldest backup recorded {TAKEN} needs WAL from {START}, which is not in the archive: it cannot be restored"
)
MISSING_BOTH = (
    f"2 backups recorded need WAL that is not in the archive, so they cannot be restored: the newest of them "
    f"{NEWER_TAKEN} needs WAL from {NEWER_START}"
)
BOTH = [(BACKUP, T0), (NEWER, N0)]
NEWER_ONLY_LISTED = {NEWER_START: N0 - 600}
ONLY_WAL_RULE = [rule(14, rule_id="walbucket-segment:p", Filter={"And": {"Prefix": "p/wal/", "Tags": []}})]


@pytest.mark.parametrize(
    ("rules", "backups", "segments", "now", "expected"),
    [
        pytest.param(None, [(BACKUP, T0)], LISTED, T0 + 20 * DAY, [], id="no-rules"),
        pytest.param([], [(BACKUP, T0)], LISTED, T0 + 20 * DAY, [], id="empty-rules"),
        pytest.param(policy(wal_days=14), [], LISTED, T0 + 20 * DAY, [], id="no-backups"),
        pytest.param(policy(wal_days=14), [(BACKUP, None)], {}, T0 + 20 * DAY, [], id="backup-without-a-time"),
        pytest.param([rule(Filter={"Prefix": "p/backup/"})], [(BACKUP, T0)], LISTED, T0 + 20 * DAY, [],
                     id="wal-never-expires"),
        # equal days, segment and .backup file uploaded the same day: the oldest backup retires with its WAL
        pytest.param(policy(wal_days=14), BOTH, LISTED, T0 + 14.5 * DAY, [], id="retires-together"),
        pytest.param(policy(wal_days=14), BOTH, NEWER_ONLY_LISTED, T0 + 15 * DAY, [],
                     id="segment-gone-first-on-the-day-both-expire"),
        pytest.param(policy(wal_days=14), [(BACKUP, T0)], LISTED, T0 + 13 * DAY, [], id="before-the-margin"),
        pytest.param(policy(wal_days=14), [(BACKUP, T0)], LISTED, T0 + 13.6 * DAY,
                     [("backup-wal-expiring", ONLY, BACKUP)], id="only-backup-wal-expiring"),
        pytest.param(policy(wal_days=14), [(NEWER, N0), (BACKUP, T0)], LISTED, T0 + 30 * DAY,
                     [("backup-wal-expiring", NEWEST, NEWER)], id="newest-backup-wal-expired"),
        # backup history files expire first: warn before the last one goes, as verify then has nothing to compare
        pytest.param(policy(wal_days=14, backup_days=7), [(BACKUP, T0)], LISTED, T0 + 6.6 * DAY,
                     [("backup-record-expiring", RECORD_ONLY, BACKUP)], id="only-record-expiring"),
        pytest.param(policy(wal_days=14, backup_days=7), [(BACKUP, T0)], LISTED, T0 + 6 * DAY, [],
                     id="record-before-the-margin"),
        pytest.param(policy(wal_days=14, backup_days=7), BOTH, LISTED, T0 + 15.5 * DAY,
                     [("backup-record-expiring", RECORD_NEWEST, NEWER)], id="newest-record-expired"),
        # backup history files kept longer than WAL: a configuration problem, whenever it will bite
        pytest.param(policy(wal_days=14, backup_days=30), BOTH, LISTED, T0 + DAY,
                     [("backup-outlives-wal", OUTLIVES_14_30, BACKUP)], id="backup-days-longer"),
        pytest.param(ONLY_WAL_RULE, BOTH, LISTED, T0 + 16 * DAY, [("backup-outlives-wal", NEVER, BACKUP)],
                     id="backup-never-expires-segment-still-listed"),
        pytest.param(ONLY_WAL_RULE, BOTH, NEWER_ONLY_LISTED, T0 + 16 * DAY,
                     [("backup-wal-missing", MISSING, BACKUP), ("backup-outlives-wal", NEVER_NEXT, NEWER)],
                     id="backup-never-expires-segment-gone"),
        # the first segment is not listed: that backup cannot be restored, whatever the rules
        pytest.param(policy(wal_days=14), BOTH, NEWER_ONLY_LISTED, T0 + DAY, [("backup-wal-missing", MISSING, BACKUP)],
                     id="oldest-wal-missing"),
        pytest.param(None, BOTH, NEWER_ONLY_LISTED, T0 + DAY, [("backup-wal-missing", MISSING, BACKUP)],
                     id="oldest-wal-missing-no-rules"),
        pytest.param(None, BOTH, {}, T0 + DAY, [("backup-wal-missing", MISSING_BOTH, BACKUP, NEWER)],
                     id="all-wal-missing"),
    ],
)  # fmt: skip
def test_retention_findings(
    rules: list[dict[str, Any]] | None,
    backups: list[tuple[str, float | None]],
    segments: dict[str, float],
    now: float,
    expected: list[tuple[str, ...]],
) -> None:
    found = retention_findings(rules, KeyLayout("p"), [(wal(name), taken) for name, taken in backups], segments, now)
    assert [(f.code, f.message, *f.objects) for f in found] == expected
    assert {f.severity for f in found} <= {"warning"}


@pytest.mark.parametrize(
    ("segment", "taken", "days", "expected"),
    [
        # equal days, but the backup crossed midnight UTC: its WAL expires a day before its backup history file
        ("2024-04-30 23:50", "2024-05-01 00:20", {}, ("2024-05-15 00:00", "2024-05-16 00:00")),
        ("2024-05-01 08:00", "2024-05-02 09:00", {"backup_days": 14}, ("2024-05-16 00:00", "2024-05-17 00:00")),
        # the archiver lagged: the first segment arrived a day before the backup history file
        ("2024-05-01 22:00", "2024-05-02 01:00", {"backup_days": 14}, ("2024-05-16 00:00", "2024-05-17 00:00")),
    ],
)
def test_wal_uploaded_a_day_before_its_backup_history_file_expires_first_even_with_equal_days(
    segment: str, taken: str, days: dict[str, int], expected: tuple[str, str]
) -> None:
    wal_expiry, file_expiry = expected
    rules = policy(wal_days=14, **days)
    [found] = retention_findings(rules, KeyLayout("p"), [(wal(BACKUP), at(taken))], {START: at(segment)}, at(taken))
    assert (found.code, found.objects) == ("backup-outlives-wal", (BACKUP,))
    assert found.message == (
        f"the only backup recorded ({BACKUP}, taken {taken} UTC) needs WAL from {START}, which expires on "
        f"{wal_expiry} UTC ({SEGMENT_RULE}, 14 days), but its backup history file stays until {file_expiry} UTC "
        "(rule 'walbucket-backup:p', 14 days)"
    )
    # a backup history file that expires a day before the WAL leaves no such window: walbucket's default rules
    shorter = policy(wal_days=14, backup_days=13)
    default = list(lifecycle_configuration(KeyLayout("p"), RetentionPolicy(wal_days=14))["Rules"])
    for rules in (shorter, default):
        assert (
            retention_findings(rules, KeyLayout("p"), [(wal(BACKUP), at(taken))], {START: at(segment)}, at(taken)) == []
        )


@pytest.mark.parametrize("prefix", ["", "prod/orders"])
def test_walbuckets_own_rules_are_matched_with_and_without_a_prefix(prefix: str) -> None:
    layout = KeyLayout(prefix)
    rules = list(lifecycle_configuration(layout, RetentionPolicy(wal_days=3, backup_days=5))["Rules"])
    [found] = retention_findings(rules, layout, [(wal(BACKUP), T0)], {START: T0}, T0)
    suffix = f":{prefix}" if prefix else ""
    assert found.code == "backup-outlives-wal"
    assert found.message.endswith(
        f"2024-05-05 00:00 UTC (rule 'walbucket-segment{suffix}', 3 days), but its backup history file stays until "
        f"2024-05-07 00:00 UTC (rule 'walbucket-backup{suffix}', 5 days)"
    )
    other = KeyLayout("elsewhere")  # another archive's rules in the same bucket
    assert retention_findings(rules, other, [(wal(BACKUP), T0)], {START: T0}, T0 + 30 * DAY) == []


def test_the_wal_a_backup_needs_expires_with_its_first_segment() -> None:
    rules = policy(wal_days=14)
    found = retention_findings(rules, KeyLayout("p"), [(wal(BACKUP), T0)], {START: T0 - DAY}, T0 + 12.6 * DAY)
    assert [(f.code, f.message.split(", which ")[1][:34]) for f in found] == [
        ("backup-outlives-wal", "expires on 2024-05-15 00:00 UTC (r"),
        ("backup-wal-expiring", "expires on 2024-05-15 00:00 UTC"),
    ]
    later = {START: T0 + DAY}  # listed as newer than the backup file (re-uploaded): it expires after the file
    assert retention_findings(rules, KeyLayout("p"), [(wal(BACKUP), T0)], later, T0 + 12.6 * DAY) == []


# --- verify on MemoryStore ----------------------------------------------------------------------------------------

LAYOUT = KeyLayout("p")


def archive_with(names: list[str], uploaded: float = T0) -> MemoryStore:
    """An archive of ``names``, each uploaded a minute after the one before, from ``uploaded`` on."""
    store = MemoryStore()
    store.put(LAYOUT.identity_key, encode_identity(ArchiveIdentity(SYSTEM_ID, 15, SEG_SIZE)), {}, {})
    for minute, name in enumerate(names):
        parsed = wal(name)
        size = SEG_SIZE if parsed.is_wal_data else 1
        store.put(LAYOUT.key(parsed), b"x", object_metadata("0" * 64, size, "none", SYSTEM_ID),
                  object_tags(parsed, SYSTEM_ID, 15))  # fmt: skip
        store.objects[LAYOUT.key(parsed)].modified = uploaded + 60 * minute
    return store


def test_verify_reads_the_rules_only_when_backups_are_recorded(tmp_path: Path) -> None:
    store = archive_with([START])
    store.lifecycle = policy(wal_days=1)
    assert verify(store, LAYOUT, work_dir=tmp_path, now=T0).findings == ()
    assert ("lifecycle_rules", "") not in store.requests


def test_verify_compares_the_listed_upload_times_as_of_now(tmp_path: Path) -> None:
    store = archive_with([START, "000000010000000000000003", BACKUP])  # uploaded 10:30, 10:31, 10:32
    store.lifecycle = policy(wal_days=1)
    assert verify(store, LAYOUT, work_dir=tmp_path, now=T0).findings == ()
    report = verify(store, LAYOUT, work_dir=tmp_path, now=at("2024-05-02 00:00"))
    assert [(f.code, f.severity, f.objects) for f in report.findings] == [("backup-wal-expiring", "warning", (BACKUP,))]
    assert not report.errors and report.to_json()["ok"] is True
    assert report.findings[0].message == (
        "the lifecycle expires WAL after 1 day (rule 'walbucket-segment:p'), but the only backup recorded "
        f"({BACKUP}, taken 2024-05-01 10:32 UTC) needs WAL from {START}, which expires on 2024-05-03 00:00 UTC"
    )
    assert store.requests.count(("lifecycle_rules", "")) == 2  # one request per verify


def test_verify_warns_of_a_backup_whose_first_segment_is_gone(tmp_path: Path) -> None:
    store = archive_with(["000000010000000000000003", BACKUP])
    found = verify(store, LAYOUT, work_dir=tmp_path, now=T0).findings
    assert [(f.code, f.objects) for f in found] == [("backup-wal-missing", (BACKUP,))]  # no rules in the bucket
    assert found[0].message == (
        f"the only backup recorded ({BACKUP}, taken 2024-05-01 10:31 UTC) needs WAL from {START}, which is not in "
        "the archive: it cannot be restored"
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
    refusing.objects = archive_with([BACKUP]).objects  # what the listing shows is still compared
    assert [f.code for f in verify(refusing, LAYOUT, work_dir=tmp_path).findings] == [
        "lifecycle-unreadable", "backup-wal-missing"
    ]  # fmt: skip
    down = _RefusingStore(StoreUnavailable("storage unavailable"))
    down.objects = refusing.objects
    with pytest.raises(StoreUnavailable):
        verify(down, LAYOUT, work_dir=tmp_path)
