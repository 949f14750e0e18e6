"""show, verify, check and backfill as the walbucket executable, against moto's S3 server on 127.0.0.1.

Archives are filled in-process (push through an S3Store, or plain boto3 puts for many objects), then the executable
is run as a person would run it: exit codes, the JSON on stdout, the text report and the summary line on stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from conftest import WALBUCKET, run_walbucket, untimed
from lab_s3 import MotoServer
from walbucket.archive.push import PushOptions, push
from walbucket.core.keylayout import KeyLayout, object_metadata, object_tags
from walbucket.core.walname import Segment, parse_wal_name
from walbucket.store.s3 import S3Store
from walfactory import SEG_SIZE, SYSTEM_ID, history_file, segment_bytes

LAYOUT = KeyLayout("test")  # wb_env's prefix
OTHER_SYSTEM_ID = 7_400_000_000_000_000_002


def seg(n: int, timeline: int = 1) -> str:
    return Segment.from_number(timeline, n, SEG_SIZE).name


def key(name: str) -> str:
    wal = parse_wal_name(name)
    assert wal is not None
    return LAYOUT.key(wal)


@pytest.fixture
def store(moto_server: MotoServer, bucket: str) -> S3Store:
    return S3Store(moto_server.client(), bucket, retry_budget=5)


def archive(store: S3Store, tmp_path: Path, name: str, data: bytes | None = None) -> None:
    path = tmp_path / name
    path.write_bytes(segment_bytes(name) if data is None else data)
    push(path, store, LAYOUT, PushOptions("zstd", 1))
    path.unlink()


def run_json(args: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[int, Any, str]:
    result = run_walbucket([*args, "--json"], env, cwd)
    return result.returncode, json.loads(result.stdout), result.stderr


def test_help_lists_the_admin_commands(wb_env: dict[str, str]) -> None:
    result = run_walbucket(["--help"], wb_env)
    for command in ("show", "verify", "check", "backfill"):
        assert f"    {command} " in result.stdout
    verify = run_walbucket(["verify", "--help"], wb_env)
    assert "Exit 11 when it finds an error" in verify.stdout and "--deep" in verify.stdout


# --- show and verify ---------------------------------------------------------------------------------------------


@pytest.fixture
def failover_archive(store: S3Store, tmp_path: Path) -> S3Store:
    """Timeline 1 archived up to segment 3 of 5, timeline 2 promoted in segment 6, with its history and .partial."""
    for n in (1, 2, 3):
        archive(store, tmp_path, seg(n))
    archive(store, tmp_path, "00000002.history", history_file(2, 1, "0/6000028"))
    archive(store, tmp_path, seg(6) + ".partial", segment_bytes(seg(6)))
    for n in (6, 7):
        archive(store, tmp_path, seg(n, 2))
    return store


def test_show_reports_identity_timelines_and_files(failover_archive: S3Store, wb_env: dict[str, str]) -> None:
    code, doc, stderr = run_json(["show"], wb_env)
    assert code == 0, stderr
    assert doc["bucket"] == wb_env["WALBUCKET_BUCKET"] and doc["prefix"] == "test"
    assert doc["identity"] == {"system_id": str(SYSTEM_ID), "pg_version": 15, "seg_size": SEG_SIZE}
    timelines = [(t["timeline"], t["parent"], t["switch_lsn"], t["first"], t["last"]) for t in doc["timelines"]]
    assert timelines == [(1, None, None, seg(1), seg(3)), (2, 1, "0/6000028", seg(6, 2), seg(7, 2))]
    assert [t["segments"] for t in doc["timelines"]] == [3, 2]
    assert doc["timelines"][0]["original_bytes"] == 3 * SEG_SIZE
    assert doc["timelines"][0]["compression_ratio"] > 100
    assert [f["name"] for f in doc["partials"]] == [seg(6) + ".partial"]
    assert [f["name"] for f in doc["history_files"]] == ["00000002.history"]
    assert doc["totals"]["objects"] == 7 and doc["original_bytes_source"] == "estimate"
    assert "walbucket show: 7 objects on 2 timelines, " in stderr

    text = run_walbucket(["show"], wb_env)
    lines = text.stdout.splitlines()
    assert lines[0] == f"archive: s3://{wb_env['WALBUCKET_BUCKET']}/test/ at {wb_env['WALBUCKET_ENDPOINT_URL']}"
    assert lines[1] == f"identity: system id {SYSTEM_ID}, PostgreSQL 15, 16.0 MiB segments"
    assert lines[2].startswith(f"timeline 1: {seg(1)} .. {seg(3)}, 3 segments, 48.0 MiB original, ")
    assert lines[3].startswith(f"timeline 2 (from timeline 1 at 0/6000028): {seg(6, 2)} .. {seg(7, 2)}, 2 segments")

    exact = run_json(["show", "--exact"], wb_env)[1]
    assert exact["original_bytes_source"] == "metadata"
    assert exact["timelines"][0]["original_bytes"] == 3 * SEG_SIZE


def test_verify_reports_the_failover_gap_and_exits_11(failover_archive: S3Store, wb_env: dict[str, str]) -> None:
    code, doc, stderr = run_json(["verify"], wb_env)
    assert code == 11, stderr
    assert (doc["ok"], doc["errors"], doc["warnings"], doc["objects"]) == (False, 1, 0, 7)
    [finding] = doc["findings"]
    assert finding["code"] == "timeline-end-gap" and finding["objects"] == [seg(4), seg(5)]
    assert "walbucket verify: 1 error, 0 warnings in 7 objects (sampled)" in stderr

    text = run_walbucket(["verify"], wb_env)
    assert text.returncode == 11
    assert f"ERROR timeline-end-gap: timeline 1 ends at {seg(3)} in the archive" in text.stdout
    assert f"  objects: {seg(4)}, {seg(5)}" in text.stdout
    assert "  HINT: the old primary had not archived them before the failover: run walbucket backfill" in text.stdout


def test_verify_of_a_complete_archive_exits_0(store: S3Store, tmp_path: Path, wb_env: dict[str, str]) -> None:
    for n in (1, 2, 3):
        archive(store, tmp_path, seg(n))
    code, doc, stderr = run_json(["verify", "--deep"], wb_env)
    assert (code, doc["ok"], doc["findings"], doc["checked"], doc["deep"]) == (0, True, [], 3, True), stderr
    assert "walbucket verify: 0 errors, 0 warnings in 3 objects (deep)" in stderr


def test_deep_verify_finds_a_damaged_object(
    store: S3Store, tmp_path: Path, wb_env: dict[str, str], s3_client: Any, bucket: str
) -> None:
    for n in (1, 2, 3):
        archive(store, tmp_path, seg(n))
    original = s3_client.head_object(Bucket=bucket, Key=key(seg(2)))
    damaged = s3_client.get_object(Bucket=bucket, Key=key(seg(3)))["Body"].read()
    s3_client.put_object(Bucket=bucket, Key=key(seg(2)), Body=damaged, Metadata=original["Metadata"],
                         Tagging=urlencode(object_tags(parse_wal_name(seg(2)), SYSTEM_ID, 15)))  # type: ignore[arg-type]  # fmt: skip
    assert run_walbucket(["verify"], wb_env).returncode == 0, "the sample does not download"
    code, doc, _ = run_json(["verify", "--deep", "--jobs", "2"], wb_env)
    assert code == 11
    [finding] = doc["findings"]
    assert (finding["code"], finding["objects"]) == ("damaged-object", [seg(2)])
    assert "fails its checksum" in finding["message"]


# --- check ---------------------------------------------------------------------------------------------------------


def write_pg_control(data_dir: Path, system_id: int) -> Path:
    (data_dir / "global").mkdir(parents=True, exist_ok=True)
    (data_dir / "global" / "pg_control").write_bytes(system_id.to_bytes(8, "little") + bytes(248))
    (data_dir / "PG_VERSION").write_text("15\n")
    return data_dir


def test_check_of_a_working_setup(store: S3Store, tmp_path: Path, wb_env: dict[str, str], bucket_keys: Any) -> None:
    archive(store, tmp_path, seg(1))
    pgdata = write_pg_control(tmp_path / "pgdata", SYSTEM_ID)
    code, doc, stderr = run_json(["check", "--pgdata", str(pgdata)], wb_env)
    assert code == 0, stderr
    assert {item["name"]: item["status"] for item in doc["items"]} == {
        "settings": "OK", "credentials": "OK", "bucket reachable": "OK", "tags on upload": "OK",
        "checksum header": "WARN", "conditional multipart completion": "OK", "write with tags (s3:PutObject)": "OK",
        "read (s3:GetObject)": "OK", "head (s3:GetObject)": "OK", "list (s3:ListBucket)": "OK",
        "read tags (s3:GetObjectTagging)": "OK", "conditional writes": "OK", "archive identity": "OK",
        "local cluster": "OK", "archiving": "SKIP",
    }  # fmt: skip
    assert doc["items"][1]["detail"] == "found (env)"
    assert [k for k in bucket_keys() if k.startswith("test/probe/check-")], "the probe object is left in place"
    assert "walbucket check: all 15 checks passed or were skipped" in stderr

    text = run_walbucket(["check", "--pgdata", str(pgdata)], wb_env)
    assert "OK    conditional writes" in text.stdout and "SKIP  archiving" in text.stdout


def test_check_fails_for_another_cluster_and_without_credentials(
    store: S3Store, tmp_path: Path, wb_env: dict[str, str]
) -> None:
    archive(store, tmp_path, seg(1))
    other = write_pg_control(tmp_path / "other", OTHER_SYSTEM_ID)
    result = run_walbucket(["check"], wb_env, cwd=other)
    assert result.returncode == 11
    assert "FAIL  local cluster" in result.stdout and f"system id {OTHER_SYSTEM_ID} differs" in result.stdout
    assert "HINT: each cluster needs its own bucket or prefix" in result.stdout
    assert "walbucket check: 1 of 15 checks failed" in result.stderr

    no_keys = {k: v for k, v in wb_env.items() if not k.startswith("AWS_")} | {
        "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }  # fmt: skip
    code, doc, _ = run_json(["check"], no_keys)
    statuses = {item["name"]: item["status"] for item in doc["items"]}
    assert code == 11 and statuses["credentials"] == "FAIL" and statuses["bucket reachable"] == "SKIP"


def test_check_refuses_a_password_in_the_dsn(wb_env: dict[str, str]) -> None:
    result = run_walbucket(["check", "--dsn", "host=db password=secret"], wb_env)
    assert result.returncode == 2
    assert "walbucket check: ERROR: --dsn holds a password (exit 2)" in untimed(result.stderr)


# --- backfill ------------------------------------------------------------------------------------------------------


def pg_wal_with(tmp_path: Path, files: dict[str, bytes], status: str = "ready") -> Path:
    pg_wal = tmp_path / "old-primary" / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    for name, data in files.items():
        (pg_wal / name).write_bytes(data)
        (pg_wal / "archive_status" / f"{name}.{status}").write_bytes(b"")
    return pg_wal


def test_backfill_closes_the_failover_gap(failover_archive: S3Store, tmp_path: Path, wb_env: dict[str, str]) -> None:
    pg_wal = pg_wal_with(tmp_path, {name: segment_bytes(name) for name in (seg(3), seg(4), seg(5))})
    code, doc, stderr = run_json(["backfill", str(pg_wal), "--dry-run"], wb_env)
    assert code == 0, stderr
    assert {f["name"]: f["outcome"] for f in doc["files"]} == {
        seg(3): "duplicate", seg(4): "would-upload", seg(5): "would-upload"
    }  # fmt: skip
    assert f"walbucket backfill: would upload 2, duplicate 1, conflict 0, refused 0, skipped 0 from '{pg_wal}'" in (
        stderr
    )
    assert run_walbucket(["verify"], wb_env).returncode == 11, "a dry run writes nothing"

    result = run_walbucket(["backfill", str(pg_wal)], wb_env)
    assert result.returncode == 0, result.stderr
    assert f"uploaded   {seg(4)}  16.0 MiB as " in result.stdout
    assert f"duplicate  {seg(3)}  already archived with identical content" in result.stdout
    assert run_walbucket(["verify"], wb_env).returncode == 0


def test_backfill_reports_a_conflict_and_keeps_the_archived_object(
    store: S3Store, tmp_path: Path, wb_env: dict[str, str], s3_client: Any, bucket: str
) -> None:
    archive(store, tmp_path, seg(1))
    before = s3_client.head_object(Bucket=bucket, Key=key(seg(1)))["ETag"]
    pg_wal = pg_wal_with(tmp_path, {seg(1): segment_bytes(seg(1), fill=b"split brain")}, status="done")
    code, doc, stderr = run_json(["backfill", str(pg_wal)], wb_env)
    assert code == 11, stderr
    [item] = doc["files"]
    assert (item["outcome"], item["detail"]) == (
        "conflict", f"WAL file '{seg(1)}' already exists in the archive with different content"
    )  # fmt: skip
    assert s3_client.head_object(Bucket=bucket, Key=key(seg(1)))["ETag"] == before


# --- progress on a terminal ----------------------------------------------------------------------------------


def run_with_tty_stderr(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([str(WALBUCKET), *args], env=env, stdout=subprocess.DEVNULL, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(primary, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_progress_is_drawn_on_a_terminal_only(store: S3Store, tmp_path: Path, wb_env: dict[str, str]) -> None:
    archive(store, tmp_path, seg(1))
    code, terminal = run_with_tty_stderr(["verify"], wb_env)
    assert code == 0
    assert "\rlisting: " in terminal.replace("\x1b[2K", "")
    assert "\r" not in run_walbucket(["verify"], wb_env).stderr


# --- scale -------------------------------------------------------------------------------------------------------


def test_a_few_thousand_objects_are_shown_and_verified_by_parallel_listing(
    s3_client: Any, bucket: str, wb_env: dict[str, str], store: S3Store, tmp_path: Path
) -> None:
    archive(store, tmp_path, seg(1))  # identity.json and a real first segment
    digest = hashlib.sha256(b"").hexdigest()

    def put(name: str) -> None:
        wal = parse_wal_name(name)
        assert wal is not None
        tagging = urlencode(object_tags(wal, SYSTEM_ID, 15))
        metadata = object_metadata(digest, SEG_SIZE, "none", SYSTEM_ID)
        s3_client.put_object(Bucket=bucket, Key=LAYOUT.key(wal), Body=b"", Tagging=tagging, Metadata=metadata)

    names = [seg(n) for n in range(2, 1800)] + [seg(n, 2) for n in range(1800, 2000)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, names))
    archive(store, tmp_path, "00000002.history", history_file(2, 1, "7/8000028"))  # in segment 1800
    started = time.monotonic()
    code, doc, stderr = run_json(["show"], wb_env)
    shown = time.monotonic() - started
    assert code == 0, stderr
    assert doc["totals"]["objects"] == 2000
    assert [(t["timeline"], t["segments"], t["missing"]) for t in doc["timelines"]] == [(1, 1799, 0), (2, 200, 0)]
    assert doc["timelines"][1]["first"] == "000000020000000700000008"
    started = time.monotonic()
    code, doc, stderr = run_json(["verify", "--jobs", "8"], wb_env)
    verified = time.monotonic() - started
    assert (code, doc["findings"], doc["checked"]) == (0, [], 5), stderr  # first and last of each, the history
    print(f"show: {shown:.2f}s, verify: {verified:.2f}s for 2000 objects")
    assert shown < 30 and verified < 30
