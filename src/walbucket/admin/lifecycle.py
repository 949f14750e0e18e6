"""Build the store's lifecycle configuration: expire old WAL by key prefix, never history files or identity.json.

walbucket never deletes anything; retention is the bucket's lifecycle rules (docs/retention.md). Every prefix comes
from :class:`KeyLayout`, and terraform/modules/walbucket-archive renders the same rules with the same ids
(tests/test_terraform.py fails when the two differ). No rule filters on a prefix that holds ``history/`` or
``identity.json``, except the abort-multipart rule, which only removes the parts of uploads that never completed.

Pure: a layout and a policy in, the dict ``put_bucket_lifecycle_configuration`` takes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from walbucket.core.errors import UsageError
from walbucket.core.keylayout import KeyLayout
from walbucket.core.walname import WalKind

__all__ = [
    "MAX_RULE_ID",
    "READABLE_TRANSITION_CLASSES",
    "RULE_ID_PREFIX",
    "RetentionPolicy",
    "lifecycle_configuration",
    "policy_from_options",
    "rule_id",
]

RULE_ID_PREFIX = "walbucket-"
MAX_RULE_ID = 255  # S3's limit on a rule's ID
ABORT_RULE = "abort-multipart"
# restore_command reads objects synchronously: only classes that answer a GET at once. GLACIER and DEEP_ARCHIVE
# need a restore request first, so a transition to them makes WAL unreadable when recovery needs it.
READABLE_TRANSITION_CLASSES = frozenset({"STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"})
_MIN_DAYS_BEFORE_IA = 30  # S3 refuses a transition to STANDARD_IA or ONEZONE_IA earlier than 30 days
_OPTIONAL_DAYS = ("backup_days", "transition_days", "abort_incomplete_multipart_days", "noncurrent_days")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each kind of object lives; the defaults are the Terraform module's for an unversioned bucket.

    On a versioned bucket the module also expires noncurrent versions (``noncurrent_version_days``, 7), which
    ``noncurrent_days`` None leaves out: ``noncurrent_days=7`` matches it there.

    ``backup_days`` None means a day less than ``wal_days`` (at least 1): a ``.backup`` file is uploaded after the
    first segment its backup needs, often on the next UTC day, and must not outlive it (``backup-outlives-wal``).
    ``transition_days`` None means no transition; a transition applies to segments only (partials are rare, backup
    history files tiny). ``abort_incomplete_multipart_days`` and
    ``noncurrent_days`` None mean no such action; ``noncurrent_days`` matters only on a versioned bucket.
    """

    wal_days: int = 14
    partial_days: int = 7
    backup_days: int | None = None
    transition_days: int | None = None
    transition_storage_class: str = "STANDARD_IA"
    abort_incomplete_multipart_days: int | None = 1
    noncurrent_days: int | None = None

    def __post_init__(self) -> None:
        for name in ("wal_days", "partial_days", *_OPTIONAL_DAYS):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"invalid retention '{name}': {value!r} is not a whole number of days, 1 or more")
        if self.transition_days is not None:
            self._check_transition(self.transition_days)

    def _check_transition(self, days: int) -> None:
        storage_class = self.transition_storage_class
        if storage_class not in READABLE_TRANSITION_CLASSES:
            raise UsageError(
                f"invalid transition storage class '{storage_class}'",
                hint=f"use one of {', '.join(sorted(READABLE_TRANSITION_CLASSES))}: restore_command must read WAL "
                "without a restore request",
            )
        if storage_class in {"STANDARD_IA", "ONEZONE_IA"} and days < _MIN_DAYS_BEFORE_IA:
            raise UsageError(f"invalid transition after {days} days: S3 transitions to {storage_class} after 30 days")
        if days >= self.wal_days:
            raise UsageError(
                f"invalid transition after {days} days: segments expire after {self.wal_days} days",
                hint="a transition must come before the expiration",
            )

    @property
    def effective_backup_days(self) -> int:
        return max(self.wal_days - 1, 1) if self.backup_days is None else self.backup_days


def policy_from_options(options: Mapping[str, Any]) -> RetentionPolicy:
    """Build a policy from command-line options: None keeps a default, 0 turns an optional action off."""
    known = {f.name for f in fields(RetentionPolicy)}
    given = {name: value for name, value in options.items() if name in known and value is not None}
    for name in _OPTIONAL_DAYS:
        if given.get(name) == 0:
            given[name] = None
    return RetentionPolicy(**given)


def rule_id(layout: KeyLayout, name: str) -> str:
    """Return the rule's ID; it names the prefix so that several layouts can share one bucket's configuration."""
    rid = f"{RULE_ID_PREFIX}{name}:{layout.prefix}" if layout.prefix else f"{RULE_ID_PREFIX}{name}"
    if len(rid) > MAX_RULE_ID:
        raise UsageError(f"prefix '{layout.prefix}' is too long for a lifecycle rule ID ({MAX_RULE_ID} characters)")
    return rid


def lifecycle_configuration(layout: KeyLayout, policy: RetentionPolicy) -> dict[str, Any]:
    """Return the lifecycle configuration: one expiring rule per expiring kind, plus the abort-multipart rule."""
    expiring = (
        (WalKind.SEGMENT, policy.wal_days, policy.transition_days),
        (WalKind.PARTIAL, policy.partial_days, None),
        (WalKind.BACKUP, policy.effective_backup_days, None),
    )
    rules = [_expiring_rule(layout, kind, days, transition, policy) for kind, days, transition in expiring]
    if policy.abort_incomplete_multipart_days is not None:
        rules.append(
            {
                "ID": rule_id(layout, ABORT_RULE),
                "Status": "Enabled",
                "Filter": {"Prefix": _root(layout)},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": policy.abort_incomplete_multipart_days},
            }
        )
    return {"Rules": rules}


def _expiring_rule(
    layout: KeyLayout, kind: WalKind, days: int, transition: int | None, policy: RetentionPolicy
) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "ID": rule_id(layout, kind.value),
        "Status": "Enabled",
        "Filter": {"Prefix": layout.kind_prefix(kind)},
        "Expiration": {"Days": days},
    }
    if transition is not None:
        rule["Transitions"] = [{"Days": transition, "StorageClass": policy.transition_storage_class}]
    if policy.noncurrent_days is not None:
        rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": policy.noncurrent_days}
    return rule


def _root(layout: KeyLayout) -> str:
    # Everything walbucket writes under this layout; "" (the whole bucket) without a prefix.
    return f"{layout.prefix}/" if layout.prefix else ""
