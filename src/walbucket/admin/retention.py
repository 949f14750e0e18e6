"""Compare the bucket's lifecycle rules with the base backups recorded in the archive. Pure.

A base backup needs every WAL segment from the one its backup history file names
(``TTTTTTTTLLLLLLLLSSSSSSSS.OOOOOOOO.backup``: the first 24 characters) on. Lifecycle rules expire objects by age,
knowing nothing of backups (docs/retention.md), so ``walbucket verify`` compares expiry times, object by object, and
warns when:

- ``backup-wal-missing``: the first segment a recorded backup needs is not in the archive at all: that backup cannot
  be restored (its WAL expired before its backup history file, or was never archived);
- ``backup-outlives-wal``: the first segment the oldest backup needs expires before that backup's history file (it
  was uploaded a day earlier: the backup crossed midnight UTC, or the archiver lagged; or backup history files are
  kept longer, or forever), so for a while the archive records a backup that cannot be restored;
- ``backup-wal-expiring``: the WAL of the newest backup recorded expires within ``margin`` or already has, so no
  backup recorded stays restorable (base backups stopped);
- ``backup-record-expiring``: the newest backup history file expires within ``margin`` (or has), before its WAL:
  then the archive records no backup, and verify has nothing left to compare the WAL rule with.

The oldest backup losing its WAL together with its backup history file is retention working, not a finding: a
backup whose history file is itself due for expiry (other than the newest) is left out, since S3 removes the two at
different hours of that day.

Expiry follows S3: an object's upload time plus the rule's days, rounded up to the next midnight UTC; objects go
some time after that, never before. Of several enabled rules that can match a key, the one with the fewest days
acts. A rule's prefix is matched against the exact keys (from KeyLayout); a tag condition counts unless walbucket's
objects cannot carry that tag value (``walbucket-kind`` of another kind, a tag walbucket never sets); size
conditions always count. Only ``Expiration`` in ``Days`` is understood (not ``Date``, not transitions).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from walbucket.admin.finding import Finding, finding
from walbucket.core.keylayout import TAG_PG_VERSION, TAG_SYSTEM_ID, KeyLayout, object_tags
from walbucket.core.walname import WalKind, WalName, parse_wal_name

__all__ = ["DAY", "MARGIN", "ExpiringRule", "expiring_rule", "expiry_time", "retention_findings"]

DAY = 86_400.0
MARGIN = DAY  # warn this long before the newest backup's WAL (or its history file) becomes eligible for expiry
_NEVER = math.inf
# Tags walbucket sets to the same value on every object of an archive; their values are not known here.
_ANY_VALUE_TAGS = frozenset({TAG_SYSTEM_ID, TAG_PG_VERSION})


@dataclass(frozen=True, slots=True)
class ExpiringRule:
    rule_id: str
    days: int

    @property
    def named(self) -> str:
        return f"rule '{self.rule_id}'" if self.rule_id else "a rule without an ID"

    @property
    def period(self) -> str:
        return f"{self.days} day{'s' * (self.days != 1)}"


def expiry_time(uploaded: float, days: int) -> float:
    """Return when S3 makes an object uploaded at ``uploaded`` eligible for expiry after ``days`` days."""
    return math.ceil((uploaded + days * DAY) / DAY) * DAY


def expiring_rule(rules: Iterable[Mapping[str, Any]], key: str, tags: Mapping[str, str]) -> ExpiringRule | None:
    """Return the enabled rule that expires the object ``key`` (tagged ``tags``) soonest, or None."""
    found: ExpiringRule | None = None
    for rule in rules:
        days = (rule.get("Expiration") or {}).get("Days")
        if rule.get("Status") != "Enabled" or not isinstance(days, int) or days < 1:
            continue
        prefix, rule_tags = _conditions(rule)
        matches = key.startswith(prefix) and all(_tag_can_match(tag, tags) for tag in rule_tags)
        if matches and (found is None or days < found.days):
            found = ExpiringRule(str(rule.get("ID", "")), days)
    return found


def _conditions(rule: Mapping[str, Any]) -> tuple[str, list[Mapping[str, Any]]]:
    """Return a rule's key prefix and tag conditions, from ``Filter`` or the older top-level ``Prefix``."""
    if "Filter" not in rule:
        return str(rule.get("Prefix") or ""), []
    condition = rule["Filter"] or {}
    if "And" in condition:
        both = condition["And"] or {}
        return str(both.get("Prefix") or ""), list(both.get("Tags") or [])
    return str(condition.get("Prefix") or ""), [condition["Tag"]] if "Tag" in condition else []


def _tag_can_match(tag: Mapping[str, Any], tags: Mapping[str, str]) -> bool:
    name = str(tag.get("Key"))
    if name in tags:
        return tags[name] == tag.get("Value")
    return name in _ANY_VALUE_TAGS


def _date(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _when(t: float, now: float) -> str:
    return f"{'expired' if t <= now else 'expires'} on {_date(t)}"


@dataclass(frozen=True, slots=True)
class _Backup:
    wal: WalName
    taken: float  # upload time of the backup history file: about when the backup ended
    start: WalName  # the first segment it needs
    archived: float | None  # upload time of that segment; None when it is not listed
    wal_rule: ExpiringRule | None  # the rule that expires that segment
    file_rule: ExpiringRule | None  # the rule that expires the backup history file

    @property
    def wal_expiry(self) -> float:
        if self.wal_rule is None or self.archived is None:
            return _NEVER
        return expiry_time(self.archived, self.wal_rule.days)

    @property
    def file_expiry(self) -> float:
        return _NEVER if self.file_rule is None else expiry_time(self.taken, self.file_rule.days)

    @property
    def named(self) -> str:
        return f"({self.wal.name}, taken {_date(self.taken)})"


def retention_findings(
    rules: Sequence[Mapping[str, Any]] | None,
    layout: KeyLayout,
    backups: Iterable[tuple[WalName, float | None]],
    segment_times: Mapping[str, float],
    now: float,
    *,
    margin: float = MARGIN,
) -> list[Finding]:
    """Warn when the lifecycle ``rules`` expire WAL that the ``backups`` recorded (name, upload time) need.

    ``rules`` None: the bucket has none, or they could not be read. ``segment_times`` maps the names of the segments
    listed to their upload times; a backup whose first segment is not among them cannot be restored, whatever the
    rules.
    """
    recorded = sorted(
        (_backup(wal, taken, segment_times, rules or (), layout) for wal, taken in backups if taken is not None),
        key=lambda backup: (backup.taken, backup.wal.name),
    )
    if not recorded:
        return []
    newest = recorded[-1]
    live = [b for b in recorded if b is newest or b.file_expiry > now]
    found: list[Finding] = []
    gone = [b for b in live if b.archived is None]
    if gone:
        found.append(_missing(gone, recorded))
    listed = [b for b in live if b.archived is not None]
    if listed and listed[0].wal_expiry < listed[0].file_expiry:
        role = _role(listed[0], recorded) if listed[0] is recorded[0] else "the oldest backup recorded with its WAL"
        found.append(_outlives(listed[0], role, now))
    # WAL that never expires needs no warning, not even when the last backup history file is about to go
    if newest.wal_expiry < _NEVER and min(newest.wal_expiry, newest.file_expiry) <= now + margin:
        found.append(_expiring(newest, len(recorded), now))
    return found


def _missing(gone: list[_Backup], recorded: list[_Backup]) -> Finding:
    last = gone[-1]
    if len(gone) > 1:
        message = (f"{len(gone)} backups recorded need WAL that is not in the archive, so they cannot be restored: "
                   f"the newest of them {last.named} needs WAL from {last.start.name}")  # fmt: skip
    else:
        message = (f"{_role(last, recorded)} {last.named} needs WAL from {last.start.name}, which is not in the "
                   "archive: it cannot be restored")  # fmt: skip
    return finding("backup-wal-missing", message, [b.wal.name for b in gone])


def _role(backup: _Backup, recorded: list[_Backup]) -> str:
    if len(recorded) == 1:
        return "the only backup recorded"
    if backup is recorded[0]:
        return "the oldest backup recorded"
    return "the newest backup recorded" if backup is recorded[-1] else "a backup recorded"


def _outlives(oldest: _Backup, role: str, now: float) -> Finding:
    assert oldest.wal_rule is not None
    wal = f"{oldest.wal_rule.named}, {oldest.wal_rule.period}"
    if oldest.file_rule is None:
        file = "no rule expires its backup history file"
    else:
        file = (f"its backup history file stays until {_date(oldest.file_expiry)} ({oldest.file_rule.named}, "
                f"{oldest.file_rule.period})")  # fmt: skip
    message = (f"{role} {oldest.named} needs WAL from {oldest.start.name}, which "
               f"{_when(oldest.wal_expiry, now)} ({wal}), but {file}")  # fmt: skip
    return finding("backup-outlives-wal", message, [oldest.wal.name])


def _expiring(newest: _Backup, count: int, now: float) -> Finding:
    which = "only backup" if count == 1 else f"newest of the {count} backups"
    if newest.wal_expiry <= newest.file_expiry:
        assert newest.wal_rule is not None
        message = (f"the lifecycle expires WAL after {newest.wal_rule.period} ({newest.wal_rule.named}), but the "
                   f"{which} recorded {newest.named} needs WAL from {newest.start.name}, which "
                   f"{_when(newest.wal_expiry, now)}")  # fmt: skip
        return finding("backup-wal-expiring", message, [newest.wal.name])
    assert newest.file_rule is not None
    message = (f"the lifecycle expires backup history files after {newest.file_rule.period} "
               f"({newest.file_rule.named}): the backup history file of the {which} recorded {newest.named} "
               f"{_when(newest.file_expiry, now)}, and with it the archive's last record of a backup")  # fmt: skip
    return finding("backup-record-expiring", message, [newest.wal.name])


def _backup(
    wal: WalName, taken: float, times: Mapping[str, float], rules: Sequence[Mapping[str, Any]], layout: KeyLayout
) -> _Backup:
    start = parse_wal_name(wal.name[:24])  # a backup history file is named after the first segment it needs
    assert wal.kind is WalKind.BACKUP and start is not None
    return _Backup(
        wal, taken, start, times.get(start.name), _rule_for(rules, layout, start), _rule_for(rules, layout, wal)
    )


def _rule_for(rules: Sequence[Mapping[str, Any]], layout: KeyLayout, wal: WalName) -> ExpiringRule | None:
    return expiring_rule(rules, layout.key(wal), object_tags(wal, None, None))
