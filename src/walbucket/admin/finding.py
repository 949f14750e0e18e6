"""A Finding, what ``walbucket verify`` reports, and the table of every finding's code, severity and hint. Pure.

``error`` findings make ``walbucket verify`` exit 11; ``warning`` findings are reported only. docs/inspect.md
explains each code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["FINDINGS", "MAX_NAMED", "Finding", "Severity", "finding"]

MAX_NAMED = 1000  # a finding names at most this many objects; ``count`` says how many there are

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem (``error``) or something to look at (``warning``), naming the objects and what to do."""

    code: str
    severity: Severity
    message: str
    objects: tuple[str, ...] = ()
    count: int = 0  # how many objects; more than len(objects) when the names were cut at MAX_NAMED
    hint: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code, "severity": self.severity, "message": self.message,
            "objects": list(self.objects), "count": self.count, "hint": self.hint,
        }  # fmt: skip


_BACKFILL = "walbucket backfill <pg_wal directory>"
FINDINGS: dict[str, tuple[Severity, str]] = {
    "missing-identity": ("error", "the next segment pushed, from whatever cluster, becomes the archive's identity: "
                         "make sure only this cluster archives here, then push any of its segments"),
    "unreadable-identity": ("error", "inspect identity.json (docs/key-layout.md#identityjson); push and get fail "
                            "until it is a valid identity document"),
    "missing-history": ("error", f"recovery cannot follow the timeline without it: push pg_wal/<T>.history from the "
                        f"server that was promoted to it ({_BACKFILL} on that server)"),
    "unreadable-history": ("error", "recovery cannot follow the timeline with this file: push the intact file "
                           "from the promoted server's pg_wal after removing the damaged object"),
    "broken-history-chain": ("error", f"push the parent timeline's history file from the pg_wal of the server "
                             f"that created it ({_BACKFILL})"),
    "inconsistent-history": ("error", "two history files disagree about the ancestry: two clusters may share "
                             "this prefix; compare them with the files in each server's pg_wal"),
    "gap": ("error", f"recovery stops at the first missing segment: if a server of that timeline still has them, "
            f"{_BACKFILL} there; otherwise take a new base backup, which needs only WAL after it"),
    "timeline-end-gap": ("error", f"the old primary had not archived them before the failover: run {_BACKFILL} "
                         f"with the old primary's pg_wal (or the promoted standby's, which received them by "
                         f"streaming) before they are recycled"),
    "timeline-start-gap": ("error", f"run {_BACKFILL} with the pg_wal of the server promoted to that timeline"),
    "timeline-continues": ("warning", "normal when a point-in-time recovery promoted a copy; after a failover it "
                           "means the old primary wrote or archived WAL past the switch point (replication lag, "
                           "or it kept running): make sure it is stopped"),
    "orphan-partial": ("error", f"the promoted server archived the .partial but not its new timeline's history "
                       f"file: {_BACKFILL} with its pg_wal; if that promotion was abandoned, this is harmless"),
    "partial-off-switch-point": ("warning", "the .partial does not hold the switch point of any successor "
                                 "timeline: check the history files"),
    "bad-metadata": ("error", "get refuses these objects (exit 210): they were not written by walbucket push or "
                     "were copied by a tool that drops user metadata; copy them back with their metadata"),
    "bad-tags": ("warning", "lifecycle rules and inspection filter on tags: set them again as "
                 "docs/key-layout.md#tags describes (aws s3api put-object-tagging)"),
    "identity-mismatch": ("error", "these objects belong to another cluster: two clusters share this prefix or "
                          "objects were copied here; find the other writer and give each cluster its own prefix"),
    "damaged-object": ("error", "get refuses it and recovery stops there: remove the object and push the file "
                       f"again ({_BACKFILL}) from a pg_wal that still has it, or take a new base backup after it"),
    "vanished": ("warning", "the object was listed but was gone when read: a lifecycle rule or a person deleted it"),
    "foreign-object": ("warning", "walbucket did not write these keys and ignores them"),
    "backup-wal-missing": ("warning", "restore a newer base backup; if its WAL expired before its backup history "
                           "file, expire backup history files before the WAL they need (docs/retention.md)"),
    "backup-outlives-wal": ("warning", "until its backup history file expires too, the archive records a backup that "
                            "cannot be restored: expire backup history files before the WAL they need (walbucket "
                            "lifecycle --backup-days lower than --wal-days by more days than a base backup takes, "
                            "archiving lag included), or keep WAL as long as the backups you may restore"),
    "backup-wal-expiring": ("warning", "no backup recorded in the archive will be restorable once that WAL expires: "
                            "take a new base backup now, and keep WAL longer than the interval between base "
                            "backups (walbucket lifecycle --wal-days; docs/retention.md)"),
    "backup-record-expiring": ("warning", "base backups may have stopped: take a new base backup now. Once the last "
                               "backup history file has expired, verify has no backup left to compare the WAL rule "
                               "with: keep backup history files longer than the interval between base backups "
                               "(walbucket lifecycle --backup-days)"),
    "lifecycle-unreadable": ("warning", "grant s3:GetLifecycleConfiguration on the bucket to whoever runs walbucket "
                             "verify (walbucket never changes the bucket's configuration)"),
}  # fmt: skip


def finding(code: str, message: str, objects: Iterable[str] = (), count: int | None = None) -> Finding:
    """Build a Finding of a code in FINDINGS, which supplies its severity and hint."""
    severity, hint = FINDINGS[code]
    named = tuple(objects)
    return Finding(code, severity, message, named[:MAX_NAMED], len(named) if count is None else count, hint)
