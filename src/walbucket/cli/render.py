"""Render the admin commands' reports as text for people (--json prints the reports' own to_json instead). Pure."""

from __future__ import annotations

from walbucket.admin.backfill import BackfillReport
from walbucket.admin.catalog import ArchiveSummary, ratio
from walbucket.admin.check import CheckReport
from walbucket.admin.finding import Finding
from walbucket.admin.verify import VerifyReport
from walbucket.cli.lines import size
from walbucket.core.timeline import format_lsn

__all__ = ["render_backfill", "render_check", "render_show", "render_verify", "size", "summary_of_backfill"]

_SHOWN = 5  # names listed per finding in text; --json lists up to MAX_NAMED


def _sizes(original: int, stored: int) -> str:
    factor = ratio(original, stored)
    return f"{size(original)} original, {size(stored)} stored" + (f" ({factor:g}x)" if factor else "")


def render_show(summary: ArchiveSummary, where: str) -> list[str]:
    lines = [f"archive: {where}"]
    identity = summary.identity
    if identity is None:
        lines.append("identity: none (no identity.json; the first push of a segment creates it)")
    else:
        lines.append(
            f"identity: system id {identity.system_id}, PostgreSQL {identity.pg_version}, "
            f"{size(identity.seg_size)} segments"
        )
    for t in summary.timelines:
        origin = ""
        if t.parent is not None and t.switch_lsn is not None:
            origin = f" (from timeline {t.parent} at {format_lsn(t.switch_lsn)})"
        elif t.timeline > 1 and not t.history:
            origin = " (no history file)"
        if not t.segments:
            lines.append(f"timeline {t.timeline}{origin}: no segments")
            continue
        missing = f"; {t.missing} missing (walbucket verify)" if t.missing else ""
        lines.append(
            f"timeline {t.timeline}{origin}: {t.first} .. {t.last}, {t.segments} segments, "
            f"{_sizes(t.original_bytes, t.stored_bytes)}{missing}"
        )
    for title, files in (("partial files", summary.partials), ("history files", summary.histories),
                         ("backup history files", summary.backups)):  # fmt: skip
        if files:
            lines.append(f"{title} ({len(files)}):")
            lines += [f"  {f.name}  {size(f.stored_bytes)} stored" for f in files]
    if summary.foreign:
        lines.append(f"other keys ({len(summary.foreign)}), not walbucket's: {', '.join(summary.foreign[:_SHOWN])}")
    lines.append(f"total: {summary.objects} objects, {_sizes(summary.original_bytes, summary.stored_bytes)}")
    if not summary.exact:
        lines.append(
            "original sizes: segments and partials at the segment size, other files at their stored size "
            "(--exact reads each object's metadata)"
        )
    return lines


def _finding(f: Finding) -> list[str]:
    lines = [f"{f.severity.upper()} {f.code}: {f.message}"]
    if f.objects:
        more = f" (and {f.count - _SHOWN} more)" if f.count > _SHOWN else ""
        lines.append(f"  objects: {', '.join(f.objects[:_SHOWN])}{more}")
    lines.append(f"  HINT: {f.hint}")
    return lines


def render_verify(report: VerifyReport, where: str) -> list[str]:
    what = "downloaded and checked" if report.deep else "checked the metadata and tags of"
    sample = "" if report.deep else " (a sample: --deep checks every object's content)"
    lines = [f"archive: {where}", f"{what} {report.checked} of {report.summary.objects} objects{sample}"]
    for f in report.findings:
        lines += _finding(f)
    if not report.findings:
        lines.append("no problems found")
    return lines


def render_check(report: CheckReport, where: str) -> list[str]:
    lines = [f"archive: {where}"]
    width = max(len(item.name) for item in report.items)
    for item in report.items:
        lines.append(f"{item.status:<4}  {item.name:<{width}}  {item.detail}")
        if item.hint and item.status in ("FAIL", "WARN"):
            lines.append(f"{'':<4}  {'':<{width}}  HINT: {item.hint}")
    return lines


def render_backfill(report: BackfillReport) -> list[str]:
    width = max((len(item.outcome) for item in report.items), default=0)
    lines = []
    for item in report.items:
        detail = item.detail
        if item.outcome == "uploaded" and item.size is not None and item.stored_size is not None:
            detail = f"{size(item.size)} as {size(item.stored_size)}"
        lines.append(f"{item.outcome:<{width}}  {item.name}  {detail}".rstrip())
    return lines


def summary_of_backfill(report: BackfillReport) -> str:
    counts = report.counts
    first = ("would upload", "would-upload") if report.dry_run else ("uploaded", "uploaded")
    parts = [f"{first[0]} {counts[first[1]]}"]
    parts += [f"{name} {counts[name]}" for name in ("duplicate", "conflict", "refused", "skipped")]
    return f"{', '.join(parts)} from '{report.directory}'"
