"""show, verify, backfill and check against the archive of real PostgreSQL 15 servers and a real failover.

One story for the module: a primary archives with walbucket; a standby streams from it. The primary's archiving
then breaks (archive_command = /bin/false), so the segments it switches out stay ``.ready`` in its pg_wal while the
standby receives them by streaming. The primary dies (immediate stop) and the standby is promoted to timeline 2,
archiving its history file, the ``.partial`` of timeline 1 and its own segments. The archive now lacks the end of
timeline 1: exactly what ``verify`` must report and ``backfill`` from the old primary's pg_wal must repair.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from conftest import run_walbucket
from lab_pg import PGBIN, PgCluster, PgLab, archive_command, wait_for
from lab_s3 import MotoServer
from walbucket.admin.check import psql_switch_wal

pytestmark = pytest.mark.postgres

PREFIX = "admin/cluster"


@dataclass(frozen=True)
class Failover:
    env: dict[str, str]
    old: PgCluster  # the old primary, stopped, with unarchived segments in its pg_wal
    new: PgCluster  # the promoted standby, primary of timeline 2
    unarchived: list[str]  # what the old primary left .ready: segments, and the base backup's .backup file

    @property
    def segments(self) -> list[str]:
        return [name for name in self.unarchived if len(name) == 24]

    history: str  # 00000002.history as the new primary wrote it


@pytest.fixture(scope="module")
def failover(moto_server: MotoServer) -> Iterator[Failover]:
    bucket = f"wb-admin-{os.getpid()}"
    moto_server.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    env = {**moto_server.env(bucket, PREFIX), "WALBUCKET_RETRY_BUDGET": "20"}
    with PgLab(env=env, keep=bool(os.environ.get("WALBUCKET_KEEP_LAB"))) as lab:
        old = lab.cluster("old").init()
        old.configure(archive_mode=True, archive_command=archive_command())
        old.start()
        old.psql("CREATE TABLE t (n int)")
        old.wait_archived(old.switch_wal())
        new = lab.cluster("new").backup_from(old, wal_method="stream", write_recovery_conf=True)
        new.configure(archive_mode=True, archive_command=archive_command())
        new.start()

        old.configure(archive_command="/bin/false")
        old.psql("SELECT pg_reload_conf()")
        for _ in range(3):
            old.psql("INSERT INTO t SELECT generate_series(1, 10000)")
            old.switch_wal()
        wait_for(lambda: old.archiver().failed_count > 0, 30, "the old primary's archiving to fail")
        new.wait_replayed(old.current_lsn())
        old.stop("immediate")
        status = old.wal_dir / "archive_status"
        unarchived = sorted(p.name.removesuffix(".ready") for p in status.glob("*.ready"))
        assert len([name for name in unarchived if len(name) == 24]) >= 3, unarchived

        new.promote()
        new.psql("INSERT INTO t VALUES (1)")
        new.wait_archived(new.switch_wal())
        history = (new.wal_dir / "00000002.history").read_text()
        yield Failover({**env, "HOME": str(lab.home)}, old, new, unarchived, history)


def walbucket_json(args: list[str], failover: Failover) -> tuple[int, dict[str, object], str]:
    result = run_walbucket([*args, "--json"], failover.env)
    return result.returncode, json.loads(result.stdout), result.stderr


def test_show_follows_the_real_timelines(failover: Failover) -> None:
    code, doc, stderr = walbucket_json(["show"], failover)
    assert code == 0, stderr
    parent, switch_lsn, _reason = failover.history.splitlines()[-1].split("\t")
    timelines = doc["timelines"]
    assert isinstance(timelines, list)
    assert [(t["timeline"], t["parent"], t["switch_lsn"]) for t in timelines] == [
        (1, None, None), (2, int(parent), switch_lsn)
    ]  # fmt: skip
    assert timelines[0]["first"] == "000000010000000000000001"
    assert [f["name"] for f in doc["history_files"]] == ["00000002.history"]  # type: ignore[attr-defined]
    # the promotion leaves a .partial only when timeline 2 begins inside a segment, not on a segment boundary
    assert len(doc["partials"]) == (0 if int(switch_lsn.split("/")[1], 16) % (16 << 20) == 0 else 1)  # type: ignore[arg-type]


def test_verify_finds_the_old_primarys_gap_and_backfill_closes_it(failover: Failover) -> None:
    code, doc, stderr = walbucket_json(["verify"], failover)
    assert code == 11, stderr
    findings = doc["findings"]
    assert isinstance(findings, list)
    assert [(f["code"], f["objects"]) for f in findings] == [("timeline-end-gap", failover.segments)]

    code, dry, stderr = walbucket_json(["backfill", str(failover.old.wal_dir), "--dry-run"], failover)
    files = dry["files"]
    assert isinstance(files, list)
    assert code == 0, stderr
    assert sorted(f["name"] for f in files if f["outcome"] == "would-upload") == failover.unarchived

    code, done, stderr = walbucket_json(["backfill", str(failover.old.wal_dir)], failover)
    assert code == 0, stderr
    files = done["files"]
    assert isinstance(files, list)
    assert sorted(f["name"] for f in files if f["outcome"] == "uploaded") == failover.unarchived
    assert {f["outcome"] for f in files} <= {"uploaded", "duplicate", "skipped"}

    code, doc, stderr = walbucket_json(["verify", "--deep"], failover)
    assert (code, doc["findings"]) == (0, []), stderr


def test_check_against_the_new_primary_switches_wal_and_sees_it_archived(failover: Failover) -> None:
    new = failover.new
    args = ["check", "--pgdata", str(new.data_dir), "--dsn", new.conninfo(), "--psql", str(PGBIN / "psql")]
    code, doc, stderr = walbucket_json([*args, "--timeout", "60"], failover)
    assert code == 0, stderr
    items = doc["items"]
    assert isinstance(items, list)
    assert {item["name"]: item["status"] for item in items} == {
        "settings": "OK", "credentials": "OK", "bucket reachable": "OK", "tags on upload": "OK",
        "checksum header": "WARN", "conditional multipart completion": "OK", "write with tags (s3:PutObject)": "OK",
        "read (s3:GetObject)": "OK", "head (s3:GetObject)": "OK", "list (s3:ListBucket)": "OK",
        "read tags (s3:GetObjectTagging)": "OK", "conditional writes": "OK", "archive identity": "OK",
        "local cluster": "OK", "archiving": "OK",
    }  # fmt: skip
    assert items[-1]["detail"].startswith("'00000002")

    # an idle server: without the record written first, pg_switch_wal() switches nothing and names an old segment
    first = psql_switch_wal(str(PGBIN / "psql"), new.conninfo())
    second = psql_switch_wal(str(PGBIN / "psql"), new.conninfo())
    assert first.startswith("00000002") and second > first

    code, doc, _ = walbucket_json(["check", "--pgdata", str(failover.old.data_dir)], failover)
    assert code == 0, "the old primary is the same cluster: same system id"
