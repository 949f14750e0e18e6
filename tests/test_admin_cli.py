"""show, verify, check and backfill as a person runs them: exit codes, the JSON on stdout, the text report and the
summary line on stderr.

Archives are filled through walbucket's own push (or plain puts for many objects), then the command line is run:
``main()`` in this process against an in-memory store (conftest.py's ``cli``), or the walbucket executable against
moto's S3 server on 127.0.0.1 for what only they show: credentials from the process environment, progress drawn on
a terminal, and a few thousand objects listed page by page in parallel from a real endpoint.
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

import pytest

from conftest import WALBUCKET, Cli, untimed
from walbucket.archive.push import PushOptions, push
from walbucket.core.keylayout import KeyLayout, object_metadata, object_tags
from walbucket.core.walname import Segment, parse_wal_name
from walbucket.store.protocol import Store
from walfactory import SEG_SIZE, SYSTEM_ID, history_file, segment_bytes

LAYOUT = KeyLayout("test")  # the prefix of cli.env (and of wb_env)
PROCESS = pytest.mark.parametrize("cli", ["process"], indirect=True)
OTHER_SYSTEM_ID = 7_400_000_000_000_000_002


def seg(n: int, timeline: int = 1) -> str:
    return Segment.from_number(timeline, n, SEG_SIZE).name


def key(name: str) -> str:
    wal = parse_wal_name(name)
    assert wal is not None
    return LAYOUT.key(wal)


@pytest.fixture
def store(cli: Cli) -> Store:
    """The archive the command line reads: a MemoryStore in process, an S3Store on moto for the executable."""
    return cli.store


def archive(store: Store, tmp_path: Path, name: str, data: bytes | None = None) -> None:
    path = tmp_path / name
    path.write_bytes(segment_bytes(name) if data is None else data)
    push(path, store, LAYOUT, PushOptions("zstd", 1))
    path.unlink()


def run_json(
    cli: Cli, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, Any, str]:
    result = cli.run([*args, "--json"], env, cwd)
    return result.returncode, json.loads(result.stdout), result.stderr


def test_help_lists_the_admin_commands(cli: Cli) -> None:
    result = cli.run(["--help"])
    for command in ("show", "verify", "check", "backfill"):
        assert f"    {command} " in result.stdout
    verify = cli.run(["verify", "--help"])
    assert "Exit 11 when it finds an error" in verify.stdout and "--deep" in verify.stdout


# --- show and verify ---------------------------------------------------------------------------------------------


@pytest.fixture
def failover_archive(store: Store, tmp_path: Path) -> Store:
    """Timeline 1 archived up to segment 3 of 5, timeline 2 promoted in segment 6, with its history and .partial."""
    for n in (1, 2, 3):
        archive(store, tmp_path, seg(n))
    archive(store, tmp_path, "00000002.history", history_file(2, 1, "0/6000028"))
    archive(store, tmp_path, seg(6) + ".partial", segment_bytes(seg(6)))
    for n in (6, 7):
        archive(store, tmp_path, seg(n, 2))
    return store


def test_show_reports_identity_timelines_and_files(failover_archive: Store, cli: Cli) -> None:
    code, doc, stderr = run_json(cli, ["show"])
    assert code == 0, stderr
    assert doc["bucket"] == cli.env["WALBUCKET_BUCKET"] and doc["prefix"] == "test"
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

    text = cli.run(["show"])
    lines = text.stdout.splitlines()
    assert lines[0] == f"archive: s3://{cli.env['WALBUCKET_BUCKET']}/test/ at {cli.env['WALBUCKET_ENDPOINT_URL']}"
    assert lines[1] == f"identity: system id {SYSTEM_ID}, PostgreSQL 15, 16.0 MiB segments"
    assert lines[2].startswith(f"timeline 1: {seg(1)} .. {seg(3)}, 3 segments, 48.0 MiB original, ")
    assert lines[3].startswith(f"timeline 2 (from timeline 1 at 0/6000028): {seg(6, 2)} .. {seg(7, 2)}, 2 segments")

    exact = run_json(cli, ["show", "--exact"])[1]
    assert exact["original_bytes_source"] == "metadata"
    assert exact["timelines"][0]["original_bytes"] == 3 * SEG_SIZE


def test_verify_reports_the_failover_gap_and_exits_11(failover_archive: Store, cli: Cli) -> None:
    code, doc, stderr = run_json(cli, ["verify"])
    assert code == 11, stderr
    assert (doc["ok"], doc["errors"], doc["warnings"], doc["objects"]) == (False, 1, 0, 7)
    [finding] = doc["findings"]
    assert finding["code"] == "timeline-end-gap" and finding["objects"] == [seg(4), seg(5)]
    assert "walbucket verify: 1 error, 0 warnings in 7 objects (sampled)" in stderr

    text = cli.run(["verify"])
    assert text.returncode == 11
    assert f"ERROR timeline-end-gap: timeline 1 ends at {seg(3)} in the archive" in text.stdout
    assert f"  objects: {seg(4)}, {seg(5)}" in text.stdout
    assert "  HINT: the old primary had not archived them before the failover: run walbucket backfill" in text.stdout


def test_verify_of_a_complete_archive_exits_0(store: Store, tmp_path: Path, cli: Cli) -> None:
    for n in (1, 2, 3):
        archive(store, tmp_path, seg(n))
    code, doc, stderr = run_json(cli, ["verify", "--deep"])
    assert (code, doc["ok"], doc["findings"], doc["checked"], doc["deep"]) == (0, True, [], 3, True), stderr
    assert "walbucket verify: 0 errors, 0 warnings in 3 objects (deep)" in stderr


def test_deep_verify_finds_a_damaged_object(store: Store, tmp_path: Path, cli: Cli) -> None:
    for n in (1, 2, 3):
        archive(store, tmp_path, seg(n))
    original = cli.metadata(key(seg(2)))
    damaged = cli.body(key(seg(3)))
    cli.put(key(seg(2)), damaged, original, object_tags(parse_wal_name(seg(2)), SYSTEM_ID, 15))  # type: ignore[arg-type]
    assert cli.run(["verify"]).returncode == 0, "the sample does not download"
    code, doc, _ = run_json(cli, ["verify", "--deep", "--jobs", "2"])
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


def test_check_of_a_working_setup(store: Store, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    # check asks boto3 where credentials come from, and boto3 reads os.environ, not main()'s env
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, cli.env[name])
    archive(store, tmp_path, seg(1))
    pgdata = write_pg_control(tmp_path / "pgdata", SYSTEM_ID)
    code, doc, stderr = run_json(cli, ["check", "--pgdata", str(pgdata)])
    assert code == 0, stderr
    assert {item["name"]: item["status"] for item in doc["items"]} == {
        "settings": "OK", "credentials": "OK", "bucket reachable": "OK", "tags on upload": "OK",
        "checksum header": "WARN", "conditional multipart completion": "OK", "write with tags (s3:PutObject)": "OK",
        "read (s3:GetObject)": "OK", "head (s3:GetObject)": "OK", "list (s3:ListBucket)": "OK",
        "read tags (s3:GetObjectTagging)": "OK", "conditional writes": "OK", "archive identity": "OK",
        "local cluster": "OK", "archiving": "SKIP",
    }  # fmt: skip
    assert doc["items"][1]["detail"] == "found (env)"
    assert [k for k in cli.bucket_keys() if k.startswith("test/probe/check-")], "the probe object is left in place"
    assert "walbucket check: all 15 checks passed or were skipped" in stderr

    text = cli.run(["check", "--pgdata", str(pgdata)])
    assert "OK    conditional writes" in text.stdout and "SKIP  archiving" in text.stdout


def test_check_fails_for_another_cluster(
    store: Store, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # for boto3, as in test_check_of_a_working_setup
        monkeypatch.setenv(name, cli.env[name])
    archive(store, tmp_path, seg(1))
    other = write_pg_control(tmp_path / "other", OTHER_SYSTEM_ID)
    result = cli.run(["check"], cwd=other)
    assert result.returncode == 11
    assert "FAIL  local cluster" in result.stdout and f"system id {OTHER_SYSTEM_ID} differs" in result.stdout
    assert "HINT: each cluster needs its own bucket or prefix" in result.stdout
    assert "walbucket check: 1 of 15 checks failed" in result.stderr


@PROCESS
def test_check_fails_without_credentials(store: Store, tmp_path: Path, cli: Cli) -> None:
    archive(store, tmp_path, seg(1))
    no_keys = {k: v for k, v in cli.env.items() if not k.startswith("AWS_")} | {
        "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }  # fmt: skip
    code, doc, _ = run_json(cli, ["check"], no_keys)
    statuses = {item["name"]: item["status"] for item in doc["items"]}
    assert code == 11 and statuses["credentials"] == "FAIL" and statuses["bucket reachable"] == "SKIP"


def test_check_refuses_a_password_in_the_dsn(cli: Cli) -> None:
    result = cli.run(["check", "--dsn", "host=db password=secret"])
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


def test_backfill_closes_the_failover_gap(failover_archive: Store, tmp_path: Path, cli: Cli) -> None:
    pg_wal = pg_wal_with(tmp_path, {name: segment_bytes(name) for name in (seg(3), seg(4), seg(5))})
    code, doc, stderr = run_json(cli, ["backfill", str(pg_wal), "--dry-run"])
    assert code == 0, stderr
    assert {f["name"]: f["outcome"] for f in doc["files"]} == {
        seg(3): "duplicate", seg(4): "would-upload", seg(5): "would-upload"
    }  # fmt: skip
    assert f"walbucket backfill: would upload 2, duplicate 1, conflict 0, refused 0, skipped 0 from '{pg_wal}'" in (
        stderr
    )
    assert cli.run(["verify"]).returncode == 11, "a dry run writes nothing"

    result = cli.run(["backfill", str(pg_wal)])
    assert result.returncode == 0, result.stderr
    assert f"uploaded   {seg(4)}  16.0 MiB as " in result.stdout
    assert f"duplicate  {seg(3)}  already archived with identical content" in result.stdout
    assert cli.run(["verify"]).returncode == 0


def test_backfill_reports_a_conflict_and_keeps_the_archived_object(store: Store, tmp_path: Path, cli: Cli) -> None:
    archive(store, tmp_path, seg(1))
    before = cli.version(key(seg(1)))
    pg_wal = pg_wal_with(tmp_path, {seg(1): segment_bytes(seg(1), fill=b"split brain")}, status="done")
    code, doc, stderr = run_json(cli, ["backfill", str(pg_wal)])
    assert code == 11, stderr
    [item] = doc["files"]
    assert (item["outcome"], item["detail"]) == (
        "conflict", f"WAL file '{seg(1)}' already exists in the archive with different content"
    )  # fmt: skip
    assert cli.version(key(seg(1))) == before


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


@PROCESS
def test_progress_is_drawn_on_a_terminal_only(store: Store, tmp_path: Path, cli: Cli) -> None:
    archive(store, tmp_path, seg(1))
    code, terminal = run_with_tty_stderr(["verify"], cli.env)
    assert code == 0
    assert "\rlisting: " in terminal.replace("\x1b[2K", "")
    assert "\r" not in cli.run(["verify"]).stderr


# --- scale -------------------------------------------------------------------------------------------------------


@PROCESS
def test_a_few_thousand_objects_are_shown_and_verified_by_parallel_listing(
    cli: Cli, store: Store, tmp_path: Path
) -> None:
    archive(store, tmp_path, seg(1))  # identity.json and a real first segment
    digest = hashlib.sha256(b"").hexdigest()

    def put(name: str) -> None:
        wal = parse_wal_name(name)
        assert wal is not None
        cli.put(
            LAYOUT.key(wal), b"", object_metadata(digest, SEG_SIZE, "none", SYSTEM_ID), object_tags(wal, SYSTEM_ID, 15)
        )

    names = [seg(n) for n in range(2, 1800)] + [seg(n, 2) for n in range(1800, 2000)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, names))
    archive(store, tmp_path, "00000002.history", history_file(2, 1, "7/8000028"))  # in segment 1800
    started = time.monotonic()
    code, doc, stderr = run_json(cli, ["show"])
    shown = time.monotonic() - started
    assert code == 0, stderr
    assert doc["totals"]["objects"] == 2000
    assert [(t["timeline"], t["segments"], t["missing"]) for t in doc["timelines"]] == [(1, 1799, 0), (2, 200, 0)]
    assert doc["timelines"][1]["first"] == "000000020000000700000008"
    started = time.monotonic()
    code, doc, stderr = run_json(cli, ["verify", "--jobs", "8"])
    verified = time.monotonic() - started
    assert (code, doc["findings"], doc["checked"]) == (0, [], 5), stderr  # first and last of each, the history
    print(f"show: {shown:.2f}s, verify: {verified:.2f}s for 2000 objects")
    assert shown < 30 and verified < 30
