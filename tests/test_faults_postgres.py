"""A point-in-time recovery with a real PostgreSQL 15 through a faulty endpoint: it must stop, never promote early.

One archive, built once for the module: a primary archives with ``walbucket push %p`` straight into moto under
pgbench load, after two base backups without WAL (``-X none``, one per mode); a marker row and a restore point; more
load and a second marker row after it.

Each test recovers one backup to the restore point (``recovery_target_action = promote``) with ``walbucket get %f
%p`` talking to moto through tools/lab_proxy.py, which answers a few GETs with 503 SlowDown, cuts one answer short
with a reset, and answers every GET of one segment in the middle of the needed range with a ``404 page not found``
that is not S3's (an ingress's default backend): not the archive's word that the segment is absent.

Expected: the startup process stops with FATAL because restore_command exited above 125 on that segment; the server
never promotes (ending recovery there would lose every transaction after it). Once the fault is gone, a new start
recovers to the restore point, promotes, and has exactly the data of the target.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab_pg import PgCluster, PgLab, archive_command, restore_command, wait_for
from lab_proxy import FaultProxy
from lab_s3 import MotoServer

pytestmark = pytest.mark.postgres

PREFIX = "faults/cluster-a"
RESTORE_POINT = "walbucket-faults-target"
from walfactory import segment_names  # noqa: E402

MODES = ("sync", "async")
READY = "database system is ready to accept connections"  # a primary: promoted (read-only is another message)
SHUT_DOWN = "database system is shut down"


@dataclass(frozen=True)
class Archive:
    lab: PgLab
    primary: PgCluster
    backups: dict[str, PgCluster]  # one base backup per mode, not started yet
    needed: list[str]  # segments recovery must replay after both backups ended, up to the restore point
    faulty: str  # the segment in the middle of them whose GETs the proxy answers with a foreign 404
    state_at_target: tuple[str, ...]
    state_at_end: tuple[str, ...]


def _worker_processes(data_dirs: list[Path]) -> list[int]:
    """PIDs of live 'walbucket worker' processes whose working directory is one of ``data_dirs``."""
    wanted = {str(d.resolve()) for d in data_dirs}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"walbucket" in argv and b"worker" in argv and cwd in wanted:
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.url) as running:
        yield running


@pytest.fixture(scope="module")
def archive(moto_server: MotoServer) -> Iterator[Archive]:
    bucket = f"wb-faults-pg-{os.getpid()}"
    moto_server.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    env = {**moto_server.env(bucket, PREFIX), "WALBUCKET_RETRY_BUDGET": "20"}
    with PgLab(env=env, keep=bool(os.environ.get("WALBUCKET_KEEP_LAB"))) as lab:
        try:
            primary = lab.cluster("primary").init()
            primary.configure(archive_mode=True, archive_command=archive_command())
            primary.start()
            primary.psql("CREATE TABLE marker (note text PRIMARY KEY, at timestamptz DEFAULT now())")
            primary.wait_archived(primary.switch_wal())

            backups = {mode: lab.cluster(f"restored-{mode}").backup_from(primary, wal_method="none") for mode in MODES}
            after_backups = primary.current_wal_file()  # both backups ended before this segment

            primary.pgbench_init(scale=5)
            primary.switch_wal()
            primary.pgbench(transactions=200, clients=4)
            primary.switch_wal()
            primary.pgbench(transactions=200, clients=4)
            primary.psql("INSERT INTO marker (note) VALUES ('before the target')")
            state_at_target = primary.pgbench_state()
            target_lsn = primary.scalar(f"SELECT pg_create_restore_point('{RESTORE_POINT}')")
            target_segment = primary.scalar(f"SELECT pg_walfile_name('{target_lsn}')")
            primary.pgbench(transactions=200, clients=4)
            primary.psql("INSERT INTO marker (note) VALUES ('after the target')")
            state_at_end = primary.pgbench_state()
            primary.wait_archived(primary.switch_wal(), timeout=60)

            needed = segment_names(after_backups, target_segment)
            assert len(needed) >= 3, f"the replay after the backups crosses too few segments: {needed}"
            faulty = needed[len(needed) // 2]
            yield Archive(lab, primary, backups, needed, faulty, state_at_target, state_at_end)
        finally:
            lab.stop_all()  # first, so that no restore_command starts a worker again
            for pid in _worker_processes([node.data_dir for node in lab.clusters]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue


def _wait_until_stopped_or_promoted(node: PgCluster, offset: int, timeout: float = 120) -> str:
    """Wait until the server started at log ``offset`` either shut down or promoted; return that part of the log."""
    pattern = re.compile(rf"{SHUT_DOWN}|{READY}")
    try:
        wait_for(lambda: pattern.search(node.log_text()[offset:]), timeout, f"{node.name} to stop or promote")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n--- {node.log_path} ---\n{node.log_tail(60)}") from None
    return node.log_text()[offset:]


@pytest.mark.parametrize("mode", MODES)
def test_recovery_through_a_faulty_endpoint_stops_instead_of_promoting_early_then_reaches_the_target(
    archive: Archive, proxy: FaultProxy, mode: str
) -> None:
    node = archive.backups[mode]
    node.env.update(WALBUCKET_ENDPOINT_URL=proxy.url, WALBUCKET_RETRY_BUDGET="5")
    if mode == "async":
        node.env.update(WALBUCKET_ASYNC="on", WALBUCKET_ASYNC_IDLE_EXIT="10", WALBUCKET_ASYNC_WAIT="60")
    node.configure(archive_mode=False)  # a restored copy must not write into the primary's archive
    node.setup_recovery(restore_command(), recovery_target_name=RESTORE_POINT, recovery_target_action="promote")
    proxy.reset()
    proxy.add_fault("slowdown", method="GET", times=3)
    proxy.add_fault("reset_response", method="GET", path_contains="/wal/", times=1)
    proxy.add_fault("foreign_404_text", method="GET", path_contains=archive.faulty)  # always
    faulty = archive.faulty

    # 1. through the faults: recovery must stop at the faulty segment, not end there and promote
    offset = len(node.log_text())
    node.start(wait=False)
    first = _wait_until_stopped_or_promoted(node, offset)
    wait_for(lambda: not node.is_running(), 30, f"{node.name} to stop")
    context = f"\n--- {node.log_path} ---\n{first[-6000:]}"
    assert READY not in first, f"recovery promoted through a faulty endpoint{context}"
    assert "archive recovery complete" not in first and "selected new timeline ID" not in first, context
    assert "recovery ended before configured recovery target was reached" not in first, (
        f"restore_command answered 'not available' for {faulty}: recovery ended early{context}"
    )
    fatal = re.search(
        rf'FATAL:  could not restore file "{faulty}" from archive: child process exited with exit code (\d+)', first
    )
    assert fatal is not None, f"the startup process did not stop on {faulty} with restore_command's failure{context}"
    assert int(fatal[1]) > 125, context
    assert re.search(rf"^walbucket get {faulty}: ERROR: .*\(exit {fatal[1]} after ", first, re.MULTILINE), context
    assert f"walbucket get {faulty}: not in the archive" not in first, context
    for name in archive.needed[: archive.needed.index(faulty)]:  # it got past the slowdowns and the reset
        assert re.search(rf"^walbucket get {name}: restored 16\.0 MiB from ", first, re.MULTILINE), (
            f"{name} was not restored before {faulty}{context}"
        )

    # 2. the fault is gone: a new start recovers to the restore point, promotes, and has exactly its data
    proxy.reset()
    offset = len(node.log_text())
    node.start(wait=False)
    second = _wait_until_stopped_or_promoted(node, offset)
    context = f"\n--- {node.log_path} ---\n{second[-6000:]}"
    assert READY in second, f"recovery did not complete once the fault was gone{context}"
    assert f'recovery stopping at restore point "{RESTORE_POINT}"' in second, context
    assert "archive recovery complete" in second, context
    assert "recovery ended before configured recovery target was reached" not in second, context
    assert re.search(rf"^walbucket get {faulty}: restored 16\.0 MiB from ", second, re.MULTILINE), context
    for word in ("FATAL", "PANIC"):
        assert word not in second, context
    assert not node.in_recovery()
    assert node.timeline() == 2, "promotion at the target starts a new timeline"
    assert node.psql("SELECT note FROM marker ORDER BY note") == [("before the target",)]
    assert node.pgbench_state() == archive.state_at_target
    assert archive.state_at_target != archive.state_at_end, "the load after the target changed the data"
