"""One archive, several writers, with real PostgreSQL 15 WAL: a wrong cluster, racing processes, an old primary.

A first cluster archives into the bucket and prefix. An independently initdb'd cluster pointed at the same bucket and
prefix is refused (exit 5). Sixteen ``walbucket push`` processes, run as the server user in a data directory as
PostgreSQL runs archive_command, race on one name with one real segment, then with sixteen different copies of it.
After a failover, the first cluster, as an old primary still running, is refused the segment an archiving cascading
standby stored first (exit 6). Every command goes through tools/lab_proxy.py, which makes moto's conditional writes
atomic as S3's are (moto alone lets two racing creates both win).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import untimed
from lab_pg import PgCluster, PgLab, archive_command, wait_for, walbucket_executable
from lab_proxy import FaultProxy
from lab_s3 import MotoServer
from walbucket.core.walname import Segment

pytestmark = pytest.mark.postgres

PREFIX = "ha/shared"
RACERS = 16
FIRST_SEGMENT = "000000010000000000000001"
SEG_SIZE = 16 << 20


@dataclass
class Shared:
    lab: PgLab
    client: Any
    bucket: str
    proxy_url: str
    first: PgCluster
    segment: Path  # a copy of a complete segment the first cluster wrote, outside pg_wal

    def etags(self, prefix: str = PREFIX) -> dict[str, str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix + "/")
        return {obj["Key"]: obj["ETag"] for page in pages for obj in page.get("Contents", [])}


@pytest.fixture(scope="module")
def shared(moto_server: MotoServer) -> Iterator[Shared]:
    bucket = f"wb-ha-shared-{os.getpid()}"
    client: Any = moto_server.client()
    client.create_bucket(Bucket=bucket)
    with FaultProxy(moto_server.url) as proxy:
        env = {**moto_server.env(bucket, PREFIX), "WALBUCKET_ENDPOINT_URL": proxy.url, "WALBUCKET_RETRY_BUDGET": "20"}
        with PgLab(env=env, keep=bool(os.environ.get("WALBUCKET_KEEP_LAB"))) as lab:
            first = lab.cluster("first").init()
            first.configure(archive_mode=True, archive_command=archive_command())
            first.start()
            first.psql(
                "CREATE TABLE filler AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 20000) g"
            )
            name = first.switch_wal()
            assert name == FIRST_SEGMENT
            first.wait_archived(name)
            segment = lab.give(Path(shutil.copy(first.wal_dir / name, lab.make_dir(lab.base_dir / "saved") / name)))
            yield Shared(lab, client, bucket, proxy.url, first, segment)


def _racer_dir(lab: PgLab, name: str, content: bytes) -> Path:
    """A directory laid out like a data directory, holding one WAL file in pg_wal."""
    data_dir = lab.make_dir(lab.base_dir / name)
    pg_wal = lab.make_dir(data_dir / "pg_wal")
    (pg_wal / FIRST_SEGMENT).write_bytes(content)
    lab.give(pg_wal / FIRST_SEGMENT)
    return data_dir


def _race(lab: PgLab, calls: list[tuple[Path, Mapping[str, str]]]) -> list[subprocess.CompletedProcess[str]]:
    """Start one `walbucket push pg_wal/<name>` per call at once, as the server user, in the call's directory."""
    command = [walbucket_executable(), "push", f"pg_wal/{FIRST_SEGMENT}"]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(lab.run, command, check=False, cwd=cwd, env=env) for cwd, env in calls]
        return [f.result() for f in futures]


def _get(shared: Shared, name: str, env: Mapping[str, str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    dest = shared.lab.base_dir / "restored" / f"{name}-{len(env)}-{os.urandom(4).hex()}"
    shared.lab.make_dir(dest.parent)
    command = [walbucket_executable(), "get", name, dest]
    return shared.lab.run(command, check=False, cwd=shared.first.data_dir, env=env), dest


def test_an_independent_cluster_on_the_same_bucket_and_prefix_is_refused_on_its_first_push(shared: Shared) -> None:
    before = shared.etags()
    other = shared.lab.cluster("other").init()
    try:
        other.configure(archive_mode=True, archive_command=archive_command())
        other.start()
        other.psql("CREATE TABLE t (id int)")
        other.switch_wal()
        wait_for(lambda: other.archiver().failed_count >= 1, 60, "the other cluster's push to fail")
        stats = other.archiver()
        log = other.log_text()
    finally:
        other.stop("immediate")

    ours, theirs = shared.first.system_id(), other.system_id()
    assert ours != theirs
    assert stats.archived_count == 0 and stats.last_failed_wal == FIRST_SEGMENT
    assert (
        f"walbucket push {FIRST_SEGMENT}: ERROR: WAL file '{FIRST_SEGMENT}' does not belong to this archive: "
        f"system id {theirs} differs from the archive's system id {ours} (exit 5)\n"
        "HINT: each cluster needs its own bucket or prefix"
    ) in untimed(log)
    assert "archive command failed with exit code 5" in log
    assert set(re.findall(r"^walbucket push (\S+): (\S+)", log, re.MULTILINE)) == {(FIRST_SEGMENT, "ERROR:")}
    assert shared.etags() == before
    assert f"{PREFIX}/identity.json" in before


def test_sixteen_processes_pushing_one_real_segment_upload_it_once_and_all_succeed(shared: Shared) -> None:
    prefix = f"{PREFIX}-same"
    env = {"WALBUCKET_PREFIX": prefix}
    data_dir = _racer_dir(shared.lab, "race-same", shared.segment.read_bytes())

    results = _race(shared.lab, [(data_dir, env)] * RACERS)

    assert [r.returncode for r in results] == [0] * RACERS, [r.stderr for r in results]
    lines = [r.stderr.strip() for r in results]
    assert all(len(line.splitlines()) == 1 for line in lines), lines
    assert sum(line.startswith(f"walbucket push {FIRST_SEGMENT}: archived 16.0 MiB as ") for line in lines) == 1
    duplicate = f"walbucket push {FIRST_SEGMENT}: already archived with identical content (duplicate), 16.0 MiB in "
    assert sum(line.startswith(duplicate) for line in lines) == RACERS - 1, lines
    keys = sorted(key for key in shared.etags(prefix) if "/probe/" not in key)
    assert keys == [f"{prefix}/identity.json", f"{prefix}/wal/{FIRST_SEGMENT[:16]}/{FIRST_SEGMENT}"]
    real = hashlib.sha256(shared.segment.read_bytes()).hexdigest()
    head = shared.client.head_object(Bucket=shared.bucket, Key=f"{prefix}/wal/{FIRST_SEGMENT[:16]}/{FIRST_SEGMENT}")
    assert head["Metadata"]["walbucket-sha256"] == real

    got, dest = _get(shared, FIRST_SEGMENT, env)
    assert got.returncode == 0, got.stderr
    assert dest.read_bytes() == shared.segment.read_bytes()


def test_sixteen_processes_pushing_different_content_under_one_name_have_exactly_one_winner(shared: Shared) -> None:
    prefix = f"{PREFIX}-different"
    env = {"WALBUCKET_PREFIX": prefix}
    real = shared.segment.read_bytes()
    # Sixteen would-be primaries: the real segment, each with its own last eight bytes (the page header stays valid).
    contents = [real[:-8] + i.to_bytes(8, "big") for i in range(RACERS)]
    assert len({hashlib.sha256(c).digest() for c in contents}) == RACERS
    dirs = [_racer_dir(shared.lab, f"race-different-{i}", content) for i, content in enumerate(contents)]

    results = _race(shared.lab, [(d, env) for d in dirs])

    codes = [r.returncode for r in results]
    assert sorted(codes) == [0] + [6] * (RACERS - 1), [r.stderr for r in results]
    for result in results:
        if result.returncode == 6:
            assert untimed(result.stderr) == (
                f"walbucket push {FIRST_SEGMENT}: ERROR: WAL file '{FIRST_SEGMENT}' already exists in the archive "
                "with different content (exit 6)\nHINT: an old primary may still be running after a failover (split "
                "brain), or two clusters share one prefix; the archived object was not changed and PostgreSQL keeps "
                "its file\n"
            )
    winner = hashlib.sha256(contents[codes.index(0)]).hexdigest()
    head = shared.client.head_object(Bucket=shared.bucket, Key=f"{prefix}/wal/{FIRST_SEGMENT[:16]}/{FIRST_SEGMENT}")
    assert head["Metadata"]["walbucket-sha256"] == winner

    got, dest = _get(shared, FIRST_SEGMENT, env)
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == winner


def test_a_history_file_absent_from_the_archive_is_not_available_after_one_request(
    shared: Shared, moto_server: MotoServer
) -> None:
    with FaultProxy(moto_server.url) as counting:
        got, dest = _get(shared, "0000000F.history", {"WALBUCKET_ENDPOINT_URL": counting.url})
        requests = [(r.method, r.path.split("?")[0], r.status) for r in counting.requests]

    assert got.returncode == 1, got.stderr
    assert got.stderr.startswith("walbucket get 0000000F.history: not in the archive in "), got.stderr
    assert not dest.exists()
    assert requests == [("GET", f"/{shared.bucket}/{PREFIX}/history/0000000F.history", 404)]


def test_an_old_primary_is_refused_the_switch_segment_a_cascading_archiving_standby_stored_first(
    shared: Shared,
) -> None:
    """The issue's literal case: after a failover the old primary, still running on timeline 1, completes a segment
    whose name is already archived with other content.

    With archive_mode = always, a standby that follows a timeline switch by streaming (here a cascading standby of
    the promoted one) archives the old timeline's last segment as it has it, WAL up to the switch point, under its
    full name: PostgreSQL's walreceiver marks it ready when the old timeline ends.
    """
    lab, first = shared.lab, shared.first
    new_primary = lab.cluster("new-primary").backup_from(first, wal_method="stream", write_recovery_conf=True)
    new_primary.start()
    cascade = lab.cluster("cascade").backup_from(new_primary, wal_method="stream", write_recovery_conf=True)
    cascade.configure(archive_mode="always")
    cascade.start()
    try:
        first.psql("INSERT INTO filler SELECT g, 'before the failover' FROM generate_series(1, 100) g")
        end_of_tl1 = first.current_lsn()
        for node in (new_primary, cascade):
            node.wait_replayed(end_of_tl1)
        new_primary.promote()
        high, low = (new_primary.wal_dir / "00000002.history").read_text().split()[1].split("/")
        switch = int(high, 16) << 32 | int(low, 16)
        name = Segment.from_number(1, switch // SEG_SIZE, SEG_SIZE).name  # the segment holding the switch point
        cascade.wait_for_log(rf"^walbucket push {name}: archived ")
        key = f"{PREFIX}/wal/{name[:16]}/{name}"
        before = shared.client.head_object(Bucket=shared.bucket, Key=key)

        first.psql("INSERT INTO filler SELECT g, 'old primary after the failover' FROM generate_series(1, 100) g")
        first.switch_wal()
        wait_for(lambda: first.archiver().last_failed_wal == name, 60, f"the old primary's push of '{name}' to fail")
        after = shared.client.head_object(Bucket=shared.bucket, Key=key)
        got, dest = _get(shared, name, {})
    finally:
        for node in (cascade, new_primary):
            node.stop("immediate")

    assert (
        f"walbucket push {name}: ERROR: WAL file '{name}' already exists in the archive with different content "
        "(exit 6)\nHINT: an old primary may still be running after a failover (split brain)"
    ) in untimed(first.log_text())
    assert (first.wal_dir / "archive_status" / f"{name}.ready").exists()
    assert (after["ETag"], after["Metadata"]) == (before["ETag"], before["Metadata"])
    # The archived copy is the old timeline up to the switch point; the old primary's file goes on past it.
    offset = switch % SEG_SIZE
    assert offset > 0, "the switch point is inside the segment"
    assert got.returncode == 0, got.stderr
    archived, old_primary = dest.read_bytes(), (first.wal_dir / name).read_bytes()
    assert archived[:offset] == old_primary[:offset]
    assert archived[offset:] != old_primary[offset:]
