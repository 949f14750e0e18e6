"""What can be wrong with an archive, found from its Catalog, history files, metadata and tags. Pure.

Every problem is a Finding whose code, severity and hint come from the table in admin/finding.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from walbucket.admin.catalog import Catalog, missing_runs
from walbucket.admin.catalog import segment_name as _name
from walbucket.admin.finding import MAX_NAMED, Finding, finding
from walbucket.core.codecs import CODECS
from walbucket.core.identity import ArchiveIdentity
from walbucket.core.keylayout import (
    META_CODEC,
    META_SHA256,
    META_SIZE,
    META_SYSTEM_ID,
    TAG_KIND,
    TAG_PG_VERSION,
    TAG_SYSTEM_ID,
    TAG_TIMELINE,
)
from walbucket.core.timeline import Histories, HistoryEntry, format_lsn
from walbucket.core.walname import WalName

__all__ = ["group_problems", "object_problems", "structural_findings"]


def structural_findings(
    cat: Catalog, identity: ArchiveIdentity | None, identity_error: str | None, histories: Histories
) -> list[Finding]:
    """Find what the listing and the history files show: identity, timeline chain, gaps, orphan partials."""
    parsed = {tl: entries for tl, entries in histories.items() if isinstance(entries, tuple)}
    children: dict[int, list[tuple[int, int]]] = defaultdict(list)  # parent -> [(child, switch LSN)]
    for tl, entries in sorted(parsed.items()):
        children[entries[-1].timeline].append((tl, entries[-1].switch_lsn))
    found: list[Finding] = []
    if identity_error is not None:
        found.append(
            finding("unreadable-identity", f"identity.json is unreadable: {identity_error}", ["identity.json"])
        )
    elif identity is None and len(cat):
        found.append(finding("missing-identity", f"the archive holds {len(cat)} WAL objects but no identity.json"))
    found += _history_findings(cat, histories, parsed)
    found += _gap_findings(cat, parsed, children)
    found += _partial_findings(cat, children)
    if cat.foreign:
        found.append(finding("foreign-object", f"{len(cat.foreign)} keys are not WAL objects of walbucket's layout",
                             cat.foreign))  # fmt: skip
    return found


def _ancestry(timeline: int, parsed: Mapping[int, tuple[HistoryEntry, ...]]) -> list[tuple[int, int]] | None:
    if timeline == 1:
        return []
    entries = parsed.get(timeline)
    return None if entries is None else [(e.timeline, e.switch_lsn) for e in entries]


def _history_findings(
    cat: Catalog, histories: Histories, parsed: Mapping[int, tuple[HistoryEntry, ...]]
) -> list[Finding]:
    found: list[Finding] = []
    holders = set(cat.segments) | {wal.timeline for wal, _ in (*cat.partials, *cat.backups)}
    for tl in sorted(holders):
        if tl > 1 and tl not in cat.histories:
            segments = len(cat.segments.get(tl, ()))
            what = f"{segments} segment{'s' * (segments != 1)}" if segments else "partial or backup files"
            found.append(finding("missing-history", f"timeline {tl} has {what} in the archive but no history file "
                                 f"{tl:08X}.history", [f"{tl:08X}.history"]))  # fmt: skip
    for tl, entries in sorted(histories.items()):
        name = f"{tl:08X}.history"
        if isinstance(entries, str):
            found.append(finding("unreadable-history", f"history file '{name}' is unusable: {entries}", [name]))
            continue
        parent, switch = entries[-1].timeline, entries[-1].switch_lsn
        parent_name = f"{parent:08X}.history"
        if parent >= tl:
            found.append(finding("inconsistent-history", f"'{name}' names timeline {parent} as the parent of timeline "
                                 f"{tl}; a parent is always older", [name]))  # fmt: skip
        elif parent > 1 and parent not in cat.histories:
            found.append(finding("broken-history-chain", f"'{name}' says timeline {tl} branched off timeline "
                                 f"{parent} at {format_lsn(switch)}, but '{parent_name}' is not in the archive",
                                 [parent_name]))  # fmt: skip
        else:
            ancestry = _ancestry(parent, parsed)
            if ancestry is not None and [(e.timeline, e.switch_lsn) for e in entries[:-1]] != ancestry:
                found.append(finding("inconsistent-history", f"'{name}' and '{parent_name}' disagree about the "
                                     f"timelines before timeline {parent}", [name, parent_name]))  # fmt: skip
    return found


def _gap_findings(
    cat: Catalog, parsed: Mapping[int, tuple[HistoryEntry, ...]], children: Mapping[int, list[tuple[int, int]]]
) -> list[Finding]:
    seg_size = cat.seg_size
    if not cat.segments:
        return []
    oldest = min(entries[0][0] for entries in cat.segments.values())  # older WAL was never kept or has expired
    found: list[Finding] = []
    for tl in sorted(set(cat.segments) | set(children)):  # a timeline without segments may have a successor
        numbers = [n for n, _ in cat.segments.get(tl, ())]
        begin = parsed[tl][-1].switch_lsn // seg_size if tl in parsed else None
        kids = sorted(children.get(tl, []), key=lambda kid: kid[1])
        needed = kids[-1][1] // seg_size - 1 if kids else None  # the last segment a successor reads from here
        if not numbers:
            found += _unarchived_timeline(tl, oldest if begin is None else max(begin, oldest), kids, seg_size)
            continue
        first, last = numbers[0], numbers[-1]
        low = first if begin is None else min(first, max(begin, oldest))
        high = last if needed is None else max(last, needed)
        for a, b in missing_runs(numbers, low, high):
            names = _names(tl, a, b, seg_size)
            count = _span(tl, a, b, seg_size)
            if needed is not None and b == needed and a > last:
                child, switch = kids[-1]
                message = (f"timeline {tl} ends at {_name(tl, last, seg_size)} in the archive, but timeline {child} "
                           f"branched off it at {format_lsn(switch)}: missing {count}")  # fmt: skip
                found.append(finding("timeline-end-gap", message, names, b - a + 1))
            elif begin is not None and a == begin and b < first:
                parent = parsed[tl][-1].timeline
                message = (
                    f"timeline {tl} branched off timeline {parent} at {format_lsn(parsed[tl][-1].switch_lsn)} "
                    f"but starts at {_name(tl, first, seg_size)} in the archive: missing {count}"
                )
                found.append(finding("timeline-start-gap", message, names, b - a + 1))
            else:
                where = [f"after {_name(tl, a - 1, seg_size)}"] if a > low else []
                where += [f"before {_name(tl, b + 1, seg_size)}"] if b < high else []
                found.append(finding("gap", f"timeline {tl} lacks {count} {' and '.join(where)}".rstrip(),
                                     names, b - a + 1))  # fmt: skip
        for child, switch in kids:
            after = [n for n in numbers if n > switch // seg_size]
            if after:
                message = (
                    f"timeline {tl} has {len(after)} segments after the segment where timeline {child} "
                    f"branched off at {format_lsn(switch)}, up to {_name(tl, last, seg_size)}"
                )
                found.append(finding("timeline-continues", message, [_name(tl, n, seg_size) for n in after]))
    return found


def _unarchived_timeline(tl: int, low: int, kids: list[tuple[int, int]], seg_size: int) -> list[Finding]:
    """A timeline without a segment in the archive: its successor still reads it from ``low`` (or from its start)."""
    child, switch = kids[-1]
    high = switch // seg_size - 1
    if low > high:  # the successor branched off in the segment where this timeline began, or it has expired
        return []
    message = (f"timeline {tl} has no segment in the archive, but timeline {child} branched off it at "
               f"{format_lsn(switch)}: missing {_span(tl, low, high, seg_size)}")  # fmt: skip
    return [finding("timeline-end-gap", message, _names(tl, low, high, seg_size), high - low + 1)]


def _names(tl: int, a: int, b: int, seg_size: int) -> list[str]:
    return [_name(tl, n, seg_size) for n in range(a, min(b, a + MAX_NAMED - 1) + 1)]


def _span(tl: int, a: int, b: int, seg_size: int) -> str:
    span = _name(tl, a, seg_size) if a == b else f"{_name(tl, a, seg_size)}..{_name(tl, b, seg_size)}"
    return f"{span} ({b - a + 1} segment{'s' if b > a else ''})"


def _partial_findings(cat: Catalog, children: Mapping[int, list[tuple[int, int]]]) -> list[Finding]:
    found: list[Finding] = []
    for wal, _info in sorted(cat.partials, key=lambda pair: pair[0].name):
        assert wal.segment is not None
        kids = children.get(wal.timeline, [])
        if not kids:
            found.append(finding("orphan-partial", f"'{wal.name}' was archived when a server was promoted from "
                                 f"timeline {wal.timeline}, but no history file names timeline {wal.timeline} as "
                                 f"a parent", [wal.name]))  # fmt: skip
        elif all(switch // cat.seg_size != wal.segment.number(cat.seg_size) for _, switch in kids):
            switches = ", ".join(f"timeline {child} at {format_lsn(switch)}" for child, switch in kids)
            found.append(finding("partial-off-switch-point", f"'{wal.name}' does not hold the switch point of a "
                                 f"successor of timeline {wal.timeline} ({switches})", [wal.name]))  # fmt: skip
    return found


def object_problems(
    wal: WalName,
    metadata: Mapping[str, str] | None,
    tags: Mapping[str, str] | None,
    identity: ArchiveIdentity | None,
    seg_size: int,
) -> list[tuple[str, str]]:
    """Compare one object's metadata and tags with its name and the archive identity: [(code, detail)].

    ``metadata`` None means the object was gone when read; ``tags`` None means they were not read.
    """
    if metadata is None:
        return [("vanished", "listed but gone when read")]
    problems: list[tuple[str, str]] = []
    codec, size = metadata.get(META_CODEC), metadata.get(META_SIZE, "")
    if codec is None or META_SHA256 not in metadata or not size.isdigit():
        problems.append(("bad-metadata", "lack walbucket's metadata (walbucket-codec, -sha256, -size)"))
    elif codec not in CODECS:
        problems.append(("bad-metadata", f"metadata walbucket-codec is '{codec}', which walbucket does not know"))
    elif wal.is_wal_data and int(size) != seg_size:
        problems.append(("bad-metadata", f"metadata walbucket-size is {size}, not the segment size {seg_size}"))
    system_id = metadata.get(META_SYSTEM_ID)
    if identity is not None and system_id is not None and system_id != str(identity.system_id):
        problems.append(("identity-mismatch", f"metadata walbucket-system-id is {system_id}, not the archive's "
                         f"{identity.system_id}"))  # fmt: skip
    if tags is not None:
        problems += _tag_problems(wal, tags, identity)
    return problems


def _tag_problems(wal: WalName, tags: Mapping[str, str], identity: ArchiveIdentity | None) -> list[tuple[str, str]]:
    expected: list[tuple[str, str, str]] = [
        ("bad-tags", TAG_KIND, wal.kind.value),
        ("bad-tags", TAG_TIMELINE, str(wal.timeline)),
    ]
    if identity is not None:
        expected += [("identity-mismatch", TAG_SYSTEM_ID, str(identity.system_id))]
        expected += [("identity-mismatch", TAG_PG_VERSION, str(identity.pg_version))]
    problems: list[tuple[str, str]] = []
    for code, tag, value in expected:
        actual = tags.get(tag)
        if actual is None and code == "bad-tags":
            problems.append((code, f"tag {tag} is missing (expected '{value}')"))
        elif actual is not None and actual != value:
            problems.append((code, f"tag {tag} is '{actual}', expected '{value}'"))
    return problems


def group_problems(problems: Iterable[tuple[str, str, str]]) -> list[Finding]:
    """Turn (object name, code, detail) triples into one Finding per (code, detail), naming its objects."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, code, detail in problems:
        groups[(code, detail)].append(name)
    return [
        finding(code, f"{len(names)} object{'s' if len(names) != 1 else ''}: {detail}", sorted(names))
        for (code, detail), names in sorted(groups.items())
    ]
