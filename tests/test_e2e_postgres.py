"""End to end with a real PostgreSQL 15: archive under pgbench load, then point-in-time recovery from the archive.

One scenario, run once for the module (about half a minute), then examined by several tests:

1. a primary archives with ``walbucket push``; a base backup is taken without WAL (``-X none``), so a restore
   needs every segment from the archive;
2. pgbench -i and a pgbench run; a marker row, the state of the pgbench tables, and a restore point;
3. more load and a second marker row after the restore point; a second base backup; a last marker row; the last
   segment is switched out and archived;
4. the first backup is restored with ``walbucket get`` to the restore point and promoted; the second is restored
   without a target, so recovery replays the whole archive and ends at the first segment the archive lacks.

The scenario runs twice: into moto's server over http, and into a Ceph 16.2 RADOS Gateway over https (the CA in
``ca_bundle``), the store walbucket has to be right about: it ignores If-None-Match on multipart completion and
refuses botocore's aws-chunked uploads over https.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import StoreEndpoint, make_endpoint
from lab_pg import ArchiverStats, PgCluster, PgLab, archive_command, restore_command
from walbucket.core.keylayout import KeyLayout
from walbucket.core.walname import WalKind, parse_wal_name

pytestmark = pytest.mark.postgres

PREFIX = "e2e/cluster-a"
RESTORE_POINT = "walbucket-e2e-target"
from walfactory import SEG_SIZE, segment_names, segment_of  # noqa: E402

FIRST_SEGMENT = "000000010000000000000001"


@dataclass(frozen=True)
class Scenario:
    primary: PgCluster
    restored: PgCluster  # the first backup, recovered to the restore point
    latest: PgCluster  # the second backup, recovered to the end of the archive
    archiver: ArchiverStats
    keys: frozenset[str]
    backup_start_segment: str
    target_segment: str
    state_at_target: tuple[str, ...]
    state_at_end: tuple[str, ...]


def _backup_start_segment(backup_label: str) -> str:
    match = re.search(r"^START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)$", backup_label, re.MULTILINE)
    assert match is not None, backup_label
    return match[1]


def _list_keys(endpoint: StoreEndpoint, bucket: str) -> frozenset[str]:
    pages = endpoint.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return frozenset(obj["Key"] for page in pages for obj in page.get("Contents", []))


def _recover(node: PgCluster, **targets: str) -> None:
    node.configure(archive_mode=False)  # a restored copy must not write into the primary's archive
    node.setup_recovery(restore_command(), **targets)
    node.start(timeout=90)


@pytest.fixture(scope="module", params=["moto", "rgw-https"])
def scenario(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    endpoint = make_endpoint(request, request.param)
    bucket = endpoint.create_bucket()
    env = {**endpoint.env(bucket, PREFIX), "WALBUCKET_RETRY_BUDGET": "20"}
    with PgLab(env=env, keep=bool(os.environ.get("WALBUCKET_KEEP_LAB"))) as lab:
        if endpoint.ca_bundle is not None:  # where the server user can read it: the gateway's directory is private
            ca_bundle = lab.give(Path(shutil.copy(endpoint.ca_bundle, lab.home / "ca.pem")))
            lab.env["WALBUCKET_CA_BUNDLE"] = str(ca_bundle)
        primary = lab.cluster("primary").init()
        primary.configure(archive_mode=True, archive_command=archive_command())
        primary.start()
        primary.psql("CREATE TABLE marker (note text PRIMARY KEY, at timestamptz DEFAULT now())")
        primary.wait_archived(primary.switch_wal())  # a broken archive fails here, not in a backup that waits for it

        restored = lab.cluster("restored").backup_from(primary, wal_method="none")
        assert not [p for p in restored.wal_dir.iterdir() if parse_wal_name(p.name)], "the backup must hold no WAL"
        backup_start = _backup_start_segment((restored.data_dir / "backup_label").read_text())

        primary.pgbench_init(scale=10)
        primary.pgbench(transactions=300, clients=4)
        primary.psql("INSERT INTO marker (note) VALUES ('before the target')")
        state_at_target = primary.pgbench_state()
        target_lsn = primary.scalar(f"SELECT pg_create_restore_point('{RESTORE_POINT}')")
        target_segment = primary.scalar(f"SELECT pg_walfile_name('{target_lsn}')")

        primary.pgbench(transactions=300, clients=4)
        primary.psql("INSERT INTO marker (note) VALUES ('after the target')")
        state_at_end = primary.pgbench_state()
        latest = lab.cluster("latest").backup_from(primary, wal_method="none")
        primary.psql("INSERT INTO marker (note) VALUES ('last')")
        archiver = primary.wait_archived(primary.switch_wal(), timeout=60)

        _recover(restored, recovery_target_name=RESTORE_POINT, recovery_target_action="promote")
        _recover(latest)
        for node in (restored, latest):
            node.wait_for_log(r"database system is ready to accept connections", timeout=90)
        yield Scenario(
            primary, restored, latest, archiver, _list_keys(endpoint, bucket), backup_start, target_segment,
            state_at_target, state_at_end,
        )  # fmt: skip


def test_primary_archives_every_segment_under_load(scenario: Scenario) -> None:
    stats = scenario.archiver
    assert stats.failed_count == 0 and stats.last_failed_wal is None
    assert stats.last_archived_wal is not None
    assert segment_of(stats.last_archived_wal).number(SEG_SIZE) >= 8, "pgbench -i -s 10 and its load fill ~10 segments"

    expected = segment_names(FIRST_SEGMENT, stats.last_archived_wal)
    layout = KeyLayout(PREFIX)
    archived = sorted(wal.name for key in scenario.keys if (wal := layout.name_of(key)) and wal.kind is WalKind.SEGMENT)
    assert archived == expected
    log = scenario.primary.log_text()
    for name in expected:
        assert f"walbucket push {name}: archived 16.0 MiB as " in log
    assert layout.identity_key in scenario.keys
    backups = sorted(key for key in scenario.keys if key.startswith(layout.kind_prefix(WalKind.BACKUP)))
    assert len(backups) == 2 and f"/{scenario.backup_start_segment}." in backups[0]


def test_restore_to_a_restore_point_has_exactly_the_data_of_the_target(scenario: Scenario) -> None:
    restored = scenario.restored
    assert not restored.in_recovery()
    assert restored.timeline() == 2, "promotion at the target starts a new timeline"
    assert restored.psql("SELECT note FROM marker ORDER BY note") == [("before the target",)]
    assert restored.pgbench_state() == scenario.state_at_target
    assert scenario.state_at_target != scenario.state_at_end, "the load after the target changed the data"
    assert scenario.primary.pgbench_state() == scenario.state_at_end


def test_recovery_replays_archived_segments_up_to_the_target_and_stops_there(scenario: Scenario) -> None:
    log = scenario.restored.log_text()
    assert f'recovery stopping at restore point "{RESTORE_POINT}"' in log
    assert "archive recovery complete" in log
    assert "recovery ended before configured recovery target was reached" not in log
    for word in ("FATAL", "PANIC", "ERROR"):
        assert word not in log, scenario.restored.log_tail()

    needed = segment_names(scenario.backup_start_segment, scenario.target_segment)
    assert len(needed) > 5, "the replay crosses segments"
    for name in needed:
        assert re.search(rf"^walbucket get {name}: restored 16\.0 MiB from .+ stored in ", log, re.MULTILINE), (
            f"no restore of {name} in the log"
        )


def test_a_history_file_absent_from_the_archive_is_answered_not_in_the_archive(scenario: Scenario) -> None:
    # At the target, PostgreSQL looks for the history file of the timeline it is about to create.
    assert "walbucket get 00000002.history: not in the archive in " in scenario.restored.log_text()


def test_recovery_without_a_target_ends_cleanly_at_the_first_segment_the_archive_lacks(scenario: Scenario) -> None:
    latest = scenario.latest
    last = scenario.archiver.last_archived_wal
    assert last is not None
    beyond = segment_of(last).next(SEG_SIZE).name
    log = latest.log_text()
    assert f"walbucket get {last}: restored 16.0 MiB from " in log
    assert f"walbucket get {beyond}: not in the archive in " in log, latest.log_tail()
    assert "archive recovery complete" in log
    for word in ("FATAL", "PANIC", "ERROR"):
        assert word not in log, latest.log_tail()
    assert not latest.in_recovery()
    assert latest.psql("SELECT note FROM marker ORDER BY note") == [
        ("after the target",),
        ("before the target",),
        ("last",),
    ]
    assert latest.pgbench_state() == scenario.state_at_end
