"""The walbucket executable against a misbehaving endpoint: tools/lab_proxy.py between it and moto's S3 server.

Endpoints that ignore or reject conditional writes, throttling, outages, dropped connections, corrupted downloads,
and many PostgreSQL-like processes racing to archive one name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zstandard

from conftest import WALBUCKET, run_walbucket, untimed
from lab_proxy import FaultProxy
from lab_s3 import MotoServer
from walfactory import segment_bytes

SEG1 = "000000010000000000000001"
SEG2 = "000000010000000000000002"
PROBE_KEY = "test/probe/conditional-write"
KEY1 = f"test/wal/{SEG1[:16]}/{SEG1}"
KEY2 = f"test/wal/{SEG2[:16]}/{SEG2}"
RACERS = 16
FALLBACK_WARNING = (
    f"walbucket: WARNING: '{SEG1}': endpoint ignores conditional writes; HEAD-then-PUT is not safe against a racing "
    "writer"
)


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.url) as running:
        yield running


@pytest.fixture
def env(wb_env: dict[str, str], proxy: FaultProxy) -> dict[str, str]:
    """wb_env, talking to moto through the proxy."""
    return {**wb_env, "WALBUCKET_ENDPOINT_URL": proxy.url}


def run_all(calls: list[tuple[list[str], Mapping[str, str], Path]]) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: run_walbucket(*call), calls))


def archived_keys(keys: list[str]) -> list[str]:
    return [key for key in keys if key != PROBE_KEY]


def statuses(proxy: FaultProxy, method: str, path_end: str) -> list[int]:
    return [r.status for r in proxy.requests if r.method == method and r.path.endswith(path_end)]


def remembered(env: Mapping[str, str]) -> dict[str, bool]:
    return dict(json.loads((Path(env["WALBUCKET_STATE_DIR"]) / "conditional-writes.json").read_text()))


# --- endpoints that ignore or reject If-None-Match -----------------------------------------------------------------


def test_auto_falls_back_to_head_then_put_on_an_endpoint_that_ignores_if_none_match(
    env: dict[str, str], proxy: FaultProxy, data_dir: Path, wal_file: Callable[..., Path], bucket: str,
    s3_client: Any,
) -> None:  # fmt: skip
    proxy.strip_if_none_match = True
    path = wal_file(SEG1)

    first = run_walbucket(["push", str(path)], env, cwd=data_dir)

    assert first.returncode == 0, first.stderr
    assert FALLBACK_WARNING in first.stderr.splitlines()
    assert remembered(env) == {f"{proxy.url}/{bucket}": False}
    assert s3_client.head_object(Bucket=bucket, Key=KEY1)["Metadata"]["walbucket-codec"] == "zstd"

    proxy.requests.clear()
    wal_file(SEG1, fill=b"a second primary")
    second = run_walbucket(["push", str(path)], env, cwd=data_dir)

    assert second.returncode == 6, second.stderr  # HEAD still finds the archived object and refuses
    assert statuses(proxy, "PUT", PROBE_KEY) == []  # the remembered answer spared the probe
    assert statuses(proxy, "PUT", KEY1) == []


def test_required_conditional_writes_on_an_endpoint_that_ignores_them_exits_9_and_archives_nothing(
    env: dict[str, str], proxy: FaultProxy, data_dir: Path, wal_file: Callable[..., Path], bucket: str,
    bucket_keys: Callable[[], list[str]],
) -> None:  # fmt: skip
    proxy.strip_if_none_match = True

    result = run_walbucket(["push", str(wal_file(SEG1))], {**env, "WALBUCKET_CONDITIONAL_WRITES": "required"}, data_dir)

    assert result.returncode == 9, result.stderr
    assert (
        f"walbucket push {SEG1}: ERROR: endpoint '{proxy.url}/{bucket}' does not honour conditional writes "
        "(If-None-Match) (exit 9)"
    ) in untimed(result.stderr).splitlines()
    assert 'conditional_writes = "auto"' in result.stderr
    assert archived_keys(bucket_keys()) == []


@pytest.mark.parametrize(("mode", "code"), [("auto", 0), ("required", 9)])
def test_an_endpoint_answering_501_to_if_none_match_is_detected_as_unsupported(
    env: dict[str, str], proxy: FaultProxy, data_dir: Path, wal_file: Callable[..., Path], bucket: str,
    bucket_keys: Callable[[], list[str]], mode: str, code: int,
) -> None:  # fmt: skip
    proxy.reject_if_none_match = True

    result = run_walbucket(["push", str(wal_file(SEG1))], {**env, "WALBUCKET_CONDITIONAL_WRITES": mode}, data_dir)

    assert result.returncode == code, result.stderr
    assert remembered(env) == {f"{proxy.url}/{bucket}": False}
    assert 501 in statuses(proxy, "PUT", PROBE_KEY)
    if mode == "auto":
        assert FALLBACK_WARNING in result.stderr.splitlines()
        assert KEY1 in bucket_keys()
    else:
        assert bucket_keys() == []  # the probe itself was refused


@pytest.mark.parametrize(("mode", "code"), [("auto", 0), ("required", 9)])
def test_an_endpoint_remembered_as_honouring_that_starts_answering_501(
    env: dict[str, str], proxy: FaultProxy, data_dir: Path, wal_file: Callable[..., Path], bucket: str,
    bucket_keys: Callable[[], list[str]], mode: str, code: int,
) -> None:  # fmt: skip
    env = {**env, "WALBUCKET_CONDITIONAL_WRITES": mode}
    assert run_walbucket(["push", str(wal_file(SEG1))], env, data_dir).returncode == 0
    endpoint = f"{proxy.url}/{bucket}"
    assert remembered(env) == {endpoint: True}
    proxy.reject_if_none_match = True  # a proxy put in front of the store, say

    result = run_walbucket(["push", str(wal_file(SEG2))], env, data_dir)

    assert result.returncode == code, result.stderr
    if mode == "auto":  # remembered, and the same push made once more with HEAD-then-PUT
        assert statuses(proxy, "PUT", KEY2) == [501, 200]
        assert FALLBACK_WARNING.replace(SEG1, SEG2) in result.stderr.splitlines()
        assert remembered(env) == {endpoint: False}
        assert KEY2 in bucket_keys()
    else:
        assert statuses(proxy, "PUT", KEY2) == [501]
        assert (
            f"walbucket push {SEG2}: ERROR: the endpoint rejects conditional writes (If-None-Match) for '{KEY2}' "
            "(exit 9)"
        ) in untimed(result.stderr).splitlines()
        assert remembered(env) == {endpoint: True}
        assert KEY2 not in bucket_keys()


def test_conditional_writes_off_never_sends_if_none_match(
    env: dict[str, str], proxy: FaultProxy, data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    result = run_walbucket(["push", str(wal_file(SEG1))], {**env, "WALBUCKET_CONDITIONAL_WRITES": "off"}, data_dir)

    assert result.returncode == 0, result.stderr
    assert [r for r in proxy.requests if r.header("If-None-Match") is not None] == []
    assert statuses(proxy, "PUT", PROBE_KEY) == []


# --- throttling, outages, dropped connections ----------------------------------------------------------------------


def test_a_few_slowdown_answers_are_retried_and_the_push_succeeds(
    env: dict[str, str], proxy: FaultProxy, data_dir: Path, wal_file: Callable[..., Path], s3_client: Any,
    bucket: str,
) -> None:  # fmt: skip
    proxy.fail_next(3)

    result = run_walbucket(["-v", "push", str(wal_file(SEG1))], env, cwd=data_dir)

    assert result.returncode == 0, result.stderr
    assert [r.status for r in proxy.requests[:3]] == [503, 503, 503]
    assert result.stderr.count("walbucket: INFO: retrying after SlowDown") == 3
    assert s3_client.head_object(Bucket=bucket, Key=KEY1)["ContentLength"] > 0


@pytest.mark.parametrize(
    ("fault", "command", "standby", "code"),
    [
        ("503", "push", False, 8),
        ("503", "get", False, 208),
        ("503", "get", True, 8),
        ("drop", "push", False, 8),
        ("drop", "get", False, 208),
    ],
    ids=["503-push", "503-get", "503-get-standby", "drop-push", "drop-get"],
)
def test_an_endpoint_that_keeps_failing_ends_in_an_outage_exit_within_the_retry_budget(
    env: dict[str, str], proxy: FaultProxy, data_dir: Path, wal_file: Callable[..., Path], fault: str, command: str,
    standby: bool, code: int,
) -> None:  # fmt: skip
    if standby:
        (data_dir / "standby.signal").touch()
    proxy.fail_all = fault == "503"
    proxy.drop_connections = fault == "drop"
    dest = data_dir / "pg_wal" / "RECOVERYXLOG"
    args = ["push", str(wal_file(SEG1))] if command == "push" else ["get", SEG1, str(dest)]
    budget = 2.0

    started = time.monotonic()
    result = run_walbucket(args, {**env, "WALBUCKET_RETRY_BUDGET": str(budget)}, cwd=data_dir)
    elapsed = time.monotonic() - started

    assert result.returncode == code, result.stderr
    assert f"after retrying for {budget:g}s: " in result.stderr
    assert budget <= elapsed < budget + 8  # the budget, one last backoff, and the process start
    assert len(proxy.requests) > 1  # retried, not given up at the first answer
    assert not dest.exists()


def test_an_endpoint_slower_than_the_timeout_ends_in_an_outage_exit(
    env: dict[str, str], proxy: FaultProxy, data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    proxy.delay = 3.0
    env = {**env, "WALBUCKET_TIMEOUT": "0.5", "WALBUCKET_RETRY_BUDGET": "1.5"}

    started = time.monotonic()
    result = run_walbucket(["push", str(wal_file(SEG1))], env, cwd=data_dir)

    assert result.returncode == 8, result.stderr
    assert "after retrying for 1.5s: " in result.stderr
    assert time.monotonic() - started < 10  # not the 3 s delay times the attempts
    assert proxy.received > 1


def test_sigterm_during_get_ends_the_process_by_that_signal_and_leaves_no_file(
    env: dict[str, str], proxy: FaultProxy, data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    assert run_walbucket(["push", str(wal_file(SEG1))], env, cwd=data_dir).returncode == 0
    proxy.delay = 30.0
    dest = data_dir / "pg_wal" / "RECOVERYXLOG"

    with subprocess.Popen(
        [str(WALBUCKET), "get", SEG1, str(dest)], env=env, cwd=data_dir, stderr=subprocess.PIPE, text=True
    ) as process:
        deadline = time.monotonic() + 30
        while proxy.received == 0 and time.monotonic() < deadline:  # wait until it is inside a request
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)

    assert process.returncode == -signal.SIGTERM, stderr
    assert sorted(os.listdir(dest.parent)) == [SEG1]


# --- corrupted downloads -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["none", "zstd"])
@pytest.mark.parametrize("endpoint_checksums", [False, True], ids=["moto", "s3-checksums"])
def test_a_corrupted_download_exits_210_and_leaves_no_file(
    env: dict[str, str], proxy: FaultProxy, data_dir: Path, wal_file: Callable[..., Path], codec: str,
    endpoint_checksums: bool,
) -> None:  # fmt: skip
    env = {**env, "WALBUCKET_COMPRESSION": codec}
    assert run_walbucket(["push", str(wal_file(SEG1))], env, cwd=data_dir).returncode == 0
    proxy.corrupt_get = True
    proxy.emulate_checksums = endpoint_checksums
    dest = data_dir / "pg_wal" / "RECOVERYXLOG"

    result = run_walbucket(["get", SEG1, str(dest)], env, cwd=data_dir)

    assert result.returncode == 210, result.stderr
    assert re.search(rf"^walbucket get {SEG1}: ERROR: .*'{KEY1}'.* \(exit 210\)$", untimed(result.stderr), re.MULTILINE)
    assert len(statuses(proxy, "GET", KEY1)) == 2  # a transfer can be damaged once: read again before giving up
    assert re.search(r"^walbucket: WARNING: .*; reading it once more$", result.stderr, re.MULTILINE)
    assert not dest.exists()
    assert sorted(os.listdir(dest.parent)) == [SEG1]  # no temporary file left behind


def test_a_download_through_an_honest_proxy_with_endpoint_checksums_succeeds(
    env: dict[str, str], proxy: FaultProxy, data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    assert run_walbucket(["push", str(wal_file(SEG1))], env, cwd=data_dir).returncode == 0
    proxy.emulate_checksums = True

    result = run_walbucket(["get", SEG1, "RECOVERYXLOG"], env, cwd=data_dir)

    assert result.returncode == 0, result.stderr
    assert (data_dir / "RECOVERYXLOG").read_bytes() == segment_bytes(SEG1)


# --- racing writers ------------------------------------------------------------------------------------------------


def test_many_processes_pushing_the_same_file_all_succeed_and_store_one_object(
    env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path], bucket_keys: Callable[[], list[str]]
) -> None:
    path = str(wal_file(SEG1))

    results = run_all([(["push", path], env, data_dir)] * RACERS)

    assert [r.returncode for r in results] == [0] * RACERS, [r.stderr for r in results]
    lines = [r.stderr.strip() for r in results]
    assert sum(f"push {SEG1}: archived " in line for line in lines) == 1, lines
    assert sum("already archived with identical content (duplicate)" in line for line in lines) == RACERS - 1, lines
    assert [key for key in bucket_keys() if "/wal/" in key] == [KEY1]


def test_many_processes_pushing_different_content_under_one_name_have_exactly_one_winner(
    env: dict[str, str], tmp_path: Path, wal_file: Callable[..., Path], s3_client: Any, bucket: str
) -> None:
    contents = [segment_bytes(SEG1, fill=f"primary number {i} wrote this".encode()) for i in range(RACERS)]
    calls: list[tuple[list[str], Mapping[str, str], Path]] = []
    for i, data in enumerate(contents):  # one data directory per would-be primary, all archiving SEG1
        pg_wal = tmp_path / f"primary-{i}" / "pg_wal"
        pg_wal.mkdir(parents=True)
        (pg_wal / SEG1).write_bytes(data)
        calls.append((["push", f"pg_wal/{SEG1}"], env, pg_wal.parent))

    results = run_all(calls)

    codes = [r.returncode for r in results]
    assert sorted(codes) == [0] + [6] * (RACERS - 1), [r.stderr for r in results]
    for result in results:
        if result.returncode == 6:
            assert "already exists in the archive with different content (exit 6)" in untimed(result.stderr)
    winner = contents[codes.index(0)]
    stored = s3_client.get_object(Bucket=bucket, Key=KEY1)
    assert zstandard.ZstdDecompressor().decompress(stored["Body"].read()) == winner
    assert stored["Metadata"]["walbucket-sha256"] == hashlib.sha256(winner).hexdigest()


def test_racing_pushes_of_consecutive_segments_all_succeed(
    env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path], bucket_keys: Callable[[], list[str]]
) -> None:
    names = [f"0000000100000000000000{n:02X}" for n in range(1, 5)]
    for name in names:
        wal_file(name)

    results = run_all([(["push", f"pg_wal/{name}"], env, data_dir) for name in names])

    assert [r.returncode for r in results] == [0] * len(names), [r.stderr for r in results]
    assert [key for key in bucket_keys() if "/wal/" in key] == [f"test/wal/{n[:16]}/{n}" for n in names]
    assert "test/identity.json" in bucket_keys()
