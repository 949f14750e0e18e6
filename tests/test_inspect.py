"""show and verify on MemoryStore: the pure analysis (history files, runs, catalog), the findings of each kind of
problem with their exact messages and objects, and the parallel listing by prefix on 100,000 keys."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from walbucket.admin.catalog import FileSummary, TimelineSummary, catalog, missing_runs
from walbucket.admin.finding import FINDINGS
from walbucket.admin.listing import list_archive, plan_prefixes
from walbucket.admin.verify import VerifyReport, show, verify
from walbucket.archive.push import PushOptions, push
from walbucket.core.errors import IntegrityError
from walbucket.core.identity import ArchiveIdentity, encode_identity
from walbucket.core.keylayout import TAG_KIND, KeyLayout, object_metadata, object_tags
from walbucket.core.timeline import HistoryEntry, format_lsn, parse_history, parse_lsn
from walbucket.core.walname import Segment, parse_wal_name
from walbucket.store.memory import MemoryStore
from walbucket.store.protocol import ObjectInfo
from walfactory import SEG_SIZE, SYSTEM_ID, segment_bytes

LAYOUT = KeyLayout("p")
IDENTITY = ArchiveIdentity(SYSTEM_ID, 15, SEG_SIZE)
OTHER_SYSTEM_ID = 7_400_000_000_000_000_002


def seg(timeline: int, number: int) -> str:
    return Segment.from_number(timeline, number, SEG_SIZE).name


def history_text(*entries: tuple[int, str]) -> str:
    return "".join(f"{tl}\t{lsn}\tno recovery target specified\n" for tl, lsn in entries)


class Archive:
    """Objects laid out as push writes them; segment bodies are one byte (the listing and metadata matter here)."""

    def __init__(self, identity: ArchiveIdentity | None = IDENTITY) -> None:
        self.store = MemoryStore()
        if identity is not None:
            self.store.put(LAYOUT.identity_key, encode_identity(identity), {}, {TAG_KIND: "identity"})

    def put(self, name: str, body: bytes, size: int | None = None, system_id: int = SYSTEM_ID, **tags: str) -> str:
        wal = parse_wal_name(name)
        assert wal is not None
        digest = hashlib.sha256(body).hexdigest()
        metadata = object_metadata(digest, len(body) if size is None else size, "none", system_id)
        all_tags = object_tags(wal, system_id, 15) | {k.replace("_", "-"): v for k, v in tags.items()}
        self.store.put(LAYOUT.key(wal), body, metadata, all_tags)
        return LAYOUT.key(wal)

    def segments(self, timeline: int, numbers: Iterator[int] | range | list[int]) -> None:
        for number in numbers:
            self.put(seg(timeline, number), b"s", size=SEG_SIZE)

    def history(self, timeline: int, text: str) -> None:
        self.put(f"{timeline:08X}.history", text.encode())

    def partial(self, timeline: int, number: int) -> None:
        self.put(seg(timeline, number) + ".partial", b"p", size=SEG_SIZE)

    def verify(self, tmp_path: Path, deep: bool = False) -> VerifyReport:
        return verify(self.store, LAYOUT, deep=deep, work_dir=tmp_path)


def codes(report: VerifyReport) -> list[str]:
    return [f.code for f in report.findings]


# --- pure parts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1\t0/3000000\tno recovery target specified\n", (HistoryEntry(1, 0x3000000, "no recovery target specified"),)),
        (
            "# comment\n\n1\t0/3000000\tr1\n2\t1/A0000D8\tbefore 2024-01-01\n",
            (HistoryEntry(1, 0x3000000, "r1"), HistoryEntry(2, 0x1_0A0000D8, "before 2024-01-01")),
        ),
        ("1\t0/3000000\n", (HistoryEntry(1, 0x3000000, ""),)),
    ],
)
def test_parse_history_reads_each_ancestor_and_its_switch_point(text: str, expected: tuple[HistoryEntry, ...]) -> None:
    assert parse_history(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "it holds no timeline entry"),
        ("# only a comment\n", "it holds no timeline entry"),
        ("1 nonsense\n", "line 1 is not 'timeline<TAB>LSN<TAB>reason'"),
        ("2\t0/1\tx\n1\t0/2\ty\n", "line 2: timeline IDs must be positive and increasing"),
        ("0\t0/1\tx\n", "line 1: timeline IDs must be positive and increasing"),
    ],
)
def test_parse_history_refuses_what_postgresql_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        parse_history(text)


@pytest.mark.parametrize(("text", "lsn"), [("0/0", 0), ("0/3000028", 0x3000028), ("1A/FF", 0x1A_000000FF)])
def test_lsn_text_round_trips(text: str, lsn: int) -> None:
    assert parse_lsn(text) == lsn
    assert format_lsn(lsn) == text


@pytest.mark.parametrize(
    ("numbers", "low", "high", "runs"),
    [
        ([1, 2, 3], 1, 3, []),
        ([1, 3], 1, 3, [(2, 2)]),
        ([1, 2, 6, 9], 1, 9, [(3, 5), (7, 8)]),
        ([4, 5], 2, 7, [(2, 3), (6, 7)]),
        ([], 2, 3, [(2, 3)]),
        ([5, 6, 20], 5, 6, []),
    ],
)
def test_missing_runs(numbers: list[int], low: int, high: int, runs: list[tuple[int, int]]) -> None:
    assert missing_runs(numbers, low, high) == runs


@pytest.mark.parametrize(
    ("dirs", "limit", "expected"),
    [
        ([], 4, []),
        (["w/0000000100000000/", "w/0000000100000001/"], 4, ["w/0000000100000000/", "w/0000000100000001/"]),
        ([f"w/00000001000000{n:02X}/" for n in range(40)], 4, ["w/000000010000000", "w/000000010000001",
                                                               "w/000000010000002"]),
        ([f"w/0000000{t}000000{n:02X}/" for t in (1, 2) for n in range(3)], 1, ["w/0000000"]),
    ],
)  # fmt: skip
def test_plan_prefixes_merges_siblings_into_shorter_prefixes_until_few_enough(
    dirs: list[str], limit: int, expected: list[str]
) -> None:
    assert plan_prefixes(dirs, "w/", limit) == expected


def test_catalog_sorts_objects_by_kind_and_sets_aside_foreign_keys() -> None:
    objects = [
        ObjectInfo(f"p/wal/0000000100000000/{seg(1, 2)}", 20),
        ObjectInfo(f"p/wal/0000000100000000/{seg(1, 1)}", 10),
        ObjectInfo("p/wal/0000000100000000/000000010000000000000100", 1),  # seg 0x100: impossible at 16 MiB
        ObjectInfo("p/wal/0000000100000000/notes.txt", 1),
        ObjectInfo("p/history/00000002.history", 5),
        ObjectInfo(f"p/partial/0000000100000000/{seg(1, 3)}.partial", 7),
        ObjectInfo("p/backup/0000000100000000/000000010000000000000001.00000028.backup", 3),
    ]
    cat = catalog(objects, LAYOUT, SEG_SIZE)
    assert {tl: [n for n, _ in entries] for tl, entries in cat.segments.items()} == {1: [1, 2]}
    assert list(cat.histories) == [2]
    assert [wal.name for wal, _ in cat.partials] == [seg(1, 3) + ".partial"]
    assert [wal.name for wal, _ in cat.backups] == ["000000010000000000000001.00000028.backup"]
    assert cat.foreign == ("p/wal/0000000100000000/000000010000000000000100", "p/wal/0000000100000000/notes.txt")
    assert cat.timelines == [1, 2]
    assert len(cat) == 5


# --- verify: findings ------------------------------------------------------------------------------------------


def test_a_complete_archive_has_no_findings(tmp_path: Path) -> None:
    archive = Archive()
    archive.segments(1, range(1, 6))
    report = archive.verify(tmp_path)
    assert report.findings == ()
    assert report.to_json()["ok"] is True
    assert report.checked == 2  # the first and the last segment


def test_a_gap_in_the_middle_of_a_timeline_names_each_missing_segment(tmp_path: Path) -> None:
    archive = Archive()
    archive.segments(1, [1, 2, 3, 6, 7])
    report = archive.verify(tmp_path)
    [gap] = report.findings
    assert (gap.code, gap.severity, gap.count) == ("gap", "error", 2)
    assert gap.objects == (seg(1, 4), seg(1, 5))
    assert gap.message == (
        f"timeline 1 lacks {seg(1, 4)}..{seg(1, 5)} (2 segments) after {seg(1, 3)} and before {seg(1, 6)}"
    )
    assert "walbucket backfill" in gap.hint


def test_failover_gap_at_the_end_of_the_old_timeline_says_to_backfill_from_the_old_primary(tmp_path: Path) -> None:
    archive = Archive()
    archive.segments(1, range(1, 5))  # the old primary archived up to segment 4
    archive.history(2, history_text((1, "0/7000028")))  # the standby was promoted in segment 7
    archive.partial(1, 7)
    archive.segments(2, range(7, 10))
    report = archive.verify(tmp_path)
    [end] = report.findings
    assert end.code == "timeline-end-gap"
    assert end.objects == (seg(1, 5), seg(1, 6))
    assert end.message == (
        f"timeline 1 ends at {seg(1, 4)} in the archive, but timeline 2 branched off it at 0/7000028: "
        f"missing {seg(1, 5)}..{seg(1, 6)} (2 segments)"
    )
    assert "old primary" in end.hint and "walbucket backfill" in end.hint

    archive.segments(1, [5, 6])
    assert archive.verify(tmp_path).findings == ()


def test_a_switch_point_on_a_segment_boundary_needs_the_parent_up_to_the_segment_before(tmp_path: Path) -> None:
    archive = Archive()
    archive.segments(1, range(1, 6))
    archive.history(2, history_text((1, "0/7000000")))
    archive.segments(2, [7])
    [end] = archive.verify(tmp_path).findings
    assert (end.code, end.objects) == ("timeline-end-gap", (seg(1, 6),))


def test_segments_of_the_parent_after_the_switch_point_are_a_warning_not_an_error(tmp_path: Path) -> None:
    archive = Archive()
    archive.segments(1, range(1, 11))
    archive.history(2, history_text((1, "0/5000028")))
    archive.segments(2, range(5, 8))
    report = archive.verify(tmp_path)
    [warning] = report.findings
    assert (warning.code, warning.severity) == ("timeline-continues", "warning")
    assert warning.objects == tuple(seg(1, n) for n in range(6, 11))
    assert report.errors == () and report.to_json()["ok"] is True


def test_the_first_segments_of_a_new_timeline_missing_is_a_start_gap(tmp_path: Path) -> None:
    archive = Archive()
    archive.segments(1, range(1, 7))
    archive.history(2, history_text((1, "0/7000028")))
    archive.segments(2, [9, 10])
    [start] = archive.verify(tmp_path).findings
    assert start.code == "timeline-start-gap"
    assert start.objects == (seg(2, 7), seg(2, 8))
    assert start.message == (
        f"timeline 2 branched off timeline 1 at 0/7000028 but starts at {seg(2, 9)} in the archive: "
        f"missing {seg(2, 7)}..{seg(2, 8)} (2 segments)"
    )


def test_a_middle_timeline_without_segments_still_owes_its_successor_the_wal_between_its_switch_points(
    tmp_path: Path,
) -> None:
    archive = Archive()
    archive.segments(1, range(1, 5))
    archive.history(2, history_text((1, "0/5000028")))  # promoted in segment 5, archived nothing, promoted again:
    archive.history(3, history_text((1, "0/5000028"), (2, "0/8000028")))
    archive.segments(3, range(8, 11))
    [end] = archive.verify(tmp_path).findings
    assert (end.code, end.severity, end.count) == ("timeline-end-gap", "error", 3)
    assert end.objects == (seg(2, 5), seg(2, 6), seg(2, 7))
    assert end.message == (
        f"timeline 2 has no segment in the archive, but timeline 3 branched off it at 0/8000028: "
        f"missing {seg(2, 5)}..{seg(2, 7)} (3 segments)"
    )

    within = Archive()  # timeline 2 ended in the segment where it began: timeline 3 reads that one itself
    within.segments(1, range(1, 5))
    within.history(2, history_text((1, "0/5000028")))
    within.history(3, history_text((1, "0/5000028"), (2, "0/5000100")))
    within.segments(3, range(5, 8))
    assert within.verify(tmp_path).findings == ()


def test_wal_older_than_the_oldest_segment_kept_is_expired_not_missing(tmp_path: Path) -> None:
    archive = Archive()
    archive.history(2, history_text((1, "0/7000028")))
    archive.segments(2, range(20, 23))  # timeline 1 and the start of timeline 2 expired
    assert archive.verify(tmp_path).findings == ()


@pytest.mark.parametrize(
    ("histories", "segments", "expected"),
    [
        pytest.param({}, {2: [3]}, [("missing-history", "timeline 2 has 1 segment in the archive but no history "
                                     "file 00000002.history", ("00000002.history",))], id="missing"),
        pytest.param({3: [(2, "0/9000000")]}, {}, [("broken-history-chain", "'00000003.history' says timeline 3 "
                      "branched off timeline 2 at 0/9000000, but '00000002.history' is not in the archive",
                      ("00000002.history",))], id="broken-chain"),
        pytest.param({2: [(1, "0/6000000")], 3: [(1, "0/5000000"), (2, "0/9000000")]}, {},
                     [("inconsistent-history", "'00000003.history' and '00000002.history' disagree about the "
                       "timelines before timeline 2", ("00000003.history", "00000002.history"))], id="disagree"),
        pytest.param({2: [(1, "0/6000000"), (3, "0/7000000")]}, {},
                     [("inconsistent-history", "'00000002.history' names timeline 3 as the parent of timeline 2; a "
                       "parent is always older", ("00000002.history",))], id="parent-not-older"),
    ],
)  # fmt: skip
def test_history_file_problems(
    tmp_path: Path,
    histories: dict[int, list[tuple[int, str]]],
    segments: dict[int, list[int]],
    expected: list[tuple[str, str, tuple[str, ...]]],
) -> None:
    archive = Archive()
    for tl, entries in histories.items():
        archive.history(tl, history_text(*entries))
    for tl, numbers in segments.items():
        archive.segments(tl, numbers)
    report = archive.verify(tmp_path)
    assert [(f.code, f.message, f.objects) for f in report.findings] == expected
    assert all(f.severity == "error" for f in report.findings)


def test_a_history_file_that_fails_its_checksum_or_does_not_parse_is_unreadable(tmp_path: Path) -> None:
    archive = Archive()
    archive.history(2, "garbage\n")
    key = archive.put("00000003.history", history_text((1, "0/5000000"), (2, "0/6000000")).encode())
    archive.store.objects[key].body = b"2\t0/6000000\tdamaged\n"
    report = archive.verify(tmp_path)
    assert [(f.code, f.objects) for f in report.findings] == [
        ("unreadable-history", ("00000002.history",)),
        ("unreadable-history", ("00000003.history",)),
    ]
    assert report.findings[0].message == (
        "history file '00000002.history' is unusable: it is not a timeline history file: "
        "line 1 is not 'timeline<TAB>LSN<TAB>reason'"
    )
    assert "fails its checksum" in report.findings[1].message


def test_a_partial_without_a_successor_timeline_is_an_orphan(tmp_path: Path) -> None:
    archive = Archive()
    archive.segments(1, range(1, 4))
    archive.partial(1, 4)
    [orphan] = archive.verify(tmp_path).findings
    assert (orphan.code, orphan.objects) == ("orphan-partial", (seg(1, 4) + ".partial",))
    assert orphan.message == (
        f"'{seg(1, 4)}.partial' was archived when a server was promoted from timeline 1, "
        "but no history file names timeline 1 as a parent"
    )


def test_a_partial_away_from_the_switch_point_is_a_warning(tmp_path: Path) -> None:
    archive = Archive()
    archive.segments(1, range(1, 5))
    archive.history(2, history_text((1, "0/5000028")))
    archive.segments(2, [5])
    archive.partial(1, 3)
    [warning] = archive.verify(tmp_path).findings
    assert (warning.code, warning.severity) == ("partial-off-switch-point", "warning")


def test_objects_that_disagree_with_the_identity_are_grouped_by_problem(tmp_path: Path) -> None:
    archive = Archive()
    archive.segments(1, range(1, 4))
    archive.put(seg(1, 4), b"s", size=SEG_SIZE, system_id=OTHER_SYSTEM_ID)  # the last segment: in the sample
    archive.put(seg(1, 5), b"s", size=SEG_SIZE, walbucket_kind="history")
    archive.put(seg(1, 6), b"s", size=SEG_SIZE)
    archive.store.objects[LAYOUT.key(parse_wal_name(seg(1, 6)))].metadata = {}  # type: ignore[arg-type]
    sampled = archive.verify(tmp_path)
    assert [(f.code, f.message, f.objects) for f in sampled.findings] == [
        ("bad-metadata", "1 object: lack walbucket's metadata (walbucket-codec, -sha256, -size)", (seg(1, 6),)),
    ]
    archive.put(seg(1, 7), b"s", size=SEG_SIZE)
    sampled = archive.verify(tmp_path)
    assert sampled.findings == ()  # the middle is not sampled
    everything = archive.verify(tmp_path, deep=True)
    assert [(f.code, f.message, f.objects) for f in everything.findings if f.code != "damaged-object"] == [
        ("bad-metadata", "1 object: lack walbucket's metadata (walbucket-codec, -sha256, -size)", (seg(1, 6),)),
        ("bad-tags", "1 object: tag walbucket-kind is 'history', expected 'segment'", (seg(1, 5),)),
        ("identity-mismatch", f"1 object: metadata walbucket-system-id is {OTHER_SYSTEM_ID}, not the archive's "
         f"{SYSTEM_ID}", (seg(1, 4),)),
        ("identity-mismatch", f"1 object: tag walbucket-system-id is '{OTHER_SYSTEM_ID}', expected '{SYSTEM_ID}'",
         (seg(1, 4),)),
    ]  # fmt: skip


def _push_segments(store: MemoryStore, tmp_path: Path, names: list[str]) -> None:
    for name in names:
        path = tmp_path / name
        path.write_bytes(segment_bytes(name))
        push(path, store, LAYOUT, PushOptions("zstd", 1))
        path.unlink()


def test_deep_verify_downloads_every_object_and_finds_the_damaged_one(tmp_path: Path) -> None:
    store = MemoryStore()
    _push_segments(store, tmp_path, [seg(1, n) for n in range(1, 5)])
    damaged = LAYOUT.key(parse_wal_name(seg(1, 2)))  # type: ignore[arg-type]
    other = store.objects[LAYOUT.key(parse_wal_name(seg(1, 3)))]  # type: ignore[arg-type]
    store.objects[damaged].body = other.body  # another segment's bytes: the hash differs
    assert verify(store, LAYOUT, work_dir=tmp_path).findings == ()  # metadata and tags are right
    report = verify(store, LAYOUT, deep=True, work_dir=tmp_path)
    [finding] = report.findings
    assert (finding.code, finding.objects, report.checked) == ("damaged-object", (seg(1, 2),), 4)
    assert finding.message == (
        f"1 object: WAL file '{seg(1, 2)}' from '{damaged}' fails its checksum (SHA-256 or size differ from the "
        "metadata)"
    )
    assert list(tmp_path.iterdir()) == [], "nothing is left behind in the work directory"
    assert [r for r in store.requests if r[0] == "read"].count(("read", damaged)) == 1


@pytest.mark.parametrize(
    ("identity_body", "code", "message"),
    [
        (None, "missing-identity", "the archive holds 2 WAL objects but no identity.json"),
        (b"{}", "unreadable-identity", "identity.json is unreadable: archive identity 'p/identity.json' is "
         "unreadable: not a walbucket identity document: 'system_id'"),
    ],
)  # fmt: skip
def test_identity_problems(tmp_path: Path, identity_body: bytes | None, code: str, message: str) -> None:
    archive = Archive(identity=None)
    if identity_body is not None:
        archive.store.put(LAYOUT.identity_key, identity_body, {}, {})
    archive.segments(1, [1, 2])
    [finding] = archive.verify(tmp_path).findings
    assert (finding.code, finding.message) == (code, message)


def test_keys_walbucket_did_not_write_are_a_warning(tmp_path: Path) -> None:
    archive = Archive()
    archive.segments(1, [1])
    archive.store.put("p/wal/0000000100000000/readme.txt", b"hi", {}, {})
    [finding] = archive.verify(tmp_path).findings
    assert (finding.code, finding.severity, finding.objects) == (
        "foreign-object",
        "warning",
        ("p/wal/0000000100000000/readme.txt",),
    )


def test_verify_report_json_structure(tmp_path: Path) -> None:
    archive = Archive()
    archive.segments(1, [1, 3])
    doc = archive.verify(tmp_path).to_json()
    assert doc == {
        "ok": False, "deep": False, "objects": 2, "checked": 2, "errors": 1, "warnings": 0,
        "findings": [{
            "code": "gap", "severity": "error", "count": 1, "objects": [seg(1, 2)],
            "message": f"timeline 1 lacks {seg(1, 2)} (1 segment) after {seg(1, 1)} and before {seg(1, 3)}",
            "hint": doc["findings"][0]["hint"],
        }],
        "timelines": [{
            "timeline": 1, "parent": None, "switch_lsn": None, "history_file": False, "first": seg(1, 1),
            "last": seg(1, 3), "segments": 2, "missing": 1, "stored_bytes": 2, "original_bytes": 2 * SEG_SIZE,
            "compression_ratio": float(SEG_SIZE),
        }],
    }  # fmt: skip


# --- show -----------------------------------------------------------------------------------------------------


def test_show_summarizes_each_timeline_with_its_parent_switch_point_and_sizes(tmp_path: Path) -> None:
    archive = Archive()
    archive.segments(1, range(1, 7))
    archive.history(2, history_text((1, "0/7000028")))
    archive.partial(1, 7)
    archive.segments(2, [7, 8, 10])
    archive.put("000000010000000000000002.00000028.backup", b"START WAL LOCATION: 0/2000028\n")
    summary = show(archive.store, LAYOUT, work_dir=tmp_path)
    assert summary.identity == IDENTITY
    assert summary.timelines == (
        TimelineSummary(1, None, None, False, seg(1, 1), seg(1, 6), 6, 0, 6, 6 * SEG_SIZE),
        TimelineSummary(2, 1, 0x7000028, True, seg(2, 7), seg(2, 10), 3, 1, 3, 3 * SEG_SIZE),
    )
    assert summary.partials == (FileSummary(seg(1, 7) + ".partial", 1, SEG_SIZE),)
    history_size = len(history_text((1, "0/7000028")))
    assert summary.histories == (FileSummary("00000002.history", history_size, history_size),)
    assert summary.backups == (FileSummary("000000010000000000000002.00000028.backup", 30, 30),)
    assert (summary.objects, summary.exact) == (12, False)
    doc = summary.to_json()
    assert doc["totals"] == {
        "objects": 12, "stored_bytes": 10 + history_size + 30, "original_bytes": 10 * SEG_SIZE + history_size + 30,
        "compression_ratio": round((10 * SEG_SIZE + history_size + 30) / (10 + history_size + 30), 2),
    }  # fmt: skip
    assert doc["original_bytes_source"] == "estimate"
    assert doc["timelines"][1]["switch_lsn"] == "0/7000028"


def test_show_exact_reads_original_sizes_from_metadata(tmp_path: Path) -> None:
    store = MemoryStore()
    _push_segments(store, tmp_path, [seg(1, 1), seg(1, 2)])
    summary = show(store, LAYOUT, exact=True, work_dir=tmp_path)
    assert summary.exact and summary.original_bytes == 2 * SEG_SIZE
    assert summary.to_json()["original_bytes_source"] == "metadata"
    assert [r[0] for r in store.requests].count("head") >= 2


# --- scale: 100,000 objects listed by prefix in parallel -----------------------------------------------------


class _ConcurrencyStore(MemoryStore):
    """Records how many list streams run at once and on which threads."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0
        self.threads: set[int] = set()
        self.guard = threading.Lock()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self.guard:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.threads.add(threading.get_ident())
        try:
            time.sleep(0.005)  # a request's latency, so that parallel streams overlap
            yield from super().list(prefix)
        finally:
            with self.guard:
                self.in_flight -= 1


def test_an_archive_of_100000_objects_is_listed_by_prefix_in_parallel(tmp_path: Path) -> None:
    store = _ConcurrencyStore()
    store.put(LAYOUT.identity_key, encode_identity(IDENTITY), {}, {})
    meta = object_metadata("0" * 64, SEG_SIZE, "none", SYSTEM_ID)
    for number in range(1, 90_001):
        store.put(LAYOUT.key(parse_wal_name(seg(1, number))), b"", meta, {})  # type: ignore[arg-type]
    store.put(LAYOUT.key(parse_wal_name("00000002.history")), history_text((1, "0/0")).encode(), {}, {})  # type: ignore[arg-type]
    for number in range(90_000, 99_999):
        store.put(LAYOUT.key(parse_wal_name(seg(2, number))), b"", meta, {})  # type: ignore[arg-type]
    store.requests.clear()

    started = time.monotonic()
    listing = list_archive(store, LAYOUT, jobs=16)
    elapsed = time.monotonic() - started

    assert len(listing.objects) == 100_000
    assert [o.key for o in listing.objects] == sorted(o.key for o in listing.objects)
    lists = [prefix for kind, prefix in store.requests if kind == "list"]
    assert 16 < len(lists) <= 16 * 4 + 1, "one stream per group of timeline+log id directories, not one per object"
    assert "p/wal/" not in lists, "never one stream for the whole wal/ prefix"
    assert {kind for kind, _ in store.requests} == {"list", "list_prefixes"}
    assert store.most > 1 and len(store.threads) > 1
    assert elapsed < 20


def test_verify_of_100000_objects_reads_only_a_sample(tmp_path: Path) -> None:
    archive = Archive()
    meta = object_metadata(hashlib.sha256(b"").hexdigest(), SEG_SIZE, "none", SYSTEM_ID)
    for number in range(100_000):
        wal = parse_wal_name(seg(1, number))
        assert wal is not None
        archive.store.put(LAYOUT.key(wal), b"", meta, object_tags(wal, SYSTEM_ID, 15))
    archive.store.requests.clear()
    report = archive.verify(tmp_path)
    assert report.findings == () and report.summary.objects == 100_000
    reads = [request for request in archive.store.requests if request[0] in ("head", "read", "tags")]
    assert len(reads) == 2 * 2 + 1  # head and tags of the first and last segment, and identity.json


def test_show_of_an_archive_with_an_unreadable_identity_is_an_integrity_error(tmp_path: Path) -> None:
    archive = Archive(identity=None)
    archive.store.put(LAYOUT.identity_key, b"not json", {}, {})
    with pytest.raises(IntegrityError, match=r"^archive identity 'p/identity\.json' is unreadable: ") as caught:
        show(archive.store, LAYOUT, work_dir=tmp_path)
    assert caught.value.hint == "walbucket verify lists what else is wrong"


def test_every_finding_code_is_documented_with_its_severity() -> None:
    table = (Path(__file__).resolve().parent.parent / "docs" / "inspect.md").read_text()
    documented = dict(re.findall(r"^\| `([a-z-]+)` \| (error|warning) \|", table, flags=re.MULTILINE))
    assert documented == {code: severity for code, (severity, _hint) in FINDINGS.items()}
