"""High availability with real PostgreSQL 15 servers: standbys, failover, timelines and split brain, one archive.

One story, run once for the module, then examined by the tests (docs/high-availability.md tells it for users):

1. a primary archives (``archive_mode = on``); base backups are taken on timeline 1; standby A (``archive_mode =
   always``, ``restore_command``) and standby B (streaming only, ``archive_mode = on``) follow it;
2. A, still running, loses its connection (its primary_conninfo is pointed at a closed port and reloaded) while the
   primary recycles the WAL A needs; its primary_conninfo restored, A catches up from the archive and streams again;
3. under pgbench load the primary and A archive the same segments at the same time;
4. a restore point, then A is promoted to timeline 2 and stopped in immediate mode before its first checkpoint
   completes; it restarts and writes on timeline 2;
5. the old primary keeps running on timeline 1 and completes the segment A left as ``.partial``; B, still
   following it, is promoted on its own into a second timeline 2 (split brain) and is refused;
6. two base backups from timeline 1 are recovered: one follows the history into timeline 2, one stops at the
   restore point on timeline 1;
7. a copy of the primary's data directory is started as a second primary on timeline 1 and is refused.

Every walbucket command goes through tools/lab_proxy.py, which makes moto's conditional writes atomic as S3's are
(moto alone lets two racing creates both win).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conftest import untimed
from lab_pg import SUPERUSER, PgCluster, PgLab, archive_command, restore_command, wait_for, walbucket_executable
from lab_proxy import FaultProxy
from lab_s3 import MotoServer, free_port
from walbucket.core.keylayout import KeyLayout
from walbucket.core.walname import Segment, WalKind, WalName, parse_wal_name

pytestmark = pytest.mark.postgres

PREFIX = "ha/cluster"
SEG_SIZE = 16 << 20
TARGET = "ha_before_failover"
DIFFERENT = "already exists in the archive with different content"
PUSH_ERROR = re.compile(r"^walbucket push \S+: ERROR", re.MULTILINE)
PUSHED_OK = ("archived ", "already archived with identical content (duplicate), ")
MARKERS_SQL = "SELECT coalesce(string_agg(note, ',' ORDER BY id), '') FROM marker"
ITEMS_SQL = "SELECT count(*) || ':' || md5(string_agg(id || payload, ',' ORDER BY id)) FROM item"


def lsn(text: str) -> int:
    high, low = text.split("/")
    return int(high, 16) << 32 | int(low, 16)


def segment_at(timeline: int, position: int) -> Segment:
    """The segment holding byte ``position`` of the WAL (XLByteToSeg)."""
    return Segment.from_number(timeline, position // SEG_SIZE, SEG_SIZE)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Archive:
    """The bucket, read directly (not through walbucket)."""

    client: Any
    bucket: str
    layout: KeyLayout = field(default_factory=lambda: KeyLayout(PREFIX))

    def etags(self) -> dict[str, str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=PREFIX + "/")
        return {obj["Key"]: obj["ETag"] for page in pages for obj in page.get("Contents", [])}

    def names(self, kind: WalKind, timeline: int | None = None) -> list[WalName]:
        found = (self.layout.name_of(key) for key in self.etags())
        return sorted(
            (w for w in found if w and w.kind is kind and timeline in (None, w.timeline)), key=lambda w: w.name
        )

    def key(self, name: str) -> str:
        wal = parse_wal_name(name)
        assert wal is not None, name
        return self.layout.key(wal)

    def head(self, name: str) -> dict[str, Any] | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except self.client.exceptions.ClientError:
            return None
        return {"etag": response["ETag"], "metadata": response["Metadata"]}

    def tags(self, name: str) -> dict[str, str]:
        tag_set = self.client.get_object_tagging(Bucket=self.bucket, Key=self.key(name))["TagSet"]
        return {t["Key"]: t["Value"] for t in tag_set}


@dataclass
class Got:
    """One `walbucket get` run as the server user."""

    returncode: int
    stderr: str
    sha256: str | None  # of the file written, None when none was


@dataclass
class Story:
    archive: Archive
    primary: PgCluster
    standby: PgCluster  # A: archive_mode = always, restore_command; promoted to timeline 2
    twin: PgCluster  # B: streaming only; promoted on its own into a second timeline 2
    latest: PgCluster  # base backup from timeline 1, recovered with recovery_target_timeline = 'latest'
    at_target: PgCluster  # base backup from timeline 1, recovered to TARGET on timeline 1
    copy: PgCluster  # a copy of the primary's data directory started as a second primary on timeline 1
    needed: str  # the first segment the disconnected standby never received
    primary_wal_before_reconnect: list[str]
    reconnect_log: str  # A's log from the loss of its connection until it streams again
    standby_pids: tuple[int | None, int | None]  # A's postmaster before the loss of its connection and after
    streaming_again: tuple[str, str]  # A's wal receiver ('streaming,<sender port>'); A's state on the primary
    items: tuple[str, str]  # the item table on the primary and on A once A streams again
    standby_failed_before_promotion: int
    load_segments: list[str]  # segments the primary and A archived during the pgbench run
    switch_lsn: int  # where timeline 2 branches off timeline 1
    promotion_log: str  # A's log from the promotion to the immediate shutdown
    partial_files: dict[str, str]  # the .partial A's promotion left in its pg_wal, and its SHA-256
    gets: dict[str, Got]
    history_before_twin: dict[str, Any] | None
    history_after_twin: dict[str, Any] | None
    copy_etags_before: dict[str, str]
    copy_etags_after: dict[str, str]

    @property
    def switch_segment(self) -> Segment:
        return segment_at(1, self.switch_lsn)


def _walbucket_get(lab: PgLab, name: str, cwd: Path, env: Mapping[str, str] | None = None) -> Got:
    """Run `walbucket get` as PostgreSQL's restore_command would, into a fresh file in the lab."""
    dest = lab.base_dir / "scratch" / f"{name}-{len(list((lab.base_dir / 'scratch').iterdir()))}"
    result = lab.run([walbucket_executable(), "get", name, dest], check=False, cwd=cwd, env=env)
    return Got(result.returncode, result.stderr, sha256_file(dest) if dest.exists() else None)


def _set_primary_conninfo(standby: PgCluster, conninfo: str) -> None:
    """Point a running standby elsewhere: PostgreSQL 15 restarts the wal receiver on reload, no server restart."""
    standby.psql("ALTER SYSTEM SET primary_conninfo = '" + conninfo.replace("'", "''") + "'")
    standby.scalar("SELECT pg_reload_conf()")


def _replication_state(primary: PgCluster, standby: PgCluster) -> str:
    """The state of ``standby``'s connection in the primary's pg_stat_replication ('none' when it has none)."""
    sql = f"SELECT coalesce(max(state), 'none') FROM pg_stat_replication WHERE application_name = '{standby.name}'"
    return primary.scalar(sql)


def _insert(node: PgCluster, note: str) -> None:
    node.psql(f"INSERT INTO marker (note) VALUES ('{note}')")


def _generate(primary: PgCluster, load_seconds: int) -> list[str]:
    """Run pgbench while another connection switches segments every second; return the segments switched out."""
    switched: list[str] = []
    done = threading.Event()

    def switch() -> None:
        while not done.wait(1.0):
            switched.append(primary.switch_wal())

    thread = threading.Thread(target=switch, name="switcher")
    thread.start()
    try:
        primary.pgbench(seconds=load_seconds, clients=2)
    finally:
        done.set()
        thread.join()
    switched.append(primary.switch_wal())
    return switched


def _recover_from_backup(node: PgCluster, **targets: str) -> None:
    node.configure(archive_mode=False)  # a test restore must not archive a third timeline into the archive
    node.setup_recovery(restore_command(), **targets)
    node.start(wait=False)


@pytest.fixture(scope="module")
def story(moto_server: MotoServer) -> Iterator[Story]:
    bucket = f"wb-ha-{os.getpid()}"
    client: Any = moto_server.client()
    client.create_bucket(Bucket=bucket)
    archive = Archive(client, bucket)
    with FaultProxy(moto_server.url) as proxy:
        env = {**moto_server.env(bucket, PREFIX), "WALBUCKET_ENDPOINT_URL": proxy.url, "WALBUCKET_RETRY_BUDGET": "20"}
        with PgLab(env=env, keep=bool(os.environ.get("WALBUCKET_KEEP_LAB"))) as lab:
            yield _run_story(lab, archive)


def _run_story(lab: PgLab, archive: Archive) -> Story:
    lab.make_dir(lab.base_dir / "scratch")
    primary = lab.cluster("primary").init()
    primary.configure(archive_mode=True, archive_command=archive_command(), wal_keep_size=0)
    primary.start()
    primary.psql(
        "CREATE TABLE marker (id serial PRIMARY KEY, note text NOT NULL);"
        "CREATE TABLE item (id int PRIMARY KEY, payload text)"
    )
    primary.wait_archived(primary.switch_wal())

    # 1. Base backups on timeline 1 (their .backup files go to backup/), and two standbys.
    latest = lab.cluster("latest").backup_from(primary, wal_method="none")
    at_target = lab.cluster("at-target").backup_from(primary, wal_method="none")
    copy = lab.cluster("copy").backup_from(primary, wal_method="stream")
    standby = lab.cluster("standby-a").backup_from(primary, wal_method="stream", write_recovery_conf=True)
    standby.configure(
        archive_mode="always",
        restore_command=restore_command(),
        checkpoint_timeout="1h",  # no timed restartpoint: replayed pages stay dirty until the promotion's checkpoint
    )
    twin = lab.cluster("standby-b").backup_from(primary, wal_method="stream", write_recovery_conf=True)
    standby.start()
    twin.start()

    # 2. A, running, loses its connection; the primary writes three segments, archives them and recycles them at a
    #    checkpoint; A's primary_conninfo is restored.
    primary.psql("INSERT INTO item SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    standby.wait_replayed(primary.current_lsn())
    wait_for(lambda: _replication_state(primary, standby) == "streaming", 60, "standby A to stream")
    received = lsn(standby.scalar("SELECT pg_last_wal_receive_lsn()"))
    needed = segment_at(1, received).next(SEG_SIZE).name
    conninfo = standby.scalar("SHOW primary_conninfo")
    pid_before = standby.postmaster_pid()
    mark = len(standby.log_text())
    _set_primary_conninfo(standby, f"host=127.0.0.1 port={free_port()} user={SUPERUSER} connect_timeout=5")
    wait_for(lambda: _replication_state(primary, standby) == "none", 60, "standby A to lose its connection")
    for first in (2001, 3001, 4001):
        primary.psql(f"INSERT INTO item SELECT g, md5(g::text) FROM generate_series({first}, {first + 998}) g")
        last = primary.switch_wal()
    primary.wait_archived(last)
    primary.psql("CHECKPOINT")
    primary_wal_before_reconnect = sorted(p.name for p in primary.wal_dir.iterdir())
    _set_primary_conninfo(standby, conninfo)
    receiver_sql = "SELECT status || ',' || sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'"
    receiver = wait_for(lambda: standby.psql(receiver_sql), 120, "standby A to stream again")[0][0]
    wait_for(lambda: _replication_state(primary, standby) == "streaming", 60, "the primary to list A streaming")
    state = _replication_state(primary, standby)
    standby.wait_replayed(primary.current_lsn())
    reconnect_log = standby.log_text()[mark:]
    standby_pids = (pid_before, standby.postmaster_pid())
    items = (primary.scalar(ITEMS_SQL), standby.scalar(ITEMS_SQL))

    # 3. Both archive the same segments under load.
    primary.pgbench_init(scale=2)
    load_segments = _generate(primary, load_seconds=5)
    primary.wait_archived(load_segments[-1], timeout=120)
    standby.wait_archived(load_segments[-1], timeout=120)
    standby_failed_before_promotion = standby.archiver().failed_count

    # 4. A restore point on timeline 1, a last row, then A is promoted and crashes before its first checkpoint.
    _insert(primary, "before the target")
    primary.scalar(f"SELECT pg_create_restore_point('{TARGET}')")
    primary.switch_wal()
    _insert(primary, "after the target")
    end_of_tl1 = primary.current_lsn()
    standby.wait_replayed(end_of_tl1)
    twin.wait_replayed(end_of_tl1)
    mark = len(standby.log_text())
    standby.promote()
    partial_files = {p.name: sha256_file(p) for p in standby.wal_dir.glob("00000001*.partial")}
    standby.stop("immediate")
    promotion_log = standby.log_text()[mark:]
    standby.start()
    history = (standby.wal_dir / "00000002.history").read_text()
    switch_lsn = lsn(history.split()[1])
    _insert(standby, "on timeline 2")
    standby.switch_wal()
    _insert(standby, "more on timeline 2")
    standby.wait_archived(standby.switch_wal())
    partial = segment_at(1, switch_lsn).name + ".partial"
    wait_for(lambda: archive.head(partial), 60, f"'{partial}' in the archive")

    # 5. The segment A left as .partial: only the partial is in the archive, until the old primary completes it.
    full = segment_at(1, switch_lsn).name
    gets = {
        "partial off": _walbucket_get(lab, full, primary.data_dir),
        "partial on": _walbucket_get(lab, full, primary.data_dir, {"WALBUCKET_RESTORE_PARTIAL": "on"}),
    }
    _insert(primary, "old primary after the failover")
    twin.wait_replayed(primary.current_lsn())
    primary.wait_archived(primary.switch_wal())
    gets["full on"] = _walbucket_get(lab, full, primary.data_dir, {"WALBUCKET_RESTORE_PARTIAL": "on"})

    history_before_twin = archive.head("00000002.history")
    twin.promote()
    wait_for(lambda: twin.archiver().failed_count >= 1, 60, "standby B's push of its history file to fail")
    twin.wait_for_log(r"^HINT: ")
    history_after_twin = archive.head("00000002.history")

    # 6. Point-in-time recovery from timeline 1 backups.
    _recover_from_backup(latest, recovery_target_timeline="latest")
    _recover_from_backup(
        at_target, recovery_target_timeline="1", recovery_target_name=TARGET, recovery_target_action="promote"
    )
    for node in (latest, at_target):
        node.wait_for_log(r"database system is ready to accept connections", timeout=120)

    # 7. A copy of the primary's data directory started as a second primary: no recovery.signal, timeline 1.
    copy_etags_before = archive.etags()
    copy.start()
    _insert(copy, "written by the copy")
    copy.switch_wal()
    wait_for(lambda: copy.archiver().failed_count >= 1, 60, "the copy's push to fail")
    copy_etags_after = archive.etags()

    return Story(
        archive, primary, standby, twin, latest, at_target, copy, needed, primary_wal_before_reconnect,
        reconnect_log, standby_pids, (receiver, state), items, standby_failed_before_promotion, load_segments,
        switch_lsn, promotion_log, partial_files, gets, history_before_twin, history_after_twin, copy_etags_before,
        copy_etags_after,
    )  # fmt: skip


def pushes(log: str, name: str) -> list[str]:
    """What each `walbucket push` of ``name`` in a server log answered: 'archived ...', 'already archived ...',
    'ERROR: ...'."""
    return re.findall(rf"^walbucket push {re.escape(name)}: (.*)$", log, re.MULTILINE)


def restored(log: str, name: str) -> bool:
    return re.search(rf"^walbucket get {re.escape(name)}: restored ", log, re.MULTILINE) is not None


def numbers(names: list[WalName]) -> list[int]:
    return [w.segment.number(SEG_SIZE) for w in names if w.segment is not None]


def markers(node: PgCluster) -> list[str]:
    return [note for note in node.scalar(MARKERS_SQL).split(",") if note]


# --- 1. a standby retrying from the archive --------------------------------------------------------------------


def test_a_standby_catches_up_from_the_archive_on_wal_its_primary_recycled_then_streams_again(story: Story) -> None:
    log = story.reconnect_log
    before = story.primary_wal_before_reconnect
    assert story.needed not in before, "the primary must have recycled the needed segment before A reconnects"
    assert any(parse_wal_name(n) for n in before), before
    # The same running server: its wal receiver failed, the startup process turned to restore_command, then streamed.
    assert story.standby_pids[0] is not None and story.standby_pids[0] == story.standby_pids[1], story.standby_pids
    assert not re.search(r"starting PostgreSQL|received \w+ shutdown request|database system is shut down", log)
    lost = log.index("could not connect to the primary server")
    restore = re.search(rf"^walbucket get {story.needed}: restored 16\.0 MiB from .* stored in ", log, re.MULTILINE)
    assert restore is not None and restore.start() > lost, story.standby.log_tail(80)
    assert f'restored log file "{story.needed}" from archive' in log
    assert re.search(r"started streaming WAL from primary at \S+ on timeline 1", log[restore.end() :]), (
        "the standby streams again after the archive"
    )
    assert story.streaming_again == (f"streaming,{story.primary.port}", "streaming"), story.streaming_again
    on_primary, on_standby = story.items
    assert on_primary == on_standby and on_primary.startswith("3997:"), story.items


# --- 2. promotion --------------------------------------------------------------------------------------------------


def test_promotion_archives_the_history_file_and_the_old_timelines_partial_with_kinds_and_tags(story: Story) -> None:
    archive, standby = story.archive, story.standby
    system_id = str(story.primary.system_id())
    assert standby.timeline() == 2 and not standby.in_recovery()

    history = archive.head("00000002.history")
    assert history is not None
    assert archive.key("00000002.history") == f"{PREFIX}/history/00000002.history"
    assert history["metadata"]["walbucket-sha256"] == sha256_file(standby.wal_dir / "00000002.history")
    assert archive.tags("00000002.history") == {
        "walbucket-kind": "history", "walbucket-timeline": "2", "walbucket-system-id": system_id,
        "walbucket-pg-version": "15",
    }  # fmt: skip

    partial = story.switch_segment.name + ".partial"
    assert [w.name for w in archive.names(WalKind.PARTIAL)] == [partial]
    assert list(story.partial_files) == [partial], story.partial_files
    partial_head = archive.head(partial)
    assert partial_head is not None
    assert partial_head["metadata"]["walbucket-sha256"] == story.partial_files[partial]
    assert archive.key(partial) == f"{PREFIX}/partial/{partial[:16]}/{partial}"
    assert archive.tags(partial) == {
        "walbucket-kind": "partial", "walbucket-timeline": "1", "walbucket-system-id": system_id,
        "walbucket-pg-version": "15",
    }  # fmt: skip
    first_tl2 = story.switch_segment.on_timeline(2).name
    tl2 = [w.name for w in archive.names(WalKind.SEGMENT, timeline=2)]
    assert tl2 and tl2[0] == first_tl2, tl2
    for name in tl2:
        assert archive.tags(name) == {
            "walbucket-kind": "segment", "walbucket-timeline": "2", "walbucket-system-id": system_id,
            "walbucket-pg-version": "15",
        }, name  # fmt: skip


def test_writes_continue_on_timeline_2_and_are_archived(story: Story) -> None:
    assert markers(story.standby) == ["before the target", "after the target", "on timeline 2", "more on timeline 2"]
    tl2 = story.archive.names(WalKind.SEGMENT, timeline=2)
    last = story.standby.archiver().last_archived_wal
    assert tl2 and tl2[-1].name == last and len(tl2) >= 2, [w.name for w in tl2]


# --- 3. a crash right after promotion ------------------------------------------------------------------------------


def test_a_crash_right_after_promotion_loses_nothing_and_conflicts_with_nothing(story: Story) -> None:
    promotion = story.promotion_log
    assert "selected new timeline ID: 2" in promotion
    assert "received immediate shutdown request" in promotion
    assert "checkpoint complete" not in promotion, "the crash must come before the first checkpoint completes"
    log = story.standby.log_text()
    assert "crash recovery starts in timeline 1 and has target timeline 2" in log

    assert DIFFERENT not in log and not PUSH_ERROR.search(log), story.standby.log_tail(60)
    since_promotion = log[log.index("selected new timeline ID: 2") :]
    pushed = set(re.findall(r"^walbucket push (\S+): ", since_promotion, re.MULTILINE))
    status = story.standby.wal_dir / "archive_status"
    done = {p.name.removesuffix(".done") for p in status.iterdir() if p.name.endswith(".done")}
    in_archive = {w.name for kind in WalKind for w in story.archive.names(kind)}
    promoted = {"00000002.history", story.switch_segment.name + ".partial"}
    for name in promoted | pushed | {n for n in done if n.startswith("00000002")}:
        assert name in in_archive, name
    for name in promoted | pushed:
        outcomes = pushes(log, name)  # whether before the crash, after the restart, or both
        assert outcomes and all(o.startswith(PUSHED_OK) for o in outcomes), (name, outcomes)
        assert sum(o.startswith("archived ") for o in outcomes) <= 1, (name, outcomes)


# --- 4. point-in-time recovery across timelines --------------------------------------------------------------------


def test_recovery_from_a_timeline_1_backup_follows_the_history_into_timeline_2(story: Story) -> None:
    latest = story.latest
    log = latest.log_text()
    assert markers(latest) == ["before the target", "after the target", "on timeline 2", "more on timeline 2"]
    assert latest.pgbench_state() == story.standby.pgbench_state()
    assert restored(log, "00000002.history")
    assert restored(log, story.switch_segment.on_timeline(2).name)
    # The old primary's own copy of the switch segment (timeline 1, written on after the failover) is never used.
    assert f"walbucket get {story.switch_segment.name}:" not in log
    assert "selected new timeline ID: 3" in log
    assert "walbucket get 00000003.history: not in the archive" in log
    for word in ("FATAL", "PANIC", "ERROR"):
        assert word not in log, latest.log_tail()


def test_recovery_to_a_target_on_timeline_1_stops_before_the_switch(story: Story) -> None:
    at_target = story.at_target
    log = at_target.log_text()
    assert markers(at_target) == ["before the target"]
    assert f'recovery stopping at restore point "{TARGET}"' in log
    assert not re.search(r"^walbucket get 00000002[0-9A-F]{16}: ", log, re.MULTILINE), "no timeline 2 segment is read"
    assert "selected new timeline ID: 3" in log
    for word in ("FATAL", "PANIC", "ERROR"):
        assert word not in log, at_target.log_tail()


# --- 5. archive_mode = always: two archivers, one archive ----------------------------------------------------------


def test_a_primary_and_an_archiving_standby_push_the_same_segments_without_a_failure(story: Story) -> None:
    primary_log, standby_log = story.primary.log_text(), story.standby.log_text()
    assert story.primary.archiver().failed_count == 0
    assert story.standby_failed_before_promotion == 0
    for log in (primary_log, standby_log):
        assert DIFFERENT not in log and not PUSH_ERROR.search(log)
    assert "archive command failed" not in primary_log
    assert len(story.load_segments) >= 4, story.load_segments
    for name in story.load_segments:
        outcomes = pushes(primary_log, name) + pushes(standby_log, name)
        assert pushes(primary_log, name) and pushes(standby_log, name), (name, outcomes)
        assert sum(o.startswith("archived ") for o in outcomes) == 1, (name, outcomes)
        assert all(o.startswith(PUSHED_OK) for o in outcomes), (name, outcomes)


def test_the_archiving_standby_itself_pushes_every_timeline_1_segment_it_received(story: Story) -> None:
    """With archive_mode = always, A's own pushes leave no gap: from the first segment it streamed to the switch."""
    primary_log, standby_log = story.primary.log_text(), story.standby.log_text()
    start = re.search(r"started streaming WAL from primary at (\S+) on timeline 1", standby_log)
    assert start is not None, story.standby.log_tail()
    first, switch = segment_at(1, lsn(start[1])).number(SEG_SIZE), story.switch_segment.number(SEG_SIZE)
    received = [Segment.from_number(1, n, SEG_SIZE).name for n in range(first, switch)]
    assert {story.needed, *story.load_segments} <= set(received), (first, switch)
    outcomes = {name: pushes(standby_log, name) for name in received}
    assert [name for name, o in outcomes.items() if not o] == [], "every segment A received, A pushed"
    for name, by_standby in outcomes.items():
        assert all(o.startswith(PUSHED_OK) for o in by_standby), (name, by_standby)
    duplicate = PUSHED_OK[1]
    duplicates = [n for n in received if any(o.startswith(duplicate) for o in pushes(primary_log, n) + outcomes[n])]
    assert duplicates, "identical content pushed by the second server is a duplicate, not an error"


def test_the_archive_has_no_gap_on_either_timeline_after_the_promotion(story: Story) -> None:
    switch = story.switch_segment.number(SEG_SIZE)
    tl1 = numbers(story.archive.names(WalKind.SEGMENT, timeline=1))
    tl2 = numbers(story.archive.names(WalKind.SEGMENT, timeline=2))
    assert [n for n in tl1 if n < switch] == list(range(1, switch)), (switch, tl1)
    assert tl2 == list(range(switch, switch + len(tl2))), (switch, tl2)


# --- 6. split brain ------------------------------------------------------------------------------------------------


def test_a_second_node_promoted_onto_timeline_2_is_refused_and_the_archived_history_is_unchanged(story: Story) -> None:
    twin = story.twin
    assert twin.timeline() == 2
    mine, theirs = (node.wal_dir / "00000002.history" for node in (story.standby, twin))
    assert mine.read_text() != theirs.read_text(), "the two timelines 2 branch off at different points"
    log = twin.log_text()
    assert (
        "walbucket push 00000002.history: ERROR: WAL file '00000002.history' already exists in the archive with "
        "different content (exit 6)\nHINT: an old primary may still be running after a failover (split brain)"
    ) in untimed(log)
    assert "archive command failed with exit code 6" in log
    assert story.history_before_twin is not None
    assert story.history_after_twin == story.history_before_twin
    assert story.history_before_twin["metadata"]["walbucket-sha256"] == sha256_file(mine)
    stats = twin.archiver()
    assert stats.failed_count >= 1 and stats.last_failed_wal == "00000002.history" and stats.archived_count == 0
    assert (twin.wal_dir / "archive_status" / "00000002.history.ready").exists()
    assert theirs.exists()


def test_the_old_primary_archives_the_switch_segment_next_to_the_new_timelines_partial(story: Story) -> None:
    name = story.switch_segment.name
    assert pushes(story.primary.log_text(), name) and pushes(story.primary.log_text(), name)[0].startswith("archived ")
    full, partial = story.archive.head(name), story.archive.head(name + ".partial")
    assert full is not None and partial is not None
    assert full["metadata"]["walbucket-sha256"] != partial["metadata"]["walbucket-sha256"]
    assert "old primary after the failover" in markers(story.primary)


def test_a_partial_is_restored_only_with_restore_partial_and_only_while_the_full_segment_is_absent(
    story: Story,
) -> None:
    name = story.switch_segment.name
    gets = story.gets
    full, partial = story.archive.head(name), story.archive.head(name + ".partial")
    assert full is not None and partial is not None

    off = gets["partial off"]
    assert (off.returncode, off.sha256) == (1, None) and f"walbucket get {name}: not in the archive in " in off.stderr
    on = gets["partial on"]
    assert on.returncode == 0 and f"walbucket get {name}: restored 16.0 MiB from its .partial from " in on.stderr
    assert on.sha256 == partial["metadata"]["walbucket-sha256"]
    both = gets["full on"]
    assert both.returncode == 0 and "from its .partial" not in both.stderr, both.stderr
    assert both.sha256 == full["metadata"]["walbucket-sha256"]


def test_a_copy_of_the_data_directory_started_as_a_second_primary_is_refused_on_timeline_1(story: Story) -> None:
    copy = story.copy
    stats = copy.archiver()
    assert stats.failed_count >= 1 and stats.archived_count == 0
    name = stats.last_failed_wal
    assert name is not None and name.startswith("00000001"), stats
    assert story.archive.key(name) in story.copy_etags_before, "the name was archived by the primary"
    assert (
        f"walbucket push {name}: ERROR: WAL file '{name}' already exists in the archive with different content "
        "(exit 6)\nHINT: "
    ) in untimed(copy.log_text())
    assert story.copy_etags_after == story.copy_etags_before
    assert (copy.wal_dir / "archive_status" / f"{name}.ready").exists()


# --- what the product promises besides -----------------------------------------------------------------------------


def test_base_backups_archive_their_backup_history_files_under_backup(story: Story) -> None:
    backups = story.archive.names(WalKind.BACKUP)
    assert len(backups) == 5, backups
    for wal in backups:
        assert story.archive.key(wal.name) == f"{PREFIX}/backup/{wal.name[:16]}/{wal.name}"
        assert story.archive.tags(wal.name)["walbucket-kind"] == "backup"
        assert pushes(story.primary.log_text(), wal.name)[0].startswith("archived ")
