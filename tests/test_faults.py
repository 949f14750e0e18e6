"""Fault injection: the walbucket executable, synchronous and asynchronous, against a misbehaving S3 endpoint.

tools/lab_proxy.py sits between walbucket and moto's S3 server and applies rule-based faults (``add_fault``) to the
requests of one object: throttling, 5xx, broken connections, short and flipped bodies, uploads stored but answered
with a failure, a bare 200 that stored nothing, another object's answer, and 404/403 answers from something that is
not the store (an ingress, a Go server). Every case runs twice: ``sync`` (each command talks to S3 itself) and
``async`` (``WALBUCKET_ASYNC=on``: the data directory's worker makes the requests, so the same faults apply to it).

The contract pinned here is PostgreSQL's (docs/exit-codes.md): ``push`` exits 0 only when the object is stored with
these bytes; ``get`` exits 0 only with the right bytes at DEST, 1 only when the store itself says the object is
absent, 8 for an outage on a standby, and above 125 for every other failure, so that a point-in-time recovery aborts
instead of ending early. A failed ``get`` writes nothing at DEST.

Cases that push get a fresh bucket each. Cases that only restore read one archive built once for the module
(``archive``: two segments and two history files pushed without faults), each through its own proxy.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import run_walbucket
from lab_proxy import FaultProxy
from lab_s3 import MotoServer
from walfactory import segment_bytes

SEG1 = "000000010000000000000001"
SEG2 = "000000010000000000000002"
SEG3 = "000000010000000000000003"  # never archived
KEY1 = f"test/wal/{SEG1[:16]}/{SEG1}"
KEY2 = f"test/wal/{SEG2[:16]}/{SEG2}"
KEY3 = f"test/wal/{SEG3[:16]}/{SEG3}"
HIST2 = "00000002.history"
HIST3 = "00000003.history"
HIST4 = "00000004.history"  # never archived
HKEY2 = f"test/history/{HIST2}"
HKEY3 = f"test/history/{HIST3}"
HKEY4 = f"test/history/{HIST4}"
HISTORY2 = b"1\t0/3000000\tno recovery target specified\n"
HISTORY3 = b"1\t0/3000000\tno recovery target specified\n2\t0/5000000\tno recovery target specified\n"
RECOVERYXLOG = "pg_wal/RECOVERYXLOG"  # where PostgreSQL restores segments
RECOVERYHISTORY = "pg_wal/RECOVERYHISTORY"  # and history files
BUDGET = "2"  # seconds of retries: every outage case ends in about that long
FOREIGN_STYLES = ["text", "html", "empty"]
COMMAND_TIMEOUT = 60.0


# --- the archive, the two modes, the proxy, and the data directories ----------------------------------------------


@dataclass(frozen=True)
class Archive:
    """A bucket that holds SEG1, SEG2, HIST2 and HIST3, pushed by walbucket with no fault: ``contents`` by name."""

    bucket: str
    contents: dict[str, bytes]


@pytest.fixture(scope="module")
def archive(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Archive:
    bucket = f"wb-faults-{os.getpid()}"
    moto_server.client().create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    home = tmp_path_factory.mktemp("archive")
    (home / "pg_wal").mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "WALBUCKET_STATE_DIR": str(home / "state"),
        **moto_server.env(bucket, prefix="test"),
    }
    contents = {SEG1: segment_bytes(SEG1), SEG2: segment_bytes(SEG2), HIST2: HISTORY2, HIST3: HISTORY3}
    for name, data in contents.items():
        (home / "pg_wal" / name).write_bytes(data)

    def push(name: str) -> Callable[[], subprocess.CompletedProcess[str]]:
        return lambda: run_walbucket(["push", f"pg_wal/{name}"], env, cwd=home, timeout=COMMAND_TIMEOUT)

    first = push(SEG1)()  # creates identity.json; the others can then go at once
    for result in [first, *together(push(SEG2), push(HIST2), push(HIST3))]:
        assert result.returncode == 0, result.stderr
    return Archive(bucket, contents)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.url) as running:
        yield running


@pytest.fixture
def spool_dir(tmp_path: Path) -> Iterator[Path]:
    """The async spool of this test; every worker whose lock is in it is stopped when the test ends."""
    path = tmp_path / "spool"
    yield path
    stop_workers(path)


@pytest.fixture
def env(wb_env: dict[str, str], proxy: FaultProxy, mode: str, spool_dir: Path) -> dict[str, str]:
    """wb_env (a fresh bucket) through the proxy, with a short retry budget; in async mode with this test's spool."""
    env = {**wb_env, "WALBUCKET_ENDPOINT_URL": proxy.url, "WALBUCKET_RETRY_BUDGET": BUDGET}
    if mode == "async":
        env.update(
            WALBUCKET_ASYNC="on",
            WALBUCKET_SPOOL_DIR=str(spool_dir),
            WALBUCKET_ASYNC_IDLE_EXIT="2",
            WALBUCKET_ASYNC_WAIT="30",  # a hang fails in 30 s, not 120
        )
    return env


@dataclass
class Site:
    """A data directory (the working directory of archive_command and restore_command) and its environment."""

    data_dir: Path
    env: dict[str, str]

    @property
    def pg_wal(self) -> Path:
        return self.data_dir / "pg_wal"

    @property
    def dest(self) -> Path:
        return self.data_dir / RECOVERYXLOG

    def write(self, name: str, data: bytes | None = None) -> bytes:
        content = segment_bytes(name) if data is None else data
        (self.pg_wal / name).write_bytes(content)
        return content

    def push(self, name: str) -> subprocess.CompletedProcess[str]:
        return run_walbucket(["push", f"pg_wal/{name}"], self.env, cwd=self.data_dir, timeout=COMMAND_TIMEOUT)

    def get(self, name: str) -> subprocess.CompletedProcess[str]:
        """``walbucket get NAME DEST`` with PostgreSQL's DEST: RECOVERYHISTORY for history files, else RECOVERYXLOG."""
        dest = RECOVERYHISTORY if name.endswith(".history") else RECOVERYXLOG
        return run_walbucket(["get", name, dest], self.env, cwd=self.data_dir, timeout=COMMAND_TIMEOUT)

    def entries(self) -> list[str]:
        return sorted(os.listdir(self.pg_wal))


def make_site(data_dir: Path, env: dict[str, str], standby: bool = False) -> Site:
    (data_dir / "pg_wal" / "archive_status").mkdir(parents=True, exist_ok=True)
    if standby:
        (data_dir / "standby.signal").touch()
    return Site(data_dir, env)


@pytest.fixture
def primary(data_dir: Path, env: dict[str, str]) -> Site:
    """A cluster that archives into this test's own, empty bucket."""
    return make_site(data_dir, env)


@pytest.fixture
def recovering(tmp_path: Path, env: dict[str, str], archive: Archive) -> Site:
    """A cluster in archive recovery (no standby.signal) that restores from the module's archive."""
    return make_site(tmp_path / "recovering", {**env, "WALBUCKET_BUCKET": archive.bucket})


@pytest.fixture
def standby(tmp_path: Path, env: dict[str, str], archive: Archive) -> Site:
    """A standby (standby.signal) that restores from the module's archive: an outage there exits 8, not 208."""
    return make_site(tmp_path / "standby", {**env, "WALBUCKET_BUCKET": archive.bucket}, standby=True)


def stop_workers(spool_dir: Path) -> None:
    """SIGTERM each worker whose PID is in a lock file of ``spool_dir`` (checked in /proc first) and wait for it."""
    for lock in sorted(spool_dir.glob("*/worker*.lock")):
        try:
            pid = int(lock.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if not is_walbucket_worker(pid):
            continue  # gone already (idle exit), or the PID is someone else's now
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while is_walbucket_worker(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if is_walbucket_worker(pid):
            os.kill(pid, signal.SIGKILL)


def is_walbucket_worker(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) 'walbucket worker' process."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"worker" in argv and any(arg.endswith(b"walbucket") for arg in argv)


def together(*calls: Callable[[], subprocess.CompletedProcess[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands at once: outage cases each last the retry budget, and they add up otherwise."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def stored_sha256(s3: Any, bucket: str, key: str) -> str | None:
    try:
        return str(s3.head_object(Bucket=bucket, Key=key)["Metadata"].get("walbucket-sha256"))
    except s3.exceptions.ClientError:
        return None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def statuses(proxy: FaultProxy, method: str, key: str) -> list[int]:
    """Statuses answered to ``method`` requests on ``key`` (query strings aside), in order; 0: no answer."""
    return [r.status for r in proxy.requests if r.method == method and r.path.split("?")[0].endswith(key)]


def assert_restored(site: Site, result: subprocess.CompletedProcess[str], data: bytes) -> None:
    assert result.returncode == 0, result.stderr
    assert site.dest.read_bytes() == data


def assert_nothing_written(site: Site, before: list[str], result: subprocess.CompletedProcess[str], code: int) -> None:
    """``get`` exited ``code`` and left pg_wal as it was: no DEST, no temporary file."""
    assert result.returncode == code, result.stderr
    assert not site.dest.exists()
    assert not (site.data_dir / RECOVERYHISTORY).exists()
    assert site.entries() == before


# --- throttling and 5xx ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["slowdown", "internal"])
def test_two_5xx_answers_are_retried_and_push_and_get_succeed(
    primary: Site, proxy: FaultProxy, s3_client: Any, bucket: str, kind: str
) -> None:
    status = 503 if kind == "slowdown" else 500
    data = primary.write(SEG1)
    proxy.add_fault(kind, method="PUT", path_contains=KEY1, times=2)

    pushed = primary.push(SEG1)

    assert pushed.returncode == 0, pushed.stderr
    assert stored_sha256(s3_client, bucket, KEY1) == sha256(data)
    assert statuses(proxy, "PUT", KEY1)[:2] == [status, status]

    proxy.add_fault(kind, method="GET", path_contains=KEY1, times=2)
    restored = primary.get(SEG1)

    assert_restored(primary, restored, data)
    assert statuses(proxy, "GET", KEY1) == [status, status, 200]


@pytest.mark.parametrize("kind", ["slowdown", "internal"])
def test_an_endpoint_that_keeps_answering_5xx_is_an_outage_that_aborts_recovery_except_on_a_standby(
    primary: Site, recovering: Site, standby: Site, proxy: FaultProxy, s3_client: Any, bucket: str, kind: str
) -> None:
    primary.write(SEG1)
    before, standby_before = recovering.entries(), standby.entries()
    proxy.add_fault(kind)

    pushed, restored, on_standby = together(
        lambda: primary.push(SEG1), lambda: recovering.get(SEG1), lambda: standby.get(SEG1)
    )

    assert pushed.returncode == 8, pushed.stderr
    assert stored_sha256(s3_client, bucket, KEY1) is None
    assert_nothing_written(recovering, before, restored, 208)
    assert_nothing_written(standby, standby_before, on_standby, 8)


# --- broken transfers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["reset_request", "delay"])
def test_an_upload_broken_once_is_retried_and_stores_the_right_bytes(
    primary: Site, proxy: FaultProxy, s3_client: Any, bucket: str, kind: str
) -> None:
    primary.env["WALBUCKET_TIMEOUT"] = "1"  # the delay (2.5 s) outlasts it: the request times out and is retried
    data = primary.write(SEG1)
    proxy.add_fault(kind, method="PUT", path_contains=KEY1, times=1, seconds=2.5)

    pushed = primary.push(SEG1)

    assert pushed.returncode == 0, pushed.stderr
    assert stored_sha256(s3_client, bucket, KEY1) == sha256(data)
    if kind == "reset_request":  # the delayed request is recorded only when it answers, after the test
        assert statuses(proxy, "PUT", KEY1)[0] == 0


@pytest.mark.parametrize("kind", ["reset_response", "short_body", "delay"])
def test_a_download_broken_once_is_retried_and_restores_the_right_bytes(
    recovering: Site, proxy: FaultProxy, archive: Archive, kind: str
) -> None:
    recovering.env["WALBUCKET_TIMEOUT"] = "1"
    proxy.add_fault(kind, method="GET", path_contains=KEY1, times=1, seconds=2.5)

    result = recovering.get(SEG1)

    assert_restored(recovering, result, archive.contents[SEG1])
    if kind != "delay":  # the delayed request is recorded only when it answers, after the test
        assert statuses(proxy, "GET", KEY1) == [200, 200]  # cut short, then read again


def test_a_valid_looking_shorter_answer_every_time_aborts_recovery_with_210(
    recovering: Site, proxy: FaultProxy
) -> None:
    before = recovering.entries()
    proxy.add_fault("short_body_matching", method="GET", path_contains=KEY1)

    result = recovering.get(SEG1)

    assert_nothing_written(recovering, before, result, 210)


def test_a_valid_looking_shorter_answer_once_is_read_again_and_restores(
    recovering: Site, proxy: FaultProxy, archive: Archive
) -> None:
    proxy.add_fault("short_body_matching", method="GET", path_contains=KEY1, times=1)

    result = recovering.get(SEG1)

    assert_restored(recovering, result, archive.contents[SEG1])
    assert statuses(proxy, "GET", KEY1) == [200, 200]


def test_a_download_flipped_every_time_aborts_recovery_with_210(recovering: Site, proxy: FaultProxy) -> None:
    before = recovering.entries()
    proxy.add_fault("flip", method="GET", path_contains=KEY1)

    result = recovering.get(SEG1)

    assert_nothing_written(recovering, before, result, 210)


def test_a_download_flipped_once_is_read_again_and_restores(
    recovering: Site, proxy: FaultProxy, archive: Archive
) -> None:
    proxy.add_fault("flip", method="GET", path_contains=KEY1, times=1)

    result = recovering.get(SEG1)

    assert_restored(recovering, result, archive.contents[SEG1])
    assert statuses(proxy, "GET", KEY1) == [200, 200]


# --- uploads whose answer does not say what happened -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["stored_then_500", "stored_then_reset"])
def test_an_upload_stored_but_answered_with_a_failure_is_found_identical_on_retry(
    primary: Site, proxy: FaultProxy, s3_client: Any, bucket: str, kind: str
) -> None:
    data = primary.write(SEG1)
    proxy.add_fault(kind, method="PUT", path_contains=KEY1, times=1)

    pushed = primary.push(SEG1)

    assert pushed.returncode == 0, pushed.stderr  # "duplicate" may appear: the retry met its own first attempt
    assert stored_sha256(s3_client, bucket, KEY1) == sha256(data)
    assert statuses(proxy, "PUT", KEY1)[0] == (500 if kind == "stored_then_500" else 0)

    restored = primary.get(SEG1)

    assert_restored(primary, restored, data)


def test_a_bare_200_that_stored_nothing_is_not_taken_as_archived(
    primary: Site, proxy: FaultProxy, bucket_keys: Callable[[], list[str]]
) -> None:
    primary.write(SEG1)
    proxy.add_fault("ok_without_storing", method="PUT", path_contains=KEY1)

    pushed = primary.push(SEG1)

    assert pushed.returncode == 8, pushed.stderr
    assert "does not hold" in pushed.stderr
    assert KEY1 not in bucket_keys()

    proxy.reset()
    again = primary.push(SEG1)

    assert again.returncode == 0, again.stderr
    assert KEY1 in bucket_keys()


# --- answers that are not the store's -------------------------------------------------------------------------------


@pytest.mark.parametrize("style", FOREIGN_STYLES)
def test_a_foreign_404_aborts_recovery_instead_of_ending_it(
    recovering: Site, standby: Site, proxy: FaultProxy, style: str
) -> None:
    # SEG1 is archived, HIST4 is not: an ingress's 404 says nothing about either, so neither may answer 1
    before, standby_before = recovering.entries(), standby.entries()
    proxy.add_fault(f"foreign_404_{style}", method="GET", path_contains=KEY1)
    proxy.add_fault(f"foreign_404_{style}", method="GET", path_contains=HKEY4)

    results = together(
        lambda: recovering.get(SEG1), lambda: standby.get(SEG1), lambda: recovering.get(HIST4),
        lambda: standby.get(HIST4),
    )  # fmt: skip

    segment, segment_on_standby, history, history_on_standby = results
    assert_nothing_written(recovering, before, segment, 208)
    assert_nothing_written(standby, standby_before, segment_on_standby, 8)
    assert_nothing_written(recovering, before, history, 208)
    assert_nothing_written(standby, standby_before, history_on_standby, 8)
    for result in results:
        assert "HTTP 404" in result.stderr


@pytest.mark.parametrize("style", FOREIGN_STYLES)
def test_a_foreign_403_aborts_recovery_even_on_a_standby(
    recovering: Site, standby: Site, proxy: FaultProxy, style: str
) -> None:
    before, standby_before = recovering.entries(), standby.entries()
    proxy.add_fault(f"foreign_403_{style}", method="GET", path_contains=KEY1)

    restored, on_standby = together(lambda: recovering.get(SEG1), lambda: standby.get(SEG1))

    assert_nothing_written(recovering, before, restored, 207)
    assert_nothing_written(standby, standby_before, on_standby, 207)
    assert "403" in restored.stderr
    assert "403" in on_standby.stderr


def test_another_segments_object_answered_for_a_segment_aborts_recovery_with_210(
    recovering: Site, proxy: FaultProxy
) -> None:
    before = recovering.entries()
    proxy.add_fault("other_object", method="GET", path_contains=KEY2, other_key=KEY1)

    result = recovering.get(SEG2)

    assert_nothing_written(recovering, before, result, 210)


def test_another_history_files_object_answered_for_a_history_file_aborts_recovery_with_210(
    recovering: Site, proxy: FaultProxy
) -> None:
    before = recovering.entries()
    proxy.add_fault("other_object", method="GET", path_contains=HKEY3, other_key=HKEY2)

    result = recovering.get(HIST3)

    assert_nothing_written(recovering, before, result, 210)


def test_an_object_the_store_itself_says_is_absent_ends_the_archive_with_1(
    recovering: Site, standby: Site, proxy: FaultProxy
) -> None:
    before, standby_before = recovering.entries(), standby.entries()

    segment, history, on_standby = together(
        lambda: recovering.get(SEG3), lambda: recovering.get(HIST4), lambda: standby.get(SEG3)
    )

    assert_nothing_written(recovering, before, segment, 1)
    assert_nothing_written(recovering, before, history, 1)
    assert_nothing_written(standby, standby_before, on_standby, 1)
    assert 404 in statuses(proxy, "GET", KEY3)
