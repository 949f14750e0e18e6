"""Compare the bucket's lifecycle rules with the base backups recorded in the archive. Pure.

A base backup needs every WAL segment from the one its backup history file names
(``TTTTTTTTLLLLLLLLSSSSSSSS.OOOOOOOO.backup``: the first 24 characters) on. Lifecycle rules expire objects by age,
knowing nothing of backups (docs/retention.md), so ``walbucket verify`` warns when:

- ``backup-outlives-wal``: backup history files are kept longer than segments (a longer rule, or none), so the
  archive goes on recording backups whose WAL has expired; named by the oldest backup recorded;
- ``backup-wal-expiring``: the WAL of the newest backup recorded expires within ``margin`` or already has, so no
  backup recorded stays restorable (base backups stopped). The oldest backup losing its WAL together with its
  backup history file is retention working, not a finding.

Expiry follows S3: an object's upload time plus the rule's days, rounded up to the next midnight UTC; objects go
some time after that, never before. Of several enabled rules that can match a key, the one with the fewest days
acts. A rule's prefix is matched against the exact keys (from KeyLayout); a tag condition counts unless walbucket's
objects cannot carry that tag value (``walbucket-kind`` of another kind, a tag walbucket never sets); size
conditions always count. Only ``Expiration`` in ``Days`` is understood.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .findings import finding
from .inspect import Finding
from .keylayout import TAG_PG_VERSION, TAG_SYSTEM_ID, KeyLayout, object_tags
from .walname import WalKind, WalName

__all__ = ["DAY", "MARGIN", "ExpiringRule", "expiring_rule", "expiry_time", "retention_findings"]

DAY = 86_400.0
MARGIN = DAY  # warn this long before WAL a backup needs becomes eligible for expiry
# Tags walbucket sets to the same value on every object of an archive; their values are not known here.
_ANY_VALUE_TAGS = frozenset({TAG_SYSTEM_ID, TAG_PG_VERSION})


@dataclass(frozen=True, slots=True)
class ExpiringRule:
    rule_id: str
    days: int

    @property
    def named(self) -> str:
        return f"rule '{self.rule_id}'" if self.rule_id else "a rule without an ID"


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


@dataclass(frozen=True, slots=True)
class _Backup:
    wal: WalName
    taken: float  # upload time of the backup history file: about when the backup ended
    start: WalName  # the first segment it needs
    archived: float  # upload time of that segment when listed, else ``taken``

    def expires(self, rule: ExpiringRule) -> float:
        return expiry_time(self.archived, rule.days)

    def needs(self, rule: ExpiringRule, now: float) -> str:
        verb = "expired" if self.expires(rule) <= now else "expires"
        return f"({self.wal.name}, taken {_date(self.taken)}) needs WAL from {self.start.name}, which {verb} on " + (
            _date(self.expires(rule))
        )


def retention_findings(
    rules: Sequence[Mapping[str, Any]] | None,
    layout: KeyLayout,
    backups: Iterable[tuple[WalName, float | None]],
    now: float,
    *,
    segment_times: Mapping[str, float | None] | None = None,
    margin: float = MARGIN,
) -> list[Finding]:
    """Warn when the lifecycle ``rules`` expire WAL that the ``backups`` recorded (name, upload time) need.

    ``segment_times`` maps segment names to their upload times, where listed; no rules or no backups: no finding.
    """
    times = segment_times or {}
    recorded = sorted((_backup(wal, taken, times) for wal, taken in backups if taken is not None), key=_taken)
    if not rules or not recorded:
        return []
    found: list[Finding] = []
    oldest, newest = recorded[0], recorded[-1]
    wal_rule = _rule_for(rules, layout, oldest.start)
    if wal_rule is not None:
        kept = _rule_for(rules, layout, oldest.wal)
        if kept is None or kept.days > wal_rule.days:
            files = f"keeps backup history files for {kept.days} days ({kept.named})" if kept else (
                "does not expire backup history files"
            )  # fmt: skip
            found.append(finding("backup-outlives-wal", f"the lifecycle expires WAL after {wal_rule.days} days "
                                 f"({wal_rule.named}) but {files}: the oldest backup recorded "
                                 f"{oldest.needs(wal_rule, now)}", [oldest.wal.name]))  # fmt: skip
    newest_rule = _rule_for(rules, layout, newest.start)
    if newest_rule is not None and newest.expires(newest_rule) <= now + margin:
        which = "only backup" if len(recorded) == 1 else f"newest of the {len(recorded)} backups"
        found.append(finding("backup-wal-expiring", f"the lifecycle expires WAL after {newest_rule.days} days "
                             f"({newest_rule.named}), but the {which} recorded {newest.needs(newest_rule, now)}",
                             [newest.wal.name]))  # fmt: skip
    return found


def _backup(wal: WalName, taken: float, times: Mapping[str, float | None]) -> _Backup:
    assert wal.kind is WalKind.BACKUP and wal.segment is not None
    start = WalName(wal.name[:24], WalKind.SEGMENT, wal.timeline, wal.segment)
    archived = times.get(start.name)
    return _Backup(wal, taken, start, taken if archived is None else min(archived, taken))


def _taken(backup: _Backup) -> tuple[float, str]:
    return backup.taken, backup.wal.name


def _rule_for(rules: Sequence[Mapping[str, Any]], layout: KeyLayout, wal: WalName) -> ExpiringRule | None:
    return expiring_rule(rules, layout.key(wal), object_tags(wal, None, None))
