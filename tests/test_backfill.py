"""backfill on MemoryStore: which files of a pg_wal directory are taken, what push answers for each, dry runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from walbucket.admin.backfill import BackfillItem, backfill, candidates
from walbucket.archive.push import PushOptions, push
from walbucket.core.errors import WalFileError
from walbucket.core.keylayout import KeyLayout
from walbucket.core.walname import parse_wal_name
from walbucket.store.memory import MemoryStore
from walfactory import SEG_SIZE, SYSTEM_ID, history_file, segment_bytes

LAYOUT = KeyLayout("p")
OPTIONS = PushOptions("zstd", 1)
OTHER_SYSTEM_ID = 7_400_000_000_000_000_002


def seg(n: int, timeline: int = 1) -> str:
    return f"{timeline:08X}00000000{n:08X}"


class PgWal:
    """A data directory's pg_wal with archive_status, as PostgreSQL leaves it."""

    def __init__(self, root: Path) -> None:
        self.data_dir = root / "pgdata"
        self.path = self.data_dir / "pg_wal"
        (self.path / "archive_status").mkdir(parents=True)
        (self.data_dir / "global").mkdir()
        (self.data_dir / "global" / "pg_control").write_bytes(SYSTEM_ID.to_bytes(8, "little") + bytes(248))

    def add(self, name: str, data: bytes | None = None, status: str | None = "ready") -> Path:
        path = self.path / name
        path.write_bytes(segment_bytes(name) if data is None else data)
        if status is not None:
            (self.path / "archive_status" / f"{name}.{status}").write_bytes(b"")
        return path


def archive(store: MemoryStore, tmp_path: Path, name: str, data: bytes | None = None) -> None:
    path = tmp_path / name
    path.write_bytes(segment_bytes(name) if data is None else data)
    push(path, store, LAYOUT, OPTIONS)
    path.unlink()


@pytest.fixture
def scene(tmp_path: Path) -> tuple[MemoryStore, PgWal]:
    """The archive holds segments 1..3; the old primary's pg_wal holds 2..7 in every state a file can be in."""
    store = MemoryStore()
    for n in (1, 2):
        archive(store, tmp_path, seg(n))
    archive(store, tmp_path, seg(3), segment_bytes(seg(3), fill=b"the other primary's WAL"))
    pg_wal = PgWal(tmp_path)
    pg_wal.add(seg(2), status="done")  # archived before: a duplicate
    pg_wal.add(seg(3), status="done")  # different content under the same name: a conflict
    pg_wal.add(seg(4))
    pg_wal.add(seg(5))
    pg_wal.add(seg(6), segment_bytes(seg(2)))  # recycled: the page header is segment 2's
    pg_wal.add(seg(7), status=None)  # being written when the primary stopped
    pg_wal.add("00000002.history", history_file(2, 1, "0/5000028"))
    pg_wal.add("not-wal.txt", b"ignored", status=None)
    return store, pg_wal


def test_candidates_are_the_finished_files_wal_data_first(scene: tuple[MemoryStore, PgWal]) -> None:
    _, pg_wal = scene
    chosen, skipped = candidates(pg_wal.path)
    assert [wal.name for wal, _ in chosen] == [seg(2), seg(3), seg(4), seg(5), seg(6), "00000002.history"]
    assert skipped == [
        BackfillItem(
            seg(7), "skipped", "no archive_status file: being written, or a recycled file (--include-unmarked takes it)"
        )
    ]
    chosen, skipped = candidates(pg_wal.path, include_unmarked=True)
    assert seg(7) in [wal.name for wal, _ in chosen] and skipped == []


def test_backfill_pushes_what_the_archive_lacks_and_reports_each_file(scene: tuple[MemoryStore, PgWal]) -> None:
    store, pg_wal = scene
    report = backfill(pg_wal.path, store, LAYOUT, OPTIONS)
    outcomes = {item.name: (item.outcome, item.detail) for item in report.items}
    assert outcomes == {
        seg(2): ("duplicate", "already archived with identical content"),
        seg(3): ("conflict", f"WAL file '{seg(3)}' already exists in the archive with different content"),
        seg(4): ("uploaded", ""),
        seg(5): ("uploaded", ""),
        seg(6): ("refused", f"WAL file '{seg(6)}' holds the data of another segment (page address 0/2000000, "
                 "timeline 1)"),
        seg(7): ("skipped", "no archive_status file: being written, or a recycled file (--include-unmarked takes it)"),
        "00000002.history": ("uploaded", ""),
    }  # fmt: skip
    assert report.counts == {
        "uploaded": 3, "duplicate": 1, "conflict": 1, "refused": 1, "would-upload": 0, "skipped": 1
    }  # fmt: skip
    assert [item.name for item in report.failed] == [seg(3), seg(6)]
    uploaded = next(item for item in report.items if item.name == seg(4))
    assert uploaded.size == SEG_SIZE and uploaded.stored_size is not None and uploaded.stored_size < SEG_SIZE
    for name in (seg(4), seg(5), "00000002.history"):
        assert LAYOUT.key(parse_wal_name(name)) in store.objects  # type: ignore[arg-type]
    stored_3 = store.read(LAYOUT.key(parse_wal_name(seg(3))))  # type: ignore[arg-type]
    assert stored_3 is not None and b"other primary" in zstandard.decompress(stored_3.body)[:100]

    again = backfill(pg_wal.path, store, LAYOUT, OPTIONS)
    assert again.counts["uploaded"] == 0 and again.counts["duplicate"] == 4


def test_a_dry_run_predicts_each_answer_and_writes_nothing(scene: tuple[MemoryStore, PgWal]) -> None:
    store, pg_wal = scene
    store.requests.clear()
    report = backfill(pg_wal.path, store, LAYOUT, OPTIONS, dry_run=True)
    assert {item.name: item.outcome for item in report.items} == {
        seg(2): "duplicate", seg(3): "conflict", seg(4): "would-upload", seg(5): "would-upload", seg(6): "refused",
        seg(7): "skipped", "00000002.history": "would-upload",
    }  # fmt: skip
    assert {kind for kind, _ in store.requests} <= {"head", "read"}
    assert report.to_json()["dry_run"] is True and report.to_json()["ok"] is False


def test_segments_of_another_cluster_are_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    archive(store, tmp_path, seg(1))
    pg_wal = PgWal(tmp_path)
    pg_wal.add(seg(2), segment_bytes(seg(2), system_id=OTHER_SYSTEM_ID))
    for dry_run in (True, False):
        [item] = backfill(pg_wal.path, store, LAYOUT, OPTIONS, dry_run=dry_run).items
        assert item.outcome == "refused"
        assert f"system id {OTHER_SYSTEM_ID} differs from the archive's system id {SYSTEM_ID}" in item.detail


def test_backfill_of_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WalFileError, match="is not a directory"):
        backfill(tmp_path / "nope", MemoryStore(), LAYOUT, OPTIONS)


def test_backfill_json_structure(tmp_path: Path) -> None:
    pg_wal = PgWal(tmp_path)
    pg_wal.add(seg(1))
    doc = backfill(pg_wal.path, MemoryStore(), LAYOUT, OPTIONS).to_json()
    [file] = doc.pop("files")
    assert doc == {
        "directory": str(pg_wal.path), "dry_run": False, "ok": True,
        "counts": {"uploaded": 1, "duplicate": 0, "conflict": 0, "refused": 0, "would-upload": 0, "skipped": 0},
    }  # fmt: skip
    assert file["name"] == seg(1) and file["outcome"] == "uploaded" and file["size"] == SEG_SIZE


@pytest.mark.parametrize(
    ("name", "build"),
    [
        (seg(4), lambda name: segment_bytes(name, page_timeline=2)),  # a later timeline's page in timeline 1's name
        (seg(4), lambda name: segment_bytes(name, size=8192)),  # truncated
        (seg(4), lambda name: segment_bytes(seg(2))),  # recycled
        ("000000010000000000000100", segment_bytes),  # no such segment at 16 MiB: it aliases 000000010000000100000000
    ],
    ids=["timeline", "size", "address", "name"],
)
def test_a_dry_run_refuses_what_push_refuses_in_the_same_words(
    tmp_path: Path, name: str, build: Callable[[str], bytes]
) -> None:
    store = MemoryStore()
    archive(store, tmp_path, seg(1))
    pg_wal = PgWal(tmp_path)
    pg_wal.add(name, build(name))
    [predicted] = backfill(pg_wal.path, store, LAYOUT, OPTIONS, dry_run=True).items
    [pushed] = backfill(pg_wal.path, store, LAYOUT, OPTIONS).items
    assert pushed.outcome == "refused"
    assert (predicted.outcome, predicted.detail) == (pushed.outcome, pushed.detail)
