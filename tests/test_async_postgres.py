"""Asynchronous mode end to end with a real PostgreSQL 15: archiving under pgbench load, then a point-in-time
recovery whose restore_command is answered from the prefetch spool.

One scenario, run once for the module, then examined by several tests:

1. a primary archives with ``walbucket push %p`` and ``WALBUCKET_ASYNC=on``: the command asks the data directory's
   worker, which pushes the other ready segments ahead, and answers later pushes from its acknowledgements;
2. a base backup without WAL (``-X none``), pgbench -i and a pgbench run, a marker row and a restore point, more
   load, and the last segment switched out and archived;
3. the backup is recovered to the restore point with ``walbucket get %f %p`` in async mode: the worker prefetches
   the next segments, and the following gets hand them over from the spool.

The workers run as the server user, detached; the scenario stops the servers, then kills each worker by the PID
in its spool's lock file.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab_pg import ArchiverStats, PgCluster, PgLab, archive_command, restore_command
from lab_s3 import MotoServer
from walbucket.core.keylayout import KeyLayout
from walbucket.core.walname import WalKind
from walbucket.spooler.spool import Spool

pytestmark = pytest.mark.postgres

PREFIX = "async/cluster-a"
RESTORE_POINT = "walbucket-async-target"
from walfactory import SEG_SIZE, segment_names, segment_of  # noqa: E402

FIRST_SEGMENT = "000000010000000000000001"
LOOKAHEAD = 4


@dataclass(frozen=True)
class Scenario:
    primary: PgCluster
    restored: PgCluster  # the backup, recovered to the restore point with async get
    archiver: ArchiverStats
    keys: frozenset[str]
    acks_left: tuple[str, ...]  # acknowledgements in the primary's spool when archiving was done
    backup_start_segment: str
    target_segment: str
    state_at_target: tuple[str, ...]
    state_at_end: tuple[str, ...]


def _backup_start_segment(backup_label: str) -> str:
    match = re.search(r"^START WAL LOCATION: \S+ \(file ([0-9A-F]{24})\)$", backup_label, re.MULTILINE)
    assert match is not None, backup_label
    return match[1]


def _list_keys(moto_server: MotoServer, bucket: str) -> frozenset[str]:
    pages = moto_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)  # type: ignore[attr-defined]
    return frozenset(obj["Key"] for page in pages for obj in page.get("Contents", []))


def _kill_worker(spool: Spool) -> None:
    """SIGKILL the worker whose PID is in this spool's lock file, if that process is a walbucket worker."""
    try:
        pid = int(spool.lock_path.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if b"walbucket" in argv and b"worker" in argv:
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def scenario(moto_server: MotoServer) -> Iterator[Scenario]:
    bucket = f"wb-async-e2e-{os.getpid()}"
    moto_server.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    env = {
        **moto_server.env(bucket, PREFIX),
        "WALBUCKET_RETRY_BUDGET": "20",
        "WALBUCKET_ASYNC": "on",
        "WALBUCKET_ASYNC_LOOKAHEAD": str(LOOKAHEAD),
        "WALBUCKET_ASYNC_IDLE_EXIT": "10",
    }
    with PgLab(env=env, keep=bool(os.environ.get("WALBUCKET_KEEP_LAB"))) as lab:
        spool_dir = Path(lab.env["WALBUCKET_STATE_DIR"]) / "spool"  # the default: <state_dir>/spool
        primary = lab.cluster("primary")
        restored = lab.cluster("restored")

        def spools() -> list[Spool]:  # a spool is named by its data directory's inode: only once that exists
            return [Spool.for_data_dir(spool_dir, n.data_dir, "") for n in (primary, restored) if n.data_dir.exists()]

        try:
            primary.init()
            primary.configure(archive_mode=True, archive_command=archive_command())
            primary.start()
            primary.psql("CREATE TABLE marker (note text PRIMARY KEY, at timestamptz DEFAULT now())")
            primary.wait_archived(primary.switch_wal())

            restored.backup_from(primary, wal_method="none")
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
            archiver = primary.wait_archived(primary.switch_wal(), timeout=60)
            acks_left = tuple(sorted(p.name.removesuffix(".ok") for p in spools()[0].archive_dir.glob("*.ok")))
            keys = _list_keys(moto_server, bucket)

            restored.configure(archive_mode=False)  # a restored copy must not write into the primary's archive
            restored.setup_recovery(
                restore_command(), recovery_target_name=RESTORE_POINT, recovery_target_action="promote"
            )
            restored.start(timeout=90)
            restored.wait_for_log(r"database system is ready to accept connections", timeout=90)
            yield Scenario(
                primary, restored, archiver, keys, acks_left, backup_start, target_segment, state_at_target,
                state_at_end,
            )  # fmt: skip
        finally:
            lab.stop_all()  # first, so that no archive_command or restore_command starts a worker again
            for spool in spools():
                _kill_worker(spool)


def test_primary_archives_every_segment_under_load_through_the_async_worker(scenario: Scenario) -> None:
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
        assert re.search(
            rf"^walbucket push {name}: archived (16\.0 MiB as .+ via the async worker|\(stored ahead by the async "
            rf"worker\)) in ",
            log,
            re.MULTILINE,
        ), f"no async push of {name} in the log"
    stored = {wal.name for key in scenario.keys if (wal := layout.name_of(key))}
    assert set(scenario.acks_left) <= stored, "an acknowledgement of an object that is not in the bucket"


def test_recovery_with_async_get_reaches_the_restore_point_with_exactly_its_data(scenario: Scenario) -> None:
    restored = scenario.restored
    log = restored.log_text()
    assert f'recovery stopping at restore point "{RESTORE_POINT}"' in log
    assert "archive recovery complete" in log
    assert "recovery ended before configured recovery target was reached" not in log
    for word in ("FATAL", "PANIC", "ERROR"):
        assert word not in log, restored.log_tail()
    assert not restored.in_recovery()
    assert restored.timeline() == 2, "promotion at the target starts a new timeline"
    assert restored.psql("SELECT note FROM marker ORDER BY note") == [("before the target",)]
    assert restored.pgbench_state() == scenario.state_at_target
    assert scenario.state_at_target != scenario.state_at_end, "the load after the target changed the data"


def test_recovery_is_served_from_the_prefetch_spool(scenario: Scenario) -> None:
    log = scenario.restored.log_text()
    sources = dict(
        re.findall(r"^walbucket get ([0-9A-F]{24}): restored 16\.0 MiB from (the prefetch spool|the async worker) in ",
                   log, re.MULTILINE)
    )  # fmt: skip
    needed = segment_names(scenario.backup_start_segment, scenario.target_segment)
    assert len(needed) > LOOKAHEAD, "the replay crosses more segments than one look-ahead window"
    missing = [name for name in needed if name not in sources]
    assert missing == [], f"no restore of {missing} in the log"
    prefetched = [name for name in needed if sources[name] == "the prefetch spool"]
    assert prefetched, "no segment was served from the prefetch spool"
    assert sources[needed[0]] == "the async worker", "nothing asked for the first segment before recovery did"
