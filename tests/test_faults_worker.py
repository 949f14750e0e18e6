"""Asynchronous mode under faults: the worker killed or stopped mid-transfer, odd destinations, odd names.

Every case runs the real walbucket executable (conftest.run_walbucket) in a fake data directory, as PostgreSQL runs
archive_command and restore_command, with ``WALBUCKET_ASYNC=on``; the commands start the data directory's worker on
their own. Where a transfer must be caught in flight, the worker talks to moto through tools/lab_proxy.py, whose
``hold_before_forward`` / ``hold_after_store`` rules keep a request waiting until ``release()``.

The worker's PID is the one line of ``<spool_dir>/<cluster>/worker.lock`` (or of a versioned ``worker-N.lock``);
each node has a spool directory of its own, so ``<cluster>`` is its only subdirectory. Every test kills the workers
of its data directories when it ends (only live ``walbucket worker`` processes whose working directory is one of
them), and unmounts what it mounted.

Contracts checked (docs/async.md, docs/exit-codes.md):

- push exits 0 only once the object is stored; a killed worker loses nothing and overwrites nothing;
- get exits 0 only with exactly the archived bytes at DEST, 1 only when the archive has no such file, never 250
  (a bug) for a stopped worker, and never above 125 on a standby for what is an outage;
- a destination that cannot be written is 204 in both modes, whatever file system the spool is on;
- a failure line is one line: control characters of a name never reach PostgreSQL's log raw.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import run_walbucket
from lab_pg import wait_for
from lab_proxy import FaultProxy
from lab_s3 import MotoServer
from walbucket.core.keylayout import KeyLayout
from walbucket.core.walname import parse_wal_name
from walfactory import SEG_SIZE, history_file, segment_bytes

LAYOUT = KeyLayout("test")  # wb_env's prefix
DEST = "pg_wal/RECOVERYXLOG"
TEMP_SUFFIX = ".walbucket-tmp"


def seg(number: int) -> str:
    """The name of segment ``number`` of timeline 1 (16 MiB segments)."""
    return f"00000001{number >> 8:08X}{number & 0xFF:08X}"


def content(name: str) -> bytes:
    """The bytes of the WAL file ``name`` as these tests write it: each segment distinct from the others."""
    if name.endswith(".history"):
        return history_file(int(name[:8], 16))
    return segment_bytes(name, fill=f"fault-test {name} ".encode())


def key_of(name: str) -> str:
    wal = parse_wal_name(name)
    assert wal is not None, name
    return LAYOUT.key(wal)


# --- processes ----------------------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while ``pid`` is a process that has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def worker_processes(data_dir: Path) -> list[int]:
    """PIDs of live 'walbucket worker' processes whose working directory is ``data_dir``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"walbucket" in argv and b"worker" in argv and cwd == str(data_dir.resolve()) and alive(int(entry.name)):
            pids.append(int(entry.name))
    return sorted(pids)


def wait_gone(pid: int, timeout: float = 15) -> None:
    wait_for(lambda: not alive(pid), timeout, f"process {pid} to exit", interval=0.05)


# --- nodes: fake data directories and their commands ---------------------------------------------------------------


@dataclass
class Node:
    """A fake data directory, the environment its commands run with, and its own spool directory."""

    data_dir: Path
    env: dict[str, str]
    spool_dir: Path

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "pg_wal"

    def write(self, name: str, data: bytes | None = None, ready: bool = True) -> bytes:
        """Put WAL file ``name`` into pg_wal (and mark it ready, as PostgreSQL does); return its bytes."""
        data = content(name) if data is None else data
        (self.wal_dir / name).write_bytes(data)
        if ready:
            (self.wal_dir / "archive_status" / f"{name}.ready").touch()
        return data

    def push(self, name: str) -> subprocess.CompletedProcess[str]:
        return run_walbucket(["push", f"pg_wal/{name}"], self.env, cwd=self.data_dir, timeout=90)

    def get(self, name: str, dest: str | Path = DEST) -> subprocess.CompletedProcess[str]:
        return run_walbucket(["get", name, str(dest)], self.env, cwd=self.data_dir, timeout=90)

    def cluster_dir(self) -> Path | None:
        """``<spool_dir>/<cluster>``: the only subdirectory of this node's spool directory, once there is one."""
        try:
            subdirs = [p for p in self.spool_dir.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return None
        assert len(subdirs) <= 1, f"more than one cluster directory in {self.spool_dir}: {subdirs}"
        return subdirs[0] if subdirs else None

    def lock_pids(self) -> list[int]:
        """The PIDs in the worker's lock file (``worker.lock``; a versioned ``worker-N.lock`` is taken too)."""
        root = self.cluster_dir()
        pids = []
        for lock in sorted(root.glob("worker*.lock")) if root is not None else []:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                continue
            if pid:
                pids.append(pid)
        return pids

    def worker_pid(self) -> int | None:
        """The PID in the lock file when that process is this data directory's live worker."""
        live = worker_processes(self.data_dir)
        return next((pid for pid in self.lock_pids() if pid in live), None)

    def running_worker(self) -> int:
        return wait_for(self.worker_pid, 20, f"the worker of {self.data_dir}", interval=0.05)

    def prefetched(self, name: str) -> bool:
        root = self.cluster_dir()
        return root is not None and any((root / "restore").rglob(name))

    def log(self) -> str:
        root = self.cluster_dir()
        try:
            return (root / "worker.log").read_text(errors="replace") if root else ""
        except FileNotFoundError:
            return ""


def mount_tmpfs(path: Path, size: str, read_only: bool = False) -> None:
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0700" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, timeout=30)


@pytest.fixture
def mounts() -> Iterator[Callable[..., Path]]:
    """``mount(path, size, read_only=False)``: a tmpfs at ``path``, unmounted when the test ends (even on failure)."""
    mounted: list[Path] = []

    def mount(path: Path, size: str, read_only: bool = False) -> Path:
        mount_tmpfs(path, size, read_only)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        done = subprocess.run(["umount", str(path)], capture_output=True, timeout=30, check=False)
        if done.returncode != 0:  # busy: detach it now, the kernel frees it once the last user is gone
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30, check=False)


@pytest.fixture
def make_node(wb_env: dict[str, str], tmp_path: Path, mounts: Callable[..., Path]) -> Iterator[Callable[..., Node]]:
    """``make_node(name, mode="async", endpoint=None, **env)``: a fake data directory; its workers die at the end.

    Requests ``mounts`` so that the workers are killed before any tmpfs is unmounted.
    """
    made: list[Node] = []

    def make(name: str, mode: str = "async", endpoint: str | None = None, **env: str) -> Node:
        data_dir = tmp_path / name
        (data_dir / "pg_wal" / "archive_status").mkdir(parents=True)
        spool_dir = tmp_path / f"spool-{name}"
        node_env = {**wb_env, "WALBUCKET_RETRY_BUDGET": "2"}
        if endpoint is not None:
            node_env["WALBUCKET_ENDPOINT_URL"] = endpoint
        if mode == "async":
            node_env.update(
                WALBUCKET_ASYNC="on",
                WALBUCKET_SPOOL_DIR=str(spool_dir),
                WALBUCKET_ASYNC_IDLE_EXIT="5",
                WALBUCKET_ASYNC_WAIT="30",  # a hang fails a command in 30 s
            )
        else:
            assert mode == "sync", mode
        node_env.update(env)
        node = Node(data_dir, node_env, spool_dir)
        made.append(node)
        return node

    yield make
    for node in made:
        for pid in worker_processes(node.data_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        for pid in worker_processes(node.data_dir):
            wait_gone(pid, 10)


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.url) as running:
        yield running


# --- the archive ----------------------------------------------------------------------------------------------------


def archive(make_node: Callable[..., Node], names: list[str]) -> dict[str, bytes]:
    """Archive ``names`` with synchronous pushes straight to moto, from a primary of their own; return their bytes."""
    primary = make_node("primary", mode="sync")
    contents = {name: primary.write(name) for name in names}
    first = primary.push(names[0])  # alone: it creates the archive identity
    assert first.returncode == 0, first.stderr
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(primary.push, names[1:]))
    assert [r.returncode for r in results] == [0] * len(results), [r.stderr for r in results]
    return contents


def versioned(s3: Any, bucket: str) -> None:
    """Keep every version of every object: an overwrite, even with the same bytes, leaves a second version."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def stored(s3: Any, bucket: str, name: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key_of(name))
    except s3.exceptions.ClientError:
        return False
    return True


def assert_stored_once(s3: Any, bucket: str, name: str, data: bytes) -> None:
    """The object of ``name`` holds exactly ``data`` (compression none), with its SHA-256, written exactly once."""
    key = key_of(name)
    obj = s3.get_object(Bucket=bucket, Key=key)
    assert obj["Metadata"]["walbucket-sha256"] == hashlib.sha256(data).hexdigest()
    assert obj["Metadata"].get("walbucket-codec") == "none"
    assert obj["Body"].read() == data, f"the stored bytes of {name} differ from the file"
    versions = [v for v in s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []) if v["Key"] == key]
    assert len(versions) == 1, f"{name} was written {len(versions)} times: an archived object was overwritten"


def assert_every_ack_is_stored(node: Node, s3: Any, bucket: str) -> None:
    root = node.cluster_dir()
    if root is None:
        return
    for ack in (root / "archive").glob("*.ok"):
        name = ack.name.removesuffix(".ok")
        assert stored(s3, bucket, name), f"acknowledgement of '{name}' without its object in the bucket"


# --- 1-3: the worker killed or stopped during an upload -------------------------------------------------------------


def test_kill_9_of_the_worker_before_an_upload_never_answers_0_without_the_object(
    make_node: Callable[..., Node], proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    versioned(s3_client, bucket)
    node = make_node("pgdata", endpoint=proxy.url, WALBUCKET_COMPRESSION="none")
    name = seg(1)
    data = node.write(name)
    proxy.add_fault("hold_before_forward", method="PUT", path_contains=name, times=1)

    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(node.push, name)
        try:
            wait_for(lambda: proxy.held() == 1, 30, f"the PUT of {name} to be held", interval=0.02)
            victim = node.running_worker()
            os.kill(victim, signal.SIGKILL)
            wait_gone(victim)
            first = running.result(timeout=90)
            stored_when_answered = stored(s3_client, bucket, name)  # the held PUT is still held: not by it
        finally:
            proxy.release()

    assert first.returncode in (0, 8), first.stderr + node.log()
    if first.returncode == 0:
        assert stored_when_answered, f"push exited 0 but {name} is not in the bucket\n{first.stderr}"
    second = node.push(name)
    assert second.returncode == 0, second.stderr + node.log()
    assert re.search(rf"^walbucket push {name}: (archived|already archived)", second.stderr, re.MULTILINE), (
        second.stderr
    )
    assert_stored_once(s3_client, bucket, name, data)
    assert_every_ack_is_stored(node, s3_client, bucket)


def test_kill_9_of_the_worker_between_store_and_acknowledgement_loses_and_overwrites_nothing(
    make_node: Callable[..., Node], proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    versioned(s3_client, bucket)
    node = make_node("pgdata", endpoint=proxy.url, WALBUCKET_COMPRESSION="none")
    name = seg(1)
    data = node.write(name)
    proxy.add_fault("hold_after_store", method="PUT", path_contains=name, times=1)

    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(node.push, name)
        try:
            wait_for(lambda: proxy.held() == 1, 30, f"the stored PUT of {name} to be held", interval=0.02)
            victim = node.running_worker()
            os.kill(victim, signal.SIGKILL)
            wait_gone(victim)
            assert stored(s3_client, bucket, name), "hold_after_store: the upstream has the object"
            first = running.result(timeout=90)
        finally:
            proxy.release()

    assert first.returncode in (0, 8), first.stderr + node.log()
    second = node.push(name)
    assert second.returncode == 0, second.stderr + node.log()
    assert re.search(
        rf"^walbucket push {name}: (already archived with identical content \(duplicate\)|archived)",
        second.stderr, re.MULTILINE,
    ), second.stderr  # fmt: skip
    assert_stored_once(s3_client, bucket, name, data)
    assert_every_ack_is_stored(node, s3_client, bucket)


def test_sigterm_of_the_worker_during_an_upload_gives_the_waiting_push_a_true_answer_and_the_worker_exits(
    make_node: Callable[..., Node], proxy: FaultProxy, s3_client: Any, bucket: str
) -> None:
    versioned(s3_client, bucket)
    node = make_node("pgdata", endpoint=proxy.url, WALBUCKET_COMPRESSION="none")
    name = seg(1)
    data = node.write(name)
    proxy.add_fault("hold_after_store", method="PUT", path_contains=name, times=1)

    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(node.push, name)
        try:
            wait_for(lambda: proxy.held() == 1, 30, f"the stored PUT of {name} to be held", interval=0.02)
            victim = node.running_worker()
            os.kill(victim, signal.SIGTERM)
        finally:
            proxy.release()
        first = running.result(timeout=90)
        stored_when_answered = stored(s3_client, bucket, name)

    wait_gone(victim, 10)  # the worker exits after SIGTERM, within a few seconds
    assert 0 <= first.returncode <= 125, first.stderr + node.log()
    if first.returncode == 0:
        assert stored_when_answered, f"push exited 0 but {name} is not in the bucket\n{first.stderr}"
    else:
        assert "ERROR" in first.stderr, first.stderr
    second = node.push(name)
    assert second.returncode == 0, second.stderr + node.log()
    assert_stored_once(s3_client, bucket, name, data)
    assert_every_ack_is_stored(node, s3_client, bucket)


# --- 4-5: the worker killed or stopped during a restore -------------------------------------------------------------


@pytest.mark.parametrize("standby", [False, True], ids=["recovery", "standby"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_killing_the_worker_during_a_prefetch_leaves_every_following_get_correct(
    make_node: Callable[..., Node], proxy: FaultProxy, sig: signal.Signals, standby: bool
) -> None:
    names = [seg(n) for n in range(1, 7)]
    contents = archive(make_node, names)
    node = make_node("restored", endpoint=proxy.url)
    if standby:
        (node.data_dir / "standby.signal").touch()
    proxy.add_fault("hold_before_forward", method="GET", path_contains=names[2], times=1)

    first = node.get(names[0])  # starts the prefetch of 2..5; the GET of 3 is held
    assert first.returncode == 0, first.stderr + node.log()
    assert (node.data_dir / DEST).read_bytes() == contents[names[0]]
    try:
        wait_for(lambda: proxy.held() == 1, 30, f"the prefetch GET of {names[2]} to be held", interval=0.02)
        victim = node.running_worker()
        os.kill(victim, sig)
    finally:
        proxy.release()

    for name in names[1:]:
        result = node.get(name)
        assert result.returncode != 250, f"internal error for {name}:\n{result.stderr}"
        assert result.returncode == 0, f"get {name} exited {result.returncode}:\n{result.stderr}{node.log()}"
        assert (node.data_dir / DEST).read_bytes() == contents[name], f"{name}: not the archived bytes"
    wait_gone(victim, 15)
    assert not [n for n in os.listdir(node.wal_dir) if n.endswith(TEMP_SUFFIX)], "temporary files left in pg_wal"


@pytest.mark.parametrize("standby", [False, True], ids=["recovery", "standby"])
def test_sigterm_of_the_worker_with_several_gets_in_flight_answers_each_truly(
    make_node: Callable[..., Node], proxy: FaultProxy, standby: bool
) -> None:
    names = [seg(n) for n in range(1, 9)]
    contents = archive(make_node, names)
    node = make_node("restored", endpoint=proxy.url)
    if standby:
        (node.data_dir / "standby.signal").touch()
    proxy.add_fault("hold_before_forward", method="GET", path_contains=names[1], times=1)
    first = node.get(names[0])  # the worker prefetches 2..5; the prefetch GET of 2 is held
    assert first.returncode == 0, first.stderr + node.log()
    wait_for(lambda: proxy.held() == 1, 30, f"the prefetch GET of {names[1]} to be held", interval=0.02)
    for name in (names[5], names[6]):
        proxy.add_fault("hold_before_forward", method="GET", path_contains=name, times=1)

    # three restore_commands at once: one waits for the held prefetch, two for their own held GETs
    wanted = [names[1], names[5], names[6]]
    dests = {name: f"pg_wal/RESTORED-{name}" for name in wanted}
    with ThreadPoolExecutor(max_workers=len(wanted)) as pool:
        futures = {name: pool.submit(node.get, name, dests[name]) for name in wanted}
        try:
            wait_for(lambda: proxy.held() == 3, 30, "three GETs held at once", interval=0.02)
            victim = node.running_worker()
            os.kill(victim, signal.SIGTERM)
        finally:
            proxy.release()
        results = {name: future.result(timeout=90) for name, future in futures.items()}

    report = {name: (r.returncode, r.stderr.strip()) for name, r in results.items()}
    for name, result in results.items():
        if result.returncode == 0:
            assert (node.data_dir / dests[name]).read_bytes() == contents[name], f"{name}: not the archived bytes"
            continue
        assert result.returncode != 250, f"internal error (a bug) for {name}: {report}"
        assert result.returncode != 1, f"'not in the archive' for the archived {name}: {report}"
        assert result.returncode > 0, f"get {name} died of a signal: {report}"
        if standby:
            assert result.returncode <= 125, f"a standby would stop: {report}"
        assert not (node.data_dir / dests[name]).exists(), f"{name} failed but left a file at DEST"
    wait_gone(victim, 15)
    for name in wanted:  # recovery goes on: every one of them is restored, exactly
        again = node.get(name)
        assert again.returncode == 0, again.stderr + node.log()
        assert (node.data_dir / DEST).read_bytes() == contents[name]


# --- 6-7: destinations --------------------------------------------------------------------------------------------


def test_async_get_into_another_file_system_than_the_spool(
    make_node: Callable[..., Node], mounts: Callable[..., Path]
) -> None:
    names = [seg(1), seg(2), seg(3), "00000002.history"]
    contents = archive(make_node, names)
    node = make_node("restored")
    mounts(node.wal_dir, "64m")  # pg_wal on a tmpfs, the spool on the disk holding tmp_path

    restored = node.get(seg(1))
    assert restored.returncode == 0, restored.stderr + node.log()
    assert (node.data_dir / DEST).read_bytes() == contents[seg(1)]
    wait_for(lambda: node.prefetched(seg(2)), 30, f"the prefetch of {seg(2)}")
    handed = node.get(seg(2))  # from the prefetch spool: a copy across file systems, not a rename
    assert handed.returncode == 0, handed.stderr + node.log()
    assert (node.data_dir / DEST).read_bytes() == contents[seg(2)]

    absent = node.get(seg(40))
    assert absent.returncode == 1, absent.stderr + node.log()
    assert f"walbucket get {seg(40)}: not in the archive in " in absent.stderr

    history = node.get("00000002.history")
    assert history.returncode == 0, history.stderr + node.log()
    assert (node.data_dir / DEST).read_bytes() == contents["00000002.history"]

    no_history = node.get("00000003.history")
    assert no_history.returncode == 1, no_history.stderr + node.log()
    assert (node.data_dir / DEST).read_bytes() == contents["00000002.history"], "an absent file changes nothing"
    assert sorted(os.listdir(node.wal_dir)) == ["RECOVERYXLOG"], "temporary files left in pg_wal"


@pytest.mark.parametrize("condition", ["missing-directory", "read-only", "full"])
def test_a_destination_that_cannot_be_written_exits_204_in_both_modes(
    make_node: Callable[..., Node], mounts: Callable[..., Path], condition: str
) -> None:
    name = seg(1)
    contents = archive(make_node, [name])
    assert len(contents[name]) == SEG_SIZE
    codes: dict[str, int] = {}
    stderrs: dict[str, str] = {}
    dests: dict[str, Path] = {}
    left: dict[str, list[str] | bool] = {}
    for mode in ("sync", "async"):
        node = make_node(f"restored-{mode}", mode=mode)
        if condition == "missing-directory":
            dest_dir = node.wal_dir / "no-such-directory"
        elif condition == "read-only":
            dest_dir = mounts(node.wal_dir, "16m", read_only=True)
        else:  # a 16 MiB segment into 1 MiB
            dest_dir = mounts(node.wal_dir, "1m")
        dest = dests[mode] = dest_dir / "RECOVERYXLOG"
        result = node.get(name, dest)
        codes[mode] = result.returncode
        stderrs[mode] = result.stderr
        left[mode] = dest_dir.exists() if condition == "missing-directory" else os.listdir(dest_dir)

    assert codes == {"sync": 204, "async": 204}, stderrs
    for mode, stderr in stderrs.items():
        assert str(dests[mode]) in stderr, f"{mode}: the destination path is not named: {stderr}"
    nothing: list[str] | bool = False if condition == "missing-directory" else []
    assert left == {"sync": nothing, "async": nothing}, "something was left at the destination"


# --- 8: names with control characters -----------------------------------------------------------------------------

_ESCAPED = {
    "\n": ("\\n", "\\x0a", "\\x0A", "\\u000a", "\\012"),
    "\x1b": ("\\x1b", "\\x1B", "\\u001b", "\\u001B", "\\033", "\\e"),
}


def assert_one_line_per_message(stderr: str, command: str, code: int, raw: str) -> None:
    """Each message is one line starting with 'walbucket COMMAND ' or 'HINT: '; ``raw`` appears only escaped."""
    assert "\x1b" not in stderr and "\r" not in stderr, repr(stderr)
    lines = stderr.split("\n")
    assert lines[-1] == "", repr(stderr)
    lines = lines[:-1]
    for line in lines:
        assert line.startswith((f"walbucket {command} ", "HINT: ")), f"a message broken over lines: {stderr!r}"
        assert not any(c < " " and c != "\t" for c in line), repr(line)
    errors = [line for line in lines if " ERROR: " in line]
    assert len(errors) == 1, repr(stderr)
    assert re.search(rf"\(exit {code} after \d+\.\d{{3}}s\)$", errors[0]), repr(errors[0])
    assert any(escaped in errors[0] for escaped in _ESCAPED[raw]), f"{raw!r} does not appear escaped: {errors[0]!r}"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_names_with_control_characters_are_refused_on_one_escaped_line(
    make_node: Callable[..., Node], mode: str
) -> None:
    node = make_node("pgdata", mode=mode)

    name = "00000001000000000000000\n1"
    got = node.get(name)
    assert got.returncode == 202, repr(got.stderr)
    assert_one_line_per_message(got.stderr, "get", 202, "\n")
    assert not (node.data_dir / DEST).exists()

    for raw, name in [("\n", f"{seg(1)[:20]}\n{seg(1)[20:]}"), ("\x1b", f"{seg(2)}\x1b[31m")]:
        node.write(name, content(seg(1)), ready=False)
        pushed = node.push(name)
        assert pushed.returncode == 2, repr(pushed.stderr)
        assert_one_line_per_message(pushed.stderr, "push", 2, raw)
