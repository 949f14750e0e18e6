"""The command line as PostgreSQL runs it: every exit code of docs/exit-codes.md, with the message on stderr.

Most tests call ``main(argv, env, open_store)`` in this process against an in-memory store (the ``cli`` fixture of
conftest.py) and read the objects back from it. The walbucket executable, in a fresh process per file against moto's
S3 server over HTTP with objects read back directly with boto3, keeps what only a process or a real endpoint shows:
the exit status PostgreSQL sees for success (0), absence (1) and failures (2-125, and above 125 for get), settings
from the process environment (WALBUCKET_* variables, WALBUCKET_CONFIG, AWS credentials), the console script's
--version, the bucket and endpoint errors of S3, multipart uploads and what a verbose boto3 logs.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lz4.frame
import pytest
import zstandard

import walbucket
from bench_micro import imported_modules
from conftest import Cli, run_walbucket
from lab_s3 import SECRET_KEY, free_port
from walbucket.cli import main as cli_module
from walfactory import SEG_SIZE, SYSTEM_ID, history_file, segment_bytes

SEG1 = "000000010000000000000001"
SEG2 = "000000010000000000000002"
SEG3 = "000000010000000000000003"
OTHER_SYSTEM_ID = 7_400_000_000_000_000_002
PROBE_KEY = "test/probe/conditional-write"
MIB = 1 << 20


def wal_key(name: str) -> str:
    return f"test/wal/{name[:16]}/{name}"


def archived_keys(keys: list[str]) -> list[str]:
    """Keys that hold archive content: everything but the probe objects (conditional writes, store features).

    push probes the endpoint (once per state_dir) before it reads the WAL file, so even a refused file leaves the
    probe objects behind; they are never read and hold no WAL.
    """
    return [key for key in keys if not key.startswith("test/probe/")]


def assert_error(result: subprocess.CompletedProcess[str], code: int, subject: str, message: str) -> None:
    """Assert the exit code and the exact line ``walbucket <subject>: ERROR: <message> (exit <code> after <s>s)``."""
    assert result.returncode == code, result.stderr
    line = re.escape(f"walbucket {subject}: ERROR: {message} (exit {code} after ") + r"\d+\.\d{3}s\)"
    assert any(re.fullmatch(line, text) for text in result.stderr.splitlines()), result.stderr


def hint(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("HINT: ")]
    assert len(lines) == 1, result.stderr
    return lines[0].removeprefix("HINT: ")


def run_all(calls: list[tuple[list[str], Mapping[str, str], Path]]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent walbucket processes concurrently; results in the order of ``calls``."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: run_walbucket(*call), calls))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def head(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    return dict(s3.head_object(Bucket=bucket, Key=key))


def body(s3: Any, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def tags(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def write_pg_control(data_dir: Path, system_id: int) -> None:
    (data_dir / "global").mkdir(exist_ok=True)
    (data_dir / "global" / "pg_control").write_bytes(system_id.to_bytes(8, "little") + bytes(248))


def leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".walbucket-tmp"))


# --- help and version ----------------------------------------------------------------------------------------------


def test_help_describes_both_commands_and_their_postgresql_settings(cli: Cli) -> None:
    result = cli.run(["--help"])

    assert result.returncode == 0, result.stderr
    assert "archive_command = 'walbucket push %p'" in result.stdout
    assert "restore_command = 'walbucket get %f %p'" in result.stdout
    assert re.search(r"^\s+push\s+archive one WAL file", result.stdout, re.MULTILINE)
    assert re.search(r"^\s+get\s+restore one WAL file", result.stdout, re.MULTILINE)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("push", ["WAL_PATH", "Archive one WAL file", "refused (exit 6)", "--config", "--verbose"]),
        ("get", ["NAME", "DEST", "Restore WAL file NAME to DEST", "1 not in the archive", "--config"]),
    ],
)
def test_command_help_describes_the_command(cli: Cli, command: str, expected: list[str]) -> None:
    result = cli.run([command, "--help"])

    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout


def test_version_prints_the_package_version(wb_env: dict[str, str]) -> None:
    result = run_walbucket(["--version"], wb_env)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"walbucket {walbucket.__version__}\n"


@pytest.mark.parametrize(
    ("cli", "args", "code", "message"),
    [
        ("process", [], 2, "the following arguments are required: COMMAND"),
        ("in-process", ["push"], 2, "the following arguments are required: WAL_PATH"),
        ("in-process", ["archive", SEG1], 2, "invalid choice: 'archive'"),
        ("process", ["get", SEG1], 202, "the following arguments are required: DEST"),
        ("in-process", ["get", SEG1, "RECOVERYXLOG", "extra"], 202, "unrecognized arguments: extra"),
        ("in-process", ["-v", "get", SEG1], 202, "the following arguments are required: DEST"),
        ("in-process", ["--config", "wb.toml", "get", SEG1], 202, "the following arguments are required: DEST"),
        ("in-process", ["push", "get", "extra"], 2, "unrecognized arguments: extra"),  # the first word, not any
        ("in-process", ["--config", "get", "push"], 2, "the following arguments are required: WAL_PATH"),
        ("in-process", ["--conf", "get", "push"], 2, "the following arguments are required: WAL_PATH"),
    ],
    indirect=["cli"],
)
def test_bad_arguments_are_usage_errors(cli: Cli, args: list[str], code: int, message: str) -> None:
    result = cli.run(args)

    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "(walbucket --help lists the commands)" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "subject"),
    [(["push", f"pg_wal/{SEG1}"], 70, f"push {SEG1}"), (["get", SEG1, "RECOVERYXLOG"], 250, f"get {SEG1}")],
    ids=["push", "get"],
)
def test_a_bug_exits_70_for_push_and_250_for_get_with_an_internal_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], code: int,
    subject: str,
) -> None:  # fmt: skip
    def bug(_args: object, _settings: object) -> tuple[str, int]:
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli_module.COMMANDS, args[0], bug)  # no real bug to trigger: the command table is the seam
    monkeypatch.chdir(tmp_path)

    assert cli_module.main(args, {"WALBUCKET_BUCKET": "wal-archive", "HOME": str(tmp_path)}) == code
    [line] = capsys.readouterr().err.splitlines()
    expected = f"walbucket {subject}: ERROR: internal error: RuntimeError('a bug') (exit {code} after "
    assert re.fullmatch(re.escape(expected) + r"\d+\.\d{3}s\)", line), line


# --- push: success -------------------------------------------------------------------------------------------------


def test_push_archives_a_segment_with_its_metadata_and_tags(
    wb_env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path], s3_client: Any, bucket: str
) -> None:
    data = segment_bytes(SEG1)
    wal_file(SEG1)

    result = run_walbucket(["push", f"pg_wal/{SEG1}"], wb_env, cwd=data_dir)  # %p is relative to the data dir

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        rf"walbucket push {SEG1}: archived 16\.0 MiB as \d+ bytes zstd in \d+\.\d{{3}}s\n", result.stderr
    )
    info = head(s3_client, bucket, wal_key(SEG1))
    assert (
        info["Metadata"].items()
        >= {
            "walbucket-sha256": sha256(data),
            "walbucket-size": str(SEG_SIZE),
            "walbucket-codec": "zstd",
            "walbucket-system-id": str(SYSTEM_ID),
        }.items()
    )
    assert tags(s3_client, bucket, wal_key(SEG1)) == {
        "walbucket-kind": "segment",
        "walbucket-timeline": "1",
        "walbucket-system-id": str(SYSTEM_ID),
        "walbucket-pg-version": "15",
    }
    assert zstandard.ZstdDecompressor().decompress(body(s3_client, bucket, wal_key(SEG1))) == data


def test_synchronous_push_and_get_build_their_client_with_botocore_without_boto3s_wrapper(
    wb_env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    """boto3's session adds resource models and handlers a client never uses: about 50 ms of every command."""
    wal_file(SEG1)
    env = {**wb_env, "PYTHONPROFILEIMPORTTIME": "1"}

    pushed = run_walbucket(["push", f"pg_wal/{SEG1}"], env, cwd=data_dir)
    got = run_walbucket(["get", SEG1, "pg_wal/RECOVERYXLOG"], env, cwd=data_dir)

    for result in (pushed, got):
        assert result.returncode == 0, result.stderr
        modules = set(imported_modules(result.stderr))
        assert "botocore.client" in modules
        assert not {m for m in modules if m == "boto3" or m.startswith("boto3.")}


def test_push_of_identical_content_again_is_success_as_a_duplicate(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    path = wal_file(SEG1)
    assert cli.run(["push", str(path)], cwd=data_dir).returncode == 0
    before = cli.version(wal_key(SEG1))

    result = cli.run(["push", str(path)], cwd=data_dir)

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        rf"walbucket push {SEG1}: already archived with identical content \(duplicate\), 16\.0 MiB in \d+\.\d+s\n",
        result.stderr,
    )
    assert cli.version(wal_key(SEG1)) == before


# --- push: refusals ------------------------------------------------------------------------------------------------


def test_push_of_different_content_under_an_archived_name_exits_6_and_leaves_the_object(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    path = wal_file(SEG1)
    assert cli.run(["push", str(path)], cwd=data_dir).returncode == 0
    before_version = cli.version(wal_key(SEG1))
    before_body = cli.body(wal_key(SEG1))
    wal_file(SEG1, fill=b"the other primary wrote this")

    result = cli.run(["push", str(path)], cwd=data_dir)

    assert_error(result, 6, f"push {SEG1}", f"WAL file '{SEG1}' already exists in the archive with different content")
    assert "split brain" in hint(result)
    assert cli.version(wal_key(SEG1)) == before_version
    assert cli.body(wal_key(SEG1)) == before_body


def test_push_of_another_clusters_segment_exits_5_naming_both_system_ids(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    assert cli.run(["push", str(wal_file(SEG1))], cwd=data_dir).returncode == 0
    other = wal_file(SEG2, system_id=OTHER_SYSTEM_ID)

    result = cli.run(["push", str(other)], cwd=data_dir)

    assert_error(
        result, 5, f"push {SEG2}",
        f"WAL file '{SEG2}' does not belong to this archive: "
        f"system id {OTHER_SYSTEM_ID} differs from the archive's system id {SYSTEM_ID}",
    )  # fmt: skip
    assert "each cluster needs its own bucket or prefix" in hint(result)
    assert wal_key(SEG2) not in cli.bucket_keys()


@pytest.mark.parametrize("name", ["foo", SEG1.lower().replace("1", "a"), "0000000100000000000000ab", "RECOVERYXLOG",
                                  f"{SEG1}.tmp", "00000000" + SEG1[8:], "00000001.history.tmp"])  # fmt: skip
def test_push_of_a_file_not_named_like_wal_exits_2_and_archives_nothing(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path], name: str
) -> None:
    path = wal_file(name, segment_bytes(SEG1))

    result = cli.run(["push", str(path)], cwd=data_dir)

    assert_error(result, 2, f"push {name}", f"'{name}' is not the name of a WAL file PostgreSQL archives")
    assert "archive_command must pass %p" in hint(result)
    assert archived_keys(cli.bucket_keys()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (segment_bytes(SEG1, size=8192), f"WAL file '{SEG1}' is 8192 bytes, but its segment size is {SEG_SIZE}"),
        (b"", f"WAL file '{SEG1}' is not a valid segment: file is 0 bytes, shorter than a WAL page header"),
        (
            segment_bytes(SEG1, magic=0x1234),
            f"WAL file '{SEG1}' is not a valid segment: unknown WAL page magic 0x1234 "
            "(not a WAL file of PostgreSQL 9.4 to 18)",
        ),
        (
            segment_bytes(SEG3),
            f"WAL file '{SEG1}' holds the data of another segment (page address 0/3000000, timeline 1)",
        ),
        (None, "cannot read WAL file '{path}': No such file or directory"),
    ],
    ids=["truncated", "empty", "bad-magic", "renamed", "missing"],
)
def test_push_of_a_file_that_is_not_its_segment_exits_4_and_archives_nothing(
    cli: Cli, data_dir: Path, content: bytes | None, message: str
) -> None:
    path = data_dir / "pg_wal" / SEG1
    if content is not None:
        path.write_bytes(content)

    result = cli.run(["push", str(path)], cwd=data_dir)

    assert_error(result, 4, f"push {SEG1}", message.format(path=path))
    assert archived_keys(cli.bucket_keys()) == []


# (cli, change of the environment, message): the executable for a setting from the process environment.
CONFIG_ERRORS: dict[str, tuple[str, dict[str, str | None], str]] = {
    "unset-bucket": ("in-process", {"WALBUCKET_BUCKET": None}, "missing setting 'bucket'"),
    "empty-bucket": ("in-process", {"WALBUCKET_BUCKET": ""}, "missing setting 'bucket'"),
    "bad-codec": (
        "in-process",
        {"WALBUCKET_COMPRESSION": "gzip"},
        "invalid setting WALBUCKET_COMPRESSION: expected one of none, zstd, lz4",
    ),
    "bad-seconds": (
        "in-process",
        {"WALBUCKET_RETRY_BUDGET": "soon"},
        "invalid setting WALBUCKET_RETRY_BUDGET: could not convert string to float: 'soon'",
    ),
    "bad-url": (
        "in-process",
        {"WALBUCKET_ENDPOINT_URL": "127.0.0.1:9000"},
        "invalid setting WALBUCKET_ENDPOINT_URL: expected an http:// or https:// URL",
    ),
    "unknown-variable": (
        "process",
        {"WALBUCKET_BUKET": "typo"},
        "unknown setting WALBUCKET_BUKET in the environment",
    ),
    "small-part": (
        "in-process",
        {"WALBUCKET_MULTIPART_CHUNK_SIZE": "1MiB"},
        "invalid setting 'multipart_chunk_size': S3 parts are at least 5MiB",
    ),
    "no-file": (
        "process",
        {"WALBUCKET_CONFIG": "/nonexistent/walbucket.toml"},
        "cannot read config file '/nonexistent/walbucket.toml': No such file or directory",
    ),
}


@pytest.mark.parametrize(("cli", "change", "message"), CONFIG_ERRORS.values(), ids=CONFIG_ERRORS.keys(),
                         indirect=["cli"])  # fmt: skip
def test_a_configuration_error_exits_3_for_push_and_203_for_get(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path], change: dict[str, str | None], message: str
) -> None:
    env = {k: v for k, v in {**cli.env, **change}.items() if v is not None}
    dest = data_dir / "pg_wal" / "RECOVERYXLOG"

    push, get = cli.run_all([(["push", str(wal_file(SEG1))], env, data_dir), (["get", SEG1, str(dest)], env, data_dir)])

    assert_error(push, 3, f"push {SEG1}", message)
    assert_error(get, 203, f"get {SEG1}", message)
    assert cli.bucket_keys() == []
    assert not dest.exists()


def test_missing_bucket_error_has_a_hint_naming_both_places(cli: Cli, wal_file: Callable[..., Path]) -> None:
    env = {k: v for k, v in cli.env.items() if k != "WALBUCKET_BUCKET"}

    result = cli.run(["push", str(wal_file(SEG1))], env)

    assert hint(result) == "set WALBUCKET_BUCKET or 'bucket' in the file named by --config or WALBUCKET_CONFIG"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bucket = \n", "config file '{path}' is not valid TOML: "),
        ('buckett = "x"\n', "unknown setting 'buckett' in '{path}'"),
        ("compression = 5\n", "invalid setting 'compression' in '{path}': expected a non-empty string"),
    ],
    ids=["not-toml", "unknown-key", "bad-value"],
)
def test_a_bad_config_file_exits_3_naming_the_file(
    cli: Cli, tmp_path: Path, wal_file: Callable[..., Path], text: str, message: str
) -> None:
    config = tmp_path / "walbucket.toml"
    config.write_text(text)

    result = cli.run(["push", "--config", str(config), str(wal_file(SEG1))])

    assert result.returncode == 3, result.stderr
    assert f"walbucket push {SEG1}: ERROR: {message.format(path=config)}" in result.stderr


@pytest.mark.parametrize(
    ("cli", "where"),
    [("in-process", "before-command"), ("in-process", "after-command"), ("process", "environment")],
    indirect=["cli"],
)
def test_config_file_settings_apply_and_the_environment_wins(
    cli: Cli, tmp_path: Path, data_dir: Path, wal_file: Callable[..., Path], where: str
) -> None:
    config = tmp_path / "walbucket.toml"
    bucket = cli.env["WALBUCKET_BUCKET"]  # the in-process store, too, is this bucket alone
    config.write_text(f'bucket = "{bucket}"\nprefix = "from-file"\ncompression = "lz4"\n')
    env = {k: v for k, v in cli.env.items() if k != "WALBUCKET_BUCKET"}  # the bucket comes from the file alone
    path = str(wal_file(SEG1))
    args = {
        "before-command": ["--config", str(config), "push", path],
        "after-command": ["push", "--config", str(config), path],
        "environment": ["push", path],
    }[where]
    if where == "environment":
        env["WALBUCKET_CONFIG"] = str(config)

    result = cli.run(args, env, cwd=data_dir)

    assert result.returncode == 0, result.stderr
    assert " lz4 in " in result.stderr
    metadata = cli.metadata(wal_key(SEG1))  # prefix 'test' from the environment, not 'from-file'
    assert metadata["walbucket-codec"] == "lz4"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_EC2_METADATA_DISABLED": "true"},
            "no usable AWS credentials: Unable to locate credentials",
        ),
        ({"WALBUCKET_PROFILE": "no-such-profile"}, "cannot create the S3 client: "),
    ],
    ids=["no-credentials", "no-such-profile"],
)
def test_unusable_credentials_are_a_configuration_error(
    wb_env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path], bucket_keys: Callable[[], list[str]],
    change: dict[str, str | None], message: str,
) -> None:  # fmt: skip
    env = {k: v for k, v in {**wb_env, **change}.items() if v is not None}
    dest = data_dir / "RECOVERYXLOG"

    push, get = run_all([(["push", str(wal_file(SEG1))], env, data_dir), (["get", SEG1, str(dest)], env, data_dir)])

    assert push.returncode == 3, push.stderr
    assert get.returncode == 203, get.stderr
    for result in (push, get):
        assert f": ERROR: {message}" in result.stderr
    assert bucket_keys() == []
    assert not dest.exists()


# --- the store refuses or is unreachable ---------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "code"), [("push", 7), ("get", 207)])
def test_a_bucket_that_does_not_exist_exits_7_for_push_and_207_for_get(
    wb_env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path], command: str, code: int
) -> None:
    env = {**wb_env, "WALBUCKET_BUCKET": "wb-test-no-such-bucket"}
    args = ["push", str(wal_file(SEG1))] if command == "push" else ["get", SEG1, str(data_dir / "RECOVERYXLOG")]

    result = run_walbucket(args, env, cwd=data_dir)

    assert result.returncode == code, result.stderr
    assert re.search(rf"^walbucket {command} {SEG1}: ERROR: no such bucket for 'test/[^']+' \(exit {code} after .+s\)$",
                     result.stderr, re.MULTILINE)  # fmt: skip
    assert hint(result) == "check the 'bucket' and 'endpoint_url' settings"
    assert not (data_dir / "RECOVERYXLOG").exists()


def closed_endpoint(env: Mapping[str, str]) -> dict[str, str]:
    return {**env, "WALBUCKET_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "WALBUCKET_RETRY_BUDGET": "1"}


@pytest.mark.parametrize(
    ("command", "standby", "code"),
    [("push", False, 8), ("push", True, 8), ("get", False, 208), ("get", True, 8)],
    ids=["push", "push-standby", "get-primary", "get-standby"],
)
def test_an_unreachable_endpoint_exits_8_except_for_get_outside_a_standby(
    wb_env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path], command: str, standby: bool, code: int
) -> None:
    if standby:
        (data_dir / "standby.signal").touch()
    dest = data_dir / "pg_wal" / "RECOVERYXLOG"
    args = ["push", str(wal_file(SEG1))] if command == "push" else ["get", SEG1, str(dest)]

    started = time.monotonic()
    result = run_walbucket(args, closed_endpoint(wb_env), cwd=data_dir)

    assert time.monotonic() - started < 15
    assert result.returncode == code, result.stderr
    failed = re.search(rf"^walbucket {command} {SEG1}: ERROR: storage unavailable for '[^']+' after retrying for 1s: "
                       rf".+ \(exit {code} after (\d+\.\d{{3}})s\)$", result.stderr, re.MULTILINE)  # fmt: skip
    assert failed is not None, result.stderr
    assert 1.0 <= float(failed[1]) < 15, "the line says how long the command tried: the retry budget and more"
    assert "raise retry_budget" in hint(result)
    assert not dest.exists()


# --- push: other kinds and codecs ----------------------------------------------------------------------------------

BACKUP_NAME = f"{SEG2}.00000028.backup"
BACKUP_TEXT = (
    f"START WAL LOCATION: 0/2000028 (file {SEG2})\nSTOP WAL LOCATION: 0/2000100 (file {SEG2})\n"
    "CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nLABEL: test\n"
).encode()


def test_history_partial_and_backup_files_go_to_their_own_prefixes_and_come_back(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    files = {
        "00000002.history": (history_file(2), "test/history/00000002.history", "history"),
        f"{SEG3}.partial": (segment_bytes(f"{SEG3}.partial"), f"test/partial/{SEG3[:16]}/{SEG3}.partial", "partial"),
        BACKUP_NAME: (BACKUP_TEXT, f"test/backup/{SEG2[:16]}/{BACKUP_NAME}", "backup"),
    }
    for name, (data, _key, _kind) in files.items():
        wal_file(name, data)

    pushed = cli.run_all([(["push", f"pg_wal/{name}"], cli.env, data_dir) for name in files])

    assert [r.returncode for r in pushed] == [0, 0, 0], [r.stderr for r in pushed]
    for name, (_data, key, kind) in files.items():
        assert cli.tags(key)["walbucket-kind"] == kind, name
    restored = cli.run_all([(["get", name, f"pg_wal/restored-{name}"], cli.env, data_dir) for name in files])
    assert [r.returncode for r in restored] == [0, 0, 0], [r.stderr for r in restored]
    for name, (data, _key, _kind) in files.items():
        assert (data_dir / "pg_wal" / f"restored-{name}").read_bytes() == data, name


DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "none": lambda data: data,
    "lz4": lz4.frame.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompress(data),
}


@pytest.mark.parametrize("codec", sorted(DECOMPRESS))
def test_each_codec_round_trips_through_push_and_get(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path], codec: str
) -> None:
    data = segment_bytes(SEG1)
    wal_file(SEG1)
    env = {**cli.env, "WALBUCKET_COMPRESSION": codec}

    pushed = cli.run(["push", f"pg_wal/{SEG1}"], env, cwd=data_dir)
    restored = cli.run(["get", SEG1, "pg_wal/RECOVERYXLOG"], env, cwd=data_dir)

    assert pushed.returncode == 0, pushed.stderr
    assert f" {codec} in " in pushed.stderr
    assert cli.metadata(wal_key(SEG1))["walbucket-codec"] == codec
    assert DECOMPRESS[codec](cli.body(wal_key(SEG1))) == data
    assert restored.returncode == 0, restored.stderr
    assert (data_dir / "pg_wal" / "RECOVERYXLOG").read_bytes() == data


# --- get -----------------------------------------------------------------------------------------------------------


def test_get_restores_the_segment_byte_for_byte_as_a_private_file(
    wb_env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    data = segment_bytes(SEG1)
    assert run_walbucket(["push", str(wal_file(SEG1))], wb_env, cwd=data_dir).returncode == 0
    dest = data_dir / "pg_wal" / "RECOVERYXLOG"

    result = run_walbucket(["get", SEG1, "pg_wal/RECOVERYXLOG"], wb_env, cwd=data_dir)

    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        rf"walbucket get {SEG1}: restored 16\.0 MiB from \d+ bytes stored in \d+\.\d+s\n", result.stderr
    )
    assert dest.read_bytes() == data
    assert dest.stat().st_size == SEG_SIZE
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert leftovers(dest.parent) == []


def test_get_of_a_name_not_in_the_archive_exits_1_and_creates_nothing(wb_env: dict[str, str], data_dir: Path) -> None:
    dest = data_dir / "pg_wal" / "RECOVERYXLOG"

    result = run_walbucket(["get", SEG1, str(dest)], wb_env, cwd=data_dir)

    assert result.returncode == 1, result.stderr
    assert re.fullmatch(rf"walbucket get {SEG1}: not in the archive in \d+\.\d+s\n", result.stderr)
    assert os.listdir(dest.parent) == []


@pytest.mark.parametrize(
    ("cli", "name"),
    [("process", "foo"), ("in-process", SEG1.lower().replace("1", "a")), ("in-process", "RECOVERYXLOG"),
     ("in-process", f"{SEG1}.gz")],
    indirect=["cli"],
)  # fmt: skip
def test_get_of_a_name_that_is_not_wal_exits_202(cli: Cli, data_dir: Path, name: str) -> None:
    result = cli.run(["get", name, "pg_wal/RECOVERYXLOG"], cwd=data_dir)

    assert_error(result, 202, f"get {name}", f"'{name}' is not a WAL file name")
    assert "restore_command must be 'walbucket get %f %p'" in hint(result)
    assert os.listdir(data_dir / "pg_wal") == []


def overwrite(cli: Cli, key: str, new_body: bytes) -> None:
    """Replace an object's bytes behind walbucket's back, keeping its metadata: what bit rot or a bad copy does."""
    cli.put(key, new_body, cli.metadata(key))


@pytest.mark.parametrize(
    ("codec", "damage", "message"),
    [
        ("none", lambda data: data[:-1] + b"!", "WAL file '{name}' from '{key}' fails its checksum "
                                                "(SHA-256 or size differ from the metadata)"),
        ("none", lambda data: data[:-4096], "WAL file '{name}' from '{key}' fails its checksum "
                                            "(SHA-256 or size differ from the metadata)"),
        ("zstd", lambda data: zstandard.ZstdCompressor().compress(segment_bytes(SEG1, fill=b"other")),
         "WAL file '{name}' from '{key}' fails its checksum (SHA-256 or size differ from the metadata)"),
        ("zstd", lambda data: b"not zstd at all", "object '{key}' does not decompress with zstd: "),
    ],
    ids=["flipped-byte", "truncated", "other-content", "not-compressed"],
)  # fmt: skip
def test_get_of_a_damaged_object_exits_210_and_leaves_no_file(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path], codec: str, damage: Callable[[bytes], bytes],
    message: str,
) -> None:  # fmt: skip
    env = {**cli.env, "WALBUCKET_COMPRESSION": codec}
    assert cli.run(["push", str(wal_file(SEG1))], env, cwd=data_dir).returncode == 0
    key = wal_key(SEG1)
    overwrite(cli, key, damage(cli.body(key)))
    dest = data_dir / "pg_wal" / "RECOVERYXLOG"

    result = cli.run(["get", SEG1, str(dest)], env, cwd=data_dir)

    assert result.returncode == 210, result.stderr
    assert f"walbucket get {SEG1}: ERROR: {message.format(name=SEG1, key=key)}" in result.stderr
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_get_of_an_object_without_walbucket_metadata_exits_210(cli: Cli, data_dir: Path) -> None:
    cli.put(wal_key(SEG1), segment_bytes(SEG1))  # copied in by hand

    result = cli.run(["get", SEG1, "pg_wal/RECOVERYXLOG"], cwd=data_dir)

    assert_error(
        result, 210, f"get {SEG1}", f"object '{wal_key(SEG1)}' lacks walbucket's metadata (codec, SHA-256, size)"
    )
    assert os.listdir(data_dir / "pg_wal") == []


def test_an_unreadable_archive_identity_exits_10_for_push_and_210_for_get(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    assert cli.run(["push", str(wal_file(SEG1))], cwd=data_dir).returncode == 0
    cli.put("test/identity.json", b"{not json")
    dest = data_dir / "RECOVERYXLOG"

    push, get = cli.run_all(
        [(["push", str(wal_file(SEG2))], cli.env, data_dir), (["get", SEG1, str(dest)], cli.env, data_dir)]
    )

    message = "archive identity 'test/identity.json' is unreadable: not a walbucket identity document: "
    assert push.returncode == 10, push.stderr
    assert f"walbucket push {SEG2}: ERROR: {message}" in push.stderr
    assert get.returncode == 210, get.stderr
    assert f"walbucket get {SEG1}: ERROR: {message}" in get.stderr
    assert wal_key(SEG2) not in cli.bucket_keys()
    assert not dest.exists()
    assert leftovers(data_dir) == []


def test_get_that_cannot_write_its_destination_exits_204(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    assert cli.run(["push", str(wal_file(SEG1))], cwd=data_dir).returncode == 0

    result = cli.run(["get", SEG1, "no-such-dir/RECOVERYXLOG"], cwd=data_dir)

    assert_error(
        result, 204, f"get {SEG1}", "cannot write WAL file 'no-such-dir/RECOVERYXLOG': No such file or directory"
    )


def test_get_into_a_cluster_with_another_system_id_exits_205_and_leaves_no_file(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    assert cli.run(["push", str(wal_file(SEG1))], cwd=data_dir).returncode == 0
    (data_dir / "pg_wal" / SEG1).unlink()
    write_pg_control(data_dir, OTHER_SYSTEM_ID)

    result = cli.run(["get", SEG1, "pg_wal/RECOVERYXLOG"], cwd=data_dir)

    assert_error(
        result, 205, f"get {SEG1}",
        f"WAL file '{SEG1}' belongs to system id {SYSTEM_ID}, but this cluster's pg_control has {OTHER_SYSTEM_ID}",
    )  # fmt: skip
    assert "check the bucket and prefix settings" in hint(result)
    assert os.listdir(data_dir / "pg_wal") == []


def test_get_into_a_cluster_with_the_archives_system_id_succeeds(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    assert cli.run(["push", str(wal_file(SEG1))], cwd=data_dir).returncode == 0
    write_pg_control(data_dir, SYSTEM_ID)

    result = cli.run(["get", SEG1, "pg_wal/RECOVERYXLOG"], cwd=data_dir)

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("stored", "restore_partial", "code", "restored_from"),
    [
        ([f"{SEG1}.partial"], "on", 0, f"{SEG1}.partial"),
        ([f"{SEG1}.partial"], "off", 1, None),
        ([SEG1, f"{SEG1}.partial"], "on", 0, SEG1),
        ([], "on", 1, None),
    ],
    ids=["only-partial", "partial-not-wanted", "full-segment-wins", "neither"],
)
def test_restore_partial_falls_back_to_the_partial_only_when_the_segment_is_absent(
    cli: Cli, data_dir: Path, wal_file: Callable[..., Path], stored: list[str], restore_partial: str, code: int,
    restored_from: str | None,
) -> None:  # fmt: skip
    contents = {SEG1: segment_bytes(SEG1), f"{SEG1}.partial": segment_bytes(SEG1, fill=b"half-written timeline")}
    for name in stored:
        wal_file(name, contents[name])
    pushed = cli.run_all([(["push", f"pg_wal/{name}"], cli.env, data_dir) for name in stored]) if stored else []
    assert [r.returncode for r in pushed] == [0] * len(stored), [r.stderr for r in pushed]
    dest = data_dir / "RECOVERYXLOG"

    result = cli.run(["get", SEG1, str(dest)], {**cli.env, "WALBUCKET_RESTORE_PARTIAL": restore_partial}, data_dir)

    assert result.returncode == code, result.stderr
    if restored_from is None:
        assert not dest.exists()
        return
    assert dest.read_bytes() == contents[restored_from]
    assert ("from its .partial" in result.stderr) == restored_from.endswith(".partial")


# --- multipart -----------------------------------------------------------------------------------------------------


def test_a_multipart_upload_is_still_refused_when_the_name_is_taken(
    wb_env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path], s3_client: Any, bucket: str
) -> None:
    env = {
        **wb_env,
        "WALBUCKET_COMPRESSION": "none",
        "WALBUCKET_MULTIPART_THRESHOLD": "6MiB",
        "WALBUCKET_MULTIPART_CHUNK_SIZE": "5MiB",
    }
    data = segment_bytes(SEG1)
    path = wal_file(SEG1)

    first = run_walbucket(["push", str(path)], env, cwd=data_dir)

    assert first.returncode == 0, first.stderr
    stored = head(s3_client, bucket, wal_key(SEG1))
    assert stored["ETag"].strip('"').endswith("-4")  # 5 + 5 + 5 + 1 MiB
    assert stored["Metadata"]["walbucket-sha256"] == sha256(data)
    wal_file(SEG1, fill=b"different bytes, same name")
    again = run_walbucket(["push", str(path)], env, cwd=data_dir)
    assert_error(again, 6, f"push {SEG1}", f"WAL file '{SEG1}' already exists in the archive with different content")
    assert head(s3_client, bucket, wal_key(SEG1))["ETag"] == stored["ETag"]
    restored = run_walbucket(["get", SEG1, "RECOVERYXLOG"], env, cwd=data_dir)
    assert restored.returncode == 0, restored.stderr
    assert (data_dir / "RECOVERYXLOG").read_bytes() == data
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# --- secrets -------------------------------------------------------------------------------------------------------


def test_the_secret_key_never_appears_on_stderr_even_when_verbose(
    wb_env: dict[str, str], data_dir: Path, wal_file: Callable[..., Path]
) -> None:
    path = str(wal_file(SEG1))
    assert wb_env["AWS_SECRET_ACCESS_KEY"] == SECRET_KEY
    calls: list[tuple[list[str], Mapping[str, str], Path]] = [
        (["--verbose", "push", path], wb_env, data_dir),
        (["push", "-v", path], {**wb_env, "WALBUCKET_BUCKET": "wb-test-no-such-bucket"}, data_dir),
        (["get", "-v", SEG2, "RECOVERYXLOG"], wb_env, data_dir),
        (["-v", "get", SEG1, "RECOVERYXLOG"], closed_endpoint(wb_env), data_dir),
        (["-v", "push", path], {**wb_env, "WALBUCKET_COMPRESSION": "bad"}, data_dir),
    ]

    results = run_all(calls)

    assert [r.returncode for r in results] == [0, 7, 1, 208, 3], [r.stderr for r in results]
    assert "walbucket: INFO: created archive identity" in results[0].stderr  # verbose really is verbose
    assert "walbucket: INFO: retrying after" in results[3].stderr
    for result in results:
        assert SECRET_KEY not in result.stderr
        assert SECRET_KEY not in result.stdout


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["push", "--help"]])
def test_main_returns_0_for_help_and_version_instead_of_exiting(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """main() is the seam of in-process callers: it returns every exit code, argparse's included."""
    from walbucket.cli.main import main

    assert main(argv, {}) == 0
    out = capsys.readouterr().out
    assert out.startswith("walbucket ") or "usage: walbucket" in out


def test_main_logs_at_each_calls_own_level_to_the_current_stderr_and_leaves_logging_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In process, as under pytest, the root logger already has handlers: -v must still take effect, per call."""
    import logging

    from walbucket.cli.main import main
    from walbucket.store.memory import MemoryStore

    store = MemoryStore()
    env = {"WALBUCKET_BUCKET": "wal-archive", "HOME": str(tmp_path), "WALBUCKET_CONDITIONAL_WRITES": "required"}
    wal = tmp_path / "pg_wal" / SEG1
    wal.parent.mkdir()
    wal.write_bytes(segment_bytes(SEG1))
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    assert main(["-v", "push", str(wal)], env, open_store=lambda _settings: store) == 0
    assert "walbucket: INFO: created archive identity" in capsys.readouterr().err
    assert (root.level, list(root.handlers)) == before
    wal.write_bytes(segment_bytes(SEG1))
    assert main(["push", str(wal)], env, open_store=lambda _settings: store) == 0
    assert "INFO" not in capsys.readouterr().err  # without -v: warnings only
