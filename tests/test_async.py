"""Asynchronous mode through the walbucket executable, without PostgreSQL.

Each test builds a fake data directory (``pg_wal/`` with synthetic segments and ``pg_wal/archive_status/*.ready``)
and runs ``walbucket push pg_wal/NAME`` and ``walbucket get NAME pg_wal/RECOVERYXLOG`` in it, as PostgreSQL would,
with ``WALBUCKET_ASYNC=on``. The commands start the data directory's worker on their own; every test kills the
workers it caused (by the PID in the spool's lock file, after checking /proc that it is that worker) when it ends.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import WALBUCKET, run_walbucket, untimed
from lab_pg import wait_for
from lab_proxy import FaultProxy
from lab_s3 import MotoServer, free_port
from walbucket.core.fingerprint import settings_fingerprint
from walbucket.core.keylayout import KeyLayout
from walbucket.core.walname import parse_wal_name
from walbucket.spooler.spool import Spool
from walfactory import SEG_SIZE, SYSTEM_ID, segment_bytes

OTHER_SYSTEM_ID = 7_400_000_000_000_000_002
LAYOUT = KeyLayout("test")  # wb_env's prefix
TEMP_SUFFIX = ".walbucket-tmp"
HEAVY_MODULES = ("boto3", "botocore", "s3transfer")


def seg(number: int) -> str:
    """The name of segment ``number`` of timeline 1 (16 MiB segments)."""
    return f"00000001{number >> 8:08X}{number & 0xFF:08X}"


def key_of(name: str) -> str:
    wal = parse_wal_name(name)
    assert wal is not None, name
    return LAYOUT.key(wal)


# --- the fake cluster and its worker ------------------------------------------------------------------------------


def worker_processes(data_dir: Path) -> list[int]:
    """PIDs of live 'walbucket worker' processes whose working directory is ``data_dir`` (zombies excluded)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"walbucket" in argv and b"worker" in argv and cwd == str(data_dir.resolve()):
            pids.append(int(entry.name))
    return sorted(pids)


@dataclass
class Cluster:
    """A fake data directory, the environment its archive_command and restore_command run with, and its spool."""

    data_dir: Path
    env: dict[str, str]
    spool: Spool

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "pg_wal"

    @property
    def status_dir(self) -> Path:
        return self.wal_dir / "archive_status"

    def ready(self, name: str, data: bytes | None = None, **segment: Any) -> Path:
        """Write a segment into pg_wal and mark it ready, as PostgreSQL does when it finishes one."""
        path = self.wal_dir / name
        path.write_bytes(segment_bytes(name, **segment) if data is None else data)
        (self.status_dir / f"{name}.ready").touch()
        return path

    def done(self, name: str) -> None:
        """Rename NAME.ready to NAME.done, as PostgreSQL's archiver does after archive_command exits 0."""
        (self.status_dir / f"{name}.ready").rename(self.status_dir / f"{name}.done")

    def push(self, name: str) -> subprocess.CompletedProcess[str]:
        return run_walbucket(["push", f"pg_wal/{name}"], self.env, cwd=self.data_dir)

    def get(self, name: str) -> subprocess.CompletedProcess[str]:
        return run_walbucket(["get", name, "pg_wal/RECOVERYXLOG"], self.env, cwd=self.data_dir)

    @property
    def restored(self) -> Path:
        return self.wal_dir / "RECOVERYXLOG"

    def ack(self, name: str) -> Path:
        return self.spool.archive_dir / f"{name}.ok"

    def acks(self) -> list[str]:
        return sorted(p.name.removesuffix(".ok") for p in self.spool.archive_dir.glob("*.ok"))

    def prefetched(self) -> list[str]:
        """Names of the complete files in the prefetch spool (temporary files left out)."""
        return sorted(p.name for p in self.spool.restore_dir.iterdir() if not p.name.endswith(TEMP_SUFFIX))

    def lock_pid(self) -> int | None:
        try:
            return int(self.spool.lock_path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def worker_pid(self) -> int | None:
        """The PID in the lock file when that process is this data directory's live worker."""
        pid = self.lock_pid()
        return pid if pid is not None and pid in worker_processes(self.data_dir) else None

    def running_worker(self) -> int:
        return wait_for(self.worker_pid, 20, f"the worker of {self.data_dir}", interval=0.05)

    def kill_worker(self) -> int | None:
        """SIGKILL this data directory's worker (only the PID in the lock file, if it is that worker); wait for it."""
        pid = self.worker_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: pid not in worker_processes(self.data_dir), 10, f"worker {pid} to die", interval=0.05)
        return pid

    def log(self) -> str:
        try:
            return self.spool.log_path.read_text()
        except FileNotFoundError:
            return ""


@pytest.fixture
def make_cluster(wb_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``make_cluster(name="pgdata", **env)``: a new fake data directory; its worker is killed when the test ends."""
    made: list[Cluster] = []
    spool_dir = tmp_path / "spool"

    def make(name: str = "pgdata", **env: str) -> Cluster:
        data_dir = tmp_path / name
        (data_dir / "pg_wal" / "archive_status").mkdir(parents=True)
        cluster_env = {
            **wb_env,
            "WALBUCKET_ASYNC": "on",
            "WALBUCKET_SPOOL_DIR": str(spool_dir),
            "WALBUCKET_ASYNC_IDLE_EXIT": "10",  # the tests kill it; a test of idle exit sets less
            "WALBUCKET_ASYNC_WAIT": "60",  # a hang fails a test in 60 s, not in the default 120 s
            **env,
        }
        fingerprint = settings_fingerprint(cluster_env, None, None)  # the commands run with exactly this environment
        cluster = Cluster(data_dir, cluster_env, Spool.for_data_dir(spool_dir, data_dir, fingerprint))
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.kill_worker()


def stored(s3: Any, bucket: str, name: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key_of(name))
    except s3.exceptions.ClientError:
        return False
    return True


def stored_names(keys: list[str]) -> list[str]:
    return sorted(wal.name for key in keys if (wal := LAYOUT.name_of(key)) is not None)


def assert_every_ack_is_stored(cluster: Cluster, s3: Any, bucket: str) -> None:
    """An acknowledgement is a promise that the object is in the bucket: check every one of them."""
    for name in cluster.acks():
        assert stored(s3, bucket, name), f"acknowledgement of '{name}' without its object in the bucket"


def assert_private(spool: Spool) -> None:
    """Every directory of the spool is 0700 and every file (and the socket) 0600."""
    for directory in (spool.root.parent, spool.root, spool.archive_dir, spool.restore_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    files = [p for p in spool.root.rglob("*") if not p.is_dir()]
    assert files
    for path in files:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue  # handed over or consumed meanwhile
        assert mode == 0o600, f"{path} is {mode:o}"


def archive_segments(cluster: Cluster, names: list[str], s3: Any, bucket: str) -> dict[str, bytes]:
    """Mark every segment ready and push the first; the worker stores the others ahead. Return their bytes."""
    contents = {name: segment_bytes(name) for name in names}
    for name, data in contents.items():
        cluster.ready(name, data)
    result = cluster.push(names[0])
    assert result.returncode == 0, result.stderr + cluster.log()
    wait_for(lambda: all(stored(s3, bucket, name) for name in names), 30, "the look-ahead uploads")
    return contents


# --- push ---------------------------------------------------------------------------------------------------------


def test_push_exits_0_once_stored_and_the_worker_stores_the_other_ready_files_ahead(
    make_cluster: Callable[..., Cluster], s3_client: Any, bucket: str
) -> None:
    cluster = make_cluster()
    names = [seg(n) for n in range(1, 6)]
    for name in names:
        cluster.ready(name)
    ready_files = sorted(cluster.status_dir.iterdir())
    stamps = {p.name: p.stat().st_mtime_ns for p in ready_files}

    first = cluster.push(names[0])

    assert first.returncode == 0, first.stderr
    assert stored(s3_client, bucket, names[0]), "exit 0 before the object was stored"
    assert f"walbucket push {names[0]}: archived 16.0 MiB as " in first.stderr
    assert " via the async worker in " in first.stderr
    wait_for(lambda: cluster.acks() == names[1:], 30, "acknowledgements of the look-ahead uploads")
    assert_every_ack_is_stored(cluster, s3_client, bucket)
    assert_private(cluster.spool)
    # the worker reads archive_status but never renames or touches a file in it: PostgreSQL alone does
    assert sorted(cluster.status_dir.iterdir()) == ready_files
    assert {p.name: p.stat().st_mtime_ns for p in ready_files} == stamps

    cluster.done(names[0])
    for name in names[1:]:
        result = cluster.push(name)
        assert result.returncode == 0, result.stderr
        assert f"walbucket push {name}: archived (stored ahead by the async worker) in " in result.stderr
        cluster.done(name)
    assert cluster.acks() == [], "each acknowledgement answers one push and is consumed"


@pytest.mark.parametrize(
    ("fill", "code", "message"),
    [
        (b"walbucket-test-filler", 0, "already archived with identical content (duplicate), 16.0 MiB via the async "
                                      "worker in "),
        (b"other content", 6, "ERROR: WAL file '{name}' already exists in the archive with different content "
                              "(exit 6)"),
    ],
    ids=["same-bytes-new-inode", "different-bytes"],
)  # fmt: skip
def test_an_acknowledgement_does_not_answer_for_a_replaced_file_under_its_name(
    make_cluster: Callable[..., Cluster], s3_client: Any, bucket: str, fill: bytes, code: int, message: str
) -> None:
    cluster = make_cluster()
    first, second = seg(1), seg(2)
    cluster.ready(first)
    cluster.ready(second)
    assert cluster.push(first).returncode == 0
    wait_for(lambda: cluster.ack(second).exists(), 30, f"the acknowledgement of {second}")

    replacement = cluster.wal_dir / "replacement.tmp"  # a recycled or restored file: a new inode under the old name
    replacement.write_bytes(segment_bytes(second, fill=fill))
    replacement.rename(cluster.wal_dir / second)
    result = cluster.push(second)

    assert result.returncode == code, result.stderr
    assert f"walbucket push {second}: {message.format(name=second)}" in untimed(result.stderr)
    assert "stored ahead" not in result.stderr
    assert not cluster.ack(second).exists()


def test_a_failed_look_ahead_upload_is_reported_on_the_next_push_of_that_file_which_then_retries(
    make_cluster: Callable[..., Cluster], s3_client: Any, bucket: str
) -> None:
    cluster = make_cluster()
    first, second, foreign = seg(1), seg(2), seg(3)
    cluster.ready(first)
    assert cluster.push(first).returncode == 0  # alone: its upload creates the archive identity
    cluster.done(first)
    cluster.ready(second)
    cluster.ready(foreign, system_id=OTHER_SYSTEM_ID)
    error_file = cluster.spool.archive_dir / f"{foreign}.error"

    assert cluster.push(second).returncode == 0
    cluster.done(second)
    wait_for(error_file.exists, 30, f"the look-ahead upload of {foreign} to fail")
    # the worker writes the error file, then logs the failure: wait for the line, then count it
    wait_for(lambda: f"push {foreign} failed" in cluster.log(), 30, f"the worker to log the failure of {foreign}")
    assert cluster.log().count(f"push {foreign} failed") == 1

    expected = (
        f"walbucket push {foreign}: ERROR: WAL file '{foreign}' does not belong to this archive: system id "
        f"{OTHER_SYSTEM_ID} differs from the archive's system id {SYSTEM_ID} (exit 5)"
    )
    reported = cluster.push(foreign)
    assert reported.returncode == 5, reported.stderr
    assert expected in untimed(reported.stderr).splitlines()
    assert "each cluster needs its own bucket or prefix" in reported.stderr
    assert not error_file.exists(), "the error is reported once"
    assert cluster.log().count(f"push {foreign} failed") == 1, "answered from the spool, not uploaded again"

    retried = cluster.push(foreign)  # PostgreSQL calls again: the worker tries the upload again
    assert retried.returncode == 5, retried.stderr
    assert expected in untimed(retried.stderr).splitlines()
    assert cluster.log().count(f"push {foreign} failed") == 2

    cluster.ready(foreign)  # the right file appears under the name: the next retry succeeds
    fixed = cluster.push(foreign)
    assert fixed.returncode == 0, fixed.stderr
    assert f"walbucket push {foreign}: archived 16.0 MiB as " in fixed.stderr
    assert stored(s3_client, bucket, foreign)


def test_killing_the_worker_or_the_command_mid_upload_loses_nothing_and_acknowledges_only_stored_objects(
    make_cluster: Callable[..., Cluster], moto_server: MotoServer, s3_client: Any, bucket: str
) -> None:
    with FaultProxy(moto_server.url) as proxy:
        cluster = make_cluster(WALBUCKET_ENDPOINT_URL=proxy.url, WALBUCKET_COMPRESSION="none")
        names = [seg(n) for n in range(1, 9)]
        for name in names:
            cluster.ready(name)
        proxy.delay = 0.5  # every request takes half a second: the look-ahead uploads are in flight for a while

        assert cluster.push(names[0]).returncode == 0
        cluster.done(names[0])
        victim = cluster.kill_worker()
        assert victim is not None
        acknowledged = cluster.acks()
        assert len(acknowledged) < len(names) - 1, "the worker was killed with look-ahead uploads unfinished"
        assert_every_ack_is_stored(cluster, s3_client, bucket)

        proxy.delay = 0
        for name in names[1:]:  # PostgreSQL goes on with the next ready file
            result = cluster.push(name)
            assert result.returncode == 0, result.stderr
            cluster.done(name)
        successor = cluster.running_worker()
        assert successor != victim
        assert f"worker {successor} serving " in cluster.log()
        assert all(stored(s3_client, bucket, name) for name in names)
        assert_every_ack_is_stored(cluster, s3_client, bucket)

        late = seg(9)
        cluster.ready(late)
        proxy.delay = 1.0
        received = proxy.received
        command = subprocess.Popen(
            [str(WALBUCKET), "push", f"pg_wal/{late}"], cwd=cluster.data_dir, env=cluster.env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(lambda: proxy.received > received, 20, f"the worker to upload {late}", interval=0.02)
            assert command.poll() is None, "the command still waits for the worker"
        finally:
            command.kill()
            command.wait()
        proxy.delay = 0

        again = cluster.push(late)
        assert again.returncode == 0, again.stderr
        assert stored(s3_client, bucket, late)
        assert cluster.worker_pid() == successor
        assert_every_ack_is_stored(cluster, s3_client, bucket)


# --- the fast path ------------------------------------------------------------------------------------------------

_IMPORTS_PROBE = """
import json, os, sys
from walbucket.cli.main import main
code = main(sys.argv[1:], os.environ)
heavy = sorted(m for m in sys.modules if m.partition(".")[0] in {heavy!r})
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


def run_probing_imports(args: list[str], cluster: Cluster) -> tuple[int, list[str], str]:
    """Run walbucket's main in a fresh Python; return its exit code, the heavy modules it imported, and stderr."""
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTS_PROBE.format(heavy=set(HEAVY_MODULES)), *args],
        cwd=cluster.data_dir, env=cluster.env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    return report["code"], report["heavy"], result.stderr


def test_the_fast_paths_of_push_and_get_import_neither_boto3_nor_botocore(
    make_cluster: Callable[..., Cluster], s3_client: Any, bucket: str
) -> None:
    cluster = make_cluster(WALBUCKET_ASYNC_LOOKAHEAD="2")
    names = [seg(n) for n in range(1, 4)]
    contents = archive_segments(cluster, names, s3_client, bucket)
    wait_for(lambda: cluster.ack(names[1]).exists(), 30, f"the acknowledgement of {names[1]}")

    code, heavy, stderr = run_probing_imports(["push", f"pg_wal/{names[1]}"], cluster)
    assert (code, heavy) == (0, []), stderr
    assert "stored ahead by the async worker" in stderr

    code, heavy, stderr = run_probing_imports(["push", f"pg_wal/{names[2]}"], cluster)
    assert (code, heavy) == (0, []), stderr  # answered by an acknowledgement or by the worker: neither imports boto3

    assert cluster.get(names[0]).returncode == 0
    wait_for(lambda: names[1] in cluster.prefetched(), 30, f"the prefetch of {names[1]}")
    code, heavy, stderr = run_probing_imports(["get", names[1], "pg_wal/RECOVERYXLOG"], cluster)
    assert (code, heavy) == (0, []), stderr
    assert "from the prefetch spool" in stderr
    assert cluster.restored.read_bytes() == contents[names[1]]

    worker = cluster.running_worker()
    code, heavy, stderr = run_probing_imports(["get", seg(40), "pg_wal/RECOVERYXLOG"], cluster)
    assert (code, heavy) == (1, []), stderr
    assert f"walbucket get {seg(40)}: not in the archive in " in stderr
    assert cluster.worker_pid() == worker


def test_a_settings_file_setup_is_answered_by_the_fast_path_without_the_full_command_line(
    make_cluster: Callable[..., Cluster], s3_client: Any, bucket: str, tmp_path: Path
) -> None:
    config = tmp_path / "walbucket.toml"
    config.write_text(
        f"# as docs/async.md shows it\nasync = true\nspool_dir = '{tmp_path / 'spool'}'  # private\nasync_wait = 60\n"
    )
    cluster = make_cluster(WALBUCKET_CONFIG=str(config))
    for name in ("WALBUCKET_ASYNC", "WALBUCKET_SPOOL_DIR", "WALBUCKET_ASYNC_WAIT"):
        del cluster.env[name]  # from the file only (an empty variable would unset the file's setting)
    names = [seg(n) for n in range(1, 4)]
    archive_segments(cluster, names, s3_client, bucket)
    wait_for(lambda: cluster.ack(names[1]).exists(), 30, f"the acknowledgement of {names[1]}")

    for name, answer in [(names[1], "stored ahead by the async worker"), (names[2], "")]:
        result = subprocess.run(
            [sys.executable, "-X", "importtime", str(WALBUCKET), "push", f"pg_wal/{name}"],
            cwd=cluster.data_dir, env=cluster.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        imported = {line.rpartition("|")[2].strip() for line in result.stderr.splitlines() if "|" in line}
        assert "walbucket.cli.entry" in imported
        assert not imported & {"walbucket.cli.main", "walbucket.core.settings", "argparse", "tomllib", *HEAVY_MODULES}
        assert f"walbucket push {name}: " in result.stderr and answer in result.stderr

    config.write_text(config.read_text() + "[a_table]\n")  # not flat: the full command reads it, and refuses it
    result = cluster.push(names[0])
    assert result.returncode == 3, result.stderr
    assert "unknown setting 'a_table'" in result.stderr


# --- get ----------------------------------------------------------------------------------------------------------


class _SpoolWatcher(threading.Thread):
    """Look at the prefetch spool every few milliseconds; note any file under a final name that is incomplete."""

    def __init__(self, restore_dir: Path) -> None:
        super().__init__(daemon=True)
        self.restore_dir = restore_dir
        self.stop = threading.Event()
        self.temp_names: set[str] = set()
        self.incomplete: list[tuple[str, int]] = []

    def run(self) -> None:
        while not self.stop.wait(0.002):
            for entry in os.scandir(self.restore_dir):
                if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                    self.temp_names.add(entry.name)
                    continue
                try:
                    size = entry.stat().st_size
                except FileNotFoundError:
                    continue  # handed over meanwhile
                if size != SEG_SIZE:
                    self.incomplete.append((entry.name, size))


def test_get_restores_through_the_worker_and_serves_the_next_segments_from_the_prefetch_spool(
    make_cluster: Callable[..., Cluster], s3_client: Any, bucket: str
) -> None:
    lookahead = 3
    primary = make_cluster("primary")
    names = [seg(n) for n in range(1, 7)]
    contents = archive_segments(primary, names, s3_client, bucket)
    standby = make_cluster("restored", WALBUCKET_ASYNC_LOOKAHEAD=str(lookahead))
    watcher = _SpoolWatcher(standby.spool.restore_dir)
    standby.spool.create()
    watcher.start()
    try:
        first = standby.get(names[0])
        assert first.returncode == 0, first.stderr
        assert f"walbucket get {names[0]}: restored 16.0 MiB from the async worker in " in first.stderr
        assert standby.restored.read_bytes() == contents[names[0]]
        following = names[1 : 1 + lookahead]
        wait_for(lambda: standby.prefetched() == following, 30, f"the prefetch of {following}")
    finally:
        watcher.stop.set()
        watcher.join()
    assert watcher.incomplete == [], "a prefetched file appeared under its name before it was complete"
    assert not [n for n in os.listdir(standby.spool.restore_dir) if n.endswith(TEMP_SUFFIX)]
    for name in following:
        assert standby.spool.prefetched(name).read_bytes() == contents[name], f"prefetched {name} differs"
    assert_private(standby.spool)

    for name in following:
        result = standby.get(name)
        assert result.returncode == 0, result.stderr
        assert f"walbucket get {name}: restored 16.0 MiB from the prefetch spool in " in result.stderr
        assert standby.restored.read_bytes() == contents[name]
        assert stat.S_IMODE(standby.restored.stat().st_mode) == 0o600
        assert name not in standby.prefetched(), "handed over, not copied"

    # Each hand-over from the spool moves the window on, so recovery never runs it dry: the segment past the
    # first window was fetched ahead too.
    wait_for(lambda: standby.spool.prefetched(names[1 + lookahead]).exists(), 30, "the window to move on")
    beyond = standby.get(names[1 + lookahead])
    assert beyond.returncode == 0, beyond.stderr
    assert f"walbucket get {names[1 + lookahead]}: restored 16.0 MiB from the prefetch spool in " in beyond.stderr
    assert standby.restored.read_bytes() == contents[names[1 + lookahead]]


def test_the_prefetch_window_starts_at_four_and_doubles_when_recovery_catches_up_with_it(
    make_cluster: Callable[..., Cluster], moto_server: MotoServer, s3_client: Any, bucket: str
) -> None:
    primary = make_cluster("primary")
    names = [seg(n) for n in range(1, 17)]
    archive_segments(primary, names, s3_client, bucket)
    with FaultProxy(moto_server.url) as proxy:
        standby = make_cluster("restored", WALBUCKET_ENDPOINT_URL=proxy.url, WALBUCKET_ASYNC_LOOKAHEAD="16")
        assert standby.get(names[0]).returncode == 0
        wait_for(lambda: standby.prefetched() == names[1:5], 30, "the first window of four")
        fetched = proxy.received
        for name in names[1:4]:  # recovery takes them from the spool; each moves the window on by one
            assert standby.get(name).returncode == 0
        wait_for(lambda: standby.prefetched() == names[4:8], 30, "the window moved on by three")
        assert proxy.received == fetched + 3, "only the window of four is fetched, not async_lookahead"

        proxy.delay = 1.0  # the next fetches are slow: recovery catches up with a prefetch in flight
        assert standby.get(names[4]).returncode == 0  # from the spool: queues names[8]
        for name in names[5:8]:
            assert standby.get(name).returncode == 0
        waited = standby.get(names[8])  # still in flight: the command waits for it, and the window doubles
        assert waited.returncode == 0, waited.stderr
        assert "from the async worker" in waited.stderr
        proxy.delay = 0
        wait_for(lambda: standby.prefetched() == names[9:16], 30, "a window of eight (seven are archived)")


def test_a_prefetch_never_takes_a_partial_only_the_requested_segment_may(
    make_cluster: Callable[..., Cluster], s3_client: Any, bucket: str
) -> None:
    primary = make_cluster("primary")
    first, second = seg(1), seg(2)
    archive_segments(primary, [first], s3_client, bucket)
    partial = primary.ready(second + ".partial", segment_bytes(second, fill=b"partial"))
    assert primary.push(partial.name).returncode == 0
    standby = make_cluster("restored", WALBUCKET_RESTORE_PARTIAL="on", WALBUCKET_ASYNC_LOOKAHEAD="2")
    assert standby.get(first).returncode == 0  # and the worker prefetches the second: only its .partial exists
    worker = standby.running_worker()
    primary.ready(second, segment_bytes(second, fill=b"complete"))  # the old primary archives the full segment
    assert primary.push(second).returncode == 0
    assert standby.prefetched() == [], "a prefetch took the .partial while the full segment was missing"

    restored = standby.get(second)
    assert restored.returncode == 0, restored.stderr
    assert standby.restored.read_bytes() == segment_bytes(second, fill=b"complete")
    assert standby.worker_pid() == worker

    third = seg(3)
    partial = primary.ready(third + ".partial", segment_bytes(third, fill=b"partial"))
    assert primary.push(partial.name).returncode == 0
    taken = standby.get(third)  # requested, and only the .partial is archived: restore_partial answers it
    assert taken.returncode == 0, taken.stderr
    assert standby.restored.read_bytes() == segment_bytes(third, fill=b"partial")


def test_get_of_a_name_not_in_the_archive_exits_1_through_the_worker_and_restores_nothing(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()

    result = cluster.get(seg(1))

    assert result.returncode == 1, result.stderr
    assert f"walbucket get {seg(1)}: not in the archive in " in result.stderr
    assert not cluster.restored.exists()
    assert cluster.running_worker() == cluster.lock_pid()
    assert cluster.prefetched() == []


def test_a_damaged_object_exits_210_through_the_worker_and_a_failed_prefetch_is_never_served(
    make_cluster: Callable[..., Cluster], s3_client: Any, bucket: str
) -> None:
    cluster = make_cluster(WALBUCKET_COMPRESSION="none", WALBUCKET_ASYNC_LOOKAHEAD="2")
    names = [seg(n) for n in range(1, 4)]
    archive_segments(cluster, names, s3_client, bucket)
    key = key_of(names[1])
    metadata = s3_client.head_object(Bucket=bucket, Key=key)["Metadata"]
    damaged = bytearray(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    damaged[-1] ^= 0xFF
    s3_client.put_object(Bucket=bucket, Key=key, Body=bytes(damaged), Metadata=metadata)

    assert cluster.get(names[0]).returncode == 0
    wait_for(lambda: names[2] in cluster.prefetched(), 30, f"the prefetch of {names[2]}")
    assert names[1] not in cluster.prefetched()

    result = cluster.get(names[1])

    assert result.returncode == 210, result.stderr
    assert (
        f"walbucket get {names[1]}: ERROR: WAL file '{names[1]}' from '{key}' fails its checksum "
        "(SHA-256 or size differ from the metadata) (exit 210)"
    ) in untimed(result.stderr).splitlines()
    assert cluster.restored.read_bytes() == segment_bytes(names[0]), "the earlier file is left as it was"
    assert names[1] not in cluster.prefetched()


@pytest.mark.parametrize(
    ("command", "standby", "code"),
    [("push", False, 8), ("get", False, 208), ("get", True, 8)],
    ids=["push", "get-primary", "get-standby"],
)
def test_an_unreachable_endpoint_keeps_its_exit_codes_through_the_worker(
    make_cluster: Callable[..., Cluster], command: str, standby: bool, code: int
) -> None:
    cluster = make_cluster(WALBUCKET_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", WALBUCKET_RETRY_BUDGET="1")
    name = seg(1)
    if standby:
        (cluster.data_dir / "standby.signal").touch()
    if command == "push":
        cluster.ready(name)

    result = cluster.push(name) if command == "push" else cluster.get(name)

    assert result.returncode == code, result.stderr + cluster.log()
    error = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(error) == 1 and error[0].startswith(f"walbucket {command} {name}: ERROR: storage unavailable for '")
    assert "after retrying for 1s: EndpointConnectionError on '" in error[0]
    assert untimed(error[0]).endswith(f"(exit {code})")
    assert "raise retry_budget" in result.stderr
    assert cluster.worker_pid() is not None, "the worker serves, and reports the outage per request"
    assert not cluster.restored.exists()


# --- the worker's lifetime ----------------------------------------------------------------------------------------


def run_all(calls: list[tuple[list[str], Mapping[str, str], Path]]) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: run_walbucket(*call), calls))


def test_concurrent_commands_share_one_worker_per_data_directory(
    make_cluster: Callable[..., Cluster], s3_client: Any, bucket: str
) -> None:
    cluster = make_cluster()
    names = [seg(n) for n in range(1, 5)]
    for name in names:
        cluster.ready(name)

    results = run_all([(["push", f"pg_wal/{name}"], cluster.env, cluster.data_dir) for name in names])

    assert [r.returncode for r in results] == [0] * len(names), [r.stderr for r in results]
    assert all(stored(s3_client, bucket, name) for name in names)
    worker = cluster.running_worker()
    wait_for(lambda: worker_processes(cluster.data_dir) == [worker], 20, "the surplus workers to exit")
    assert cluster.log().count(" serving ") == 1, cluster.log()


def test_the_worker_exits_when_idle_and_removes_its_socket_and_prefetched_files(
    make_cluster: Callable[..., Cluster], s3_client: Any, bucket: str
) -> None:
    cluster = make_cluster(WALBUCKET_ASYNC_IDLE_EXIT="2", WALBUCKET_ASYNC_LOOKAHEAD="2")
    names = [seg(n) for n in range(1, 4)]
    archive_segments(cluster, names, s3_client, bucket)
    assert cluster.get(names[0]).returncode == 0
    worker = cluster.running_worker()
    assert cluster.spool.socket_path.exists()

    wait_for(lambda: worker not in worker_processes(cluster.data_dir), 20, f"worker {worker} to exit when idle")

    assert f"worker {worker} idle for 2s: exiting" in cluster.log()
    assert not cluster.spool.socket_path.exists()
    assert os.listdir(cluster.spool.restore_dir) == [], "no prefetched file outlives the worker that verified it"


# --- a settings change ---------------------------------------------------------------------------------------------


def test_after_a_prefix_change_push_stores_under_the_new_prefix_not_from_the_old_workers_acknowledgement(
    make_cluster: Callable[..., Cluster], s3_client: Any, bucket: str
) -> None:
    cluster = make_cluster()
    names = [seg(n) for n in range(1, 4)]
    for name in names:
        cluster.ready(name)
    assert cluster.push(names[0]).returncode == 0
    wait_for(lambda: cluster.acks() == names[1:], 30, "acknowledgements of the look-ahead uploads")
    cluster.done(names[0])
    moved = {**cluster.env, "WALBUCKET_PREFIX": "moved"}

    result = run_walbucket(["push", f"pg_wal/{names[1]}"], moved, cwd=cluster.data_dir)

    assert result.returncode == 0, result.stderr
    assert "stored ahead" not in result.stderr, "answered from an acknowledgement of the old prefix"
    s3_client.head_object(Bucket=bucket, Key=f"moved/wal/{names[1][:16]}/{names[1]}")  # raises if absent
    assert f"walbucket push {names[1]}: archived 16.0 MiB as " in result.stderr


def test_after_a_prefix_change_get_never_hands_over_a_file_prefetched_under_the_old_prefix(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    names = [seg(n) for n in range(1, 4)]
    for name in names:
        cluster.ready(name)
        assert cluster.push(name).returncode == 0
        cluster.done(name)
    assert cluster.get(names[0]).returncode == 0
    cluster.restored.unlink()
    wait_for(lambda: names[1] in cluster.prefetched(), 30, f"the prefetch of {names[1]}")
    moved = {**cluster.env, "WALBUCKET_PREFIX": "moved"}  # an empty archive

    result = run_walbucket(["get", names[1], "pg_wal/RECOVERYXLOG"], moved, cwd=cluster.data_dir)

    assert result.returncode == 1, result.stderr
    assert f"walbucket get {names[1]}: not in the archive in " in result.stderr
    assert not cluster.restored.exists()
