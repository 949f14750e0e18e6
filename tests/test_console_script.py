"""The installed console script, ``$VENV/bin/walbucket``, as PostgreSQL runs it: exec'd by its path once per WAL file.

It is bin/walbucket of the checkout (pyproject.toml's script-files), not a wrapper generated for an entry point: pip's
wrapper imports re with pip before 25.2, about 9 ms of every call on a fast path that otherwise costs about 10. The
fast-path calls run in a fake data directory whose spool answers them (tools/bench_micro.py's SpooledCluster, which
``make bench`` times): no worker, no S3.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from bench_micro import UNWANTED_ON_FAST_PATH, SpooledCluster, imported_modules
from conftest import WALBUCKET
from walbucket.cli.entry import _plain_argv, fast_path
from walbucket.spooler import files as spoolfiles

# Besides UNWANTED_ON_FAST_PATH (re, json, argparse, tomllib, boto3, botocore): the full command line's modules.
NOT_ON_FAST_PATH = {*UNWANTED_ON_FAST_PATH, "walbucket.cli.main", "walbucket.core.settings", "logging", "s3transfer"}


@pytest.fixture
def box(tmp_path: Path) -> SpooledCluster:
    return SpooledCluster(tmp_path)


def run_profiled(box: SpooledCluster, argv: tuple[str, ...]) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the installed script as archive_command does, with Python's import profile on stderr."""
    result = box.run(WALBUCKET, argv, {"PYTHONPROFILEIMPORTTIME": "1"})
    return result, imported_modules(result.stderr)


def test_the_installed_script_is_bin_walbucket_and_imports_only_sys_and_the_entry_module() -> None:
    text = WALBUCKET.read_text()
    shebang, _, body = text.partition("\n")
    assert shebang.startswith("#!") and Path(shebang[2:].strip()).samefile(sys.executable)  # pip rewrote "#!python"
    tree = ast.parse(body)
    imports = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imports |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imports == {"sys", "walbucket.cli.entry"}
    assert "sys.exit(run())" in body  # run() is the one entry function: fast path first, then the full command line
    # the one walbucket script: no console_scripts entry point, which would make pip write its own wrapper over it
    assert not [e for e in metadata.distribution("walbucket").entry_points if e.group == "console_scripts"]


def test_the_interpreter_starts_without_re(box: SpooledCluster) -> None:
    """site and the virtualenv's .pth files (the editable install's is a path line, not an import finder) import no
    re: nothing before walbucket's entry module does, so the fast path can answer without it."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"], env=box.env, capture_output=True, text=True, check=True
    )
    assert "site" in imported_modules(result.stderr)
    assert not set(imported_modules(result.stderr)) & NOT_ON_FAST_PATH


@pytest.mark.parametrize(
    ("argv", "answer"),
    [(SpooledCluster.PUSH, "archived (stored ahead by the async worker)"), (SpooledCluster.GET, "from the prefetch")],
    ids=["push", "get"],
)
def test_a_fast_path_answer_imports_neither_re_nor_the_full_command_line(
    box: SpooledCluster, argv: tuple[str, ...], answer: str
) -> None:
    box.arm(argv)

    result, modules = run_profiled(box, argv)

    assert result.returncode == 0, result.stderr
    assert f"walbucket {argv[0]} {SpooledCluster.NAME}: " in result.stderr and answer in result.stderr
    assert "walbucket.cli.entry" in modules and "walbucket.spooler.client" in modules  # the fast path ran ...
    assert not set(modules) & NOT_ON_FAST_PATH  # ... and answered without these
    if argv[0] == "get":
        assert box.restored.read_bytes() == box.wal.read_bytes()


def test_a_fast_path_failure_exits_with_its_error_code_without_re(box: SpooledCluster) -> None:
    error = {"status": "error", "class": "ArchiveConflict", "message": "another file is archived under this name"}
    Path(spoolfiles.error_path(box.root, box.NAME)).write_bytes(spoolfiles.encode_error(error, box.fingerprint))

    result, modules = run_profiled(box, SpooledCluster.PUSH)

    assert result.returncode == 6, result.stderr
    assert f"walbucket push {box.NAME}: ERROR: another file is archived under this name (exit 6 after" in result.stderr
    assert "walbucket.cli.entry" in modules and not set(modules) & NOT_ON_FAST_PATH


# --- argv on the fast path: options go to argparse, never into a file name ---------------------------------------


@pytest.mark.parametrize(
    ("argv", "plain"),
    [
        (["push", "pg_wal/000000010000000000000001"], True),
        (["get", "000000010000000000000001", "pg_wal/RECOVERYXLOG"], True),
        (["get", "00000002.history", "pg_wal/RECOVERYHISTORY"], True),
        (["get", "000000010000000000000001", "-v"], False),  # DEST is missing: not a file named -v
        (["get", "000000010000000000000001", "--verbose"], False),
        (["get", "-v", "000000010000000000000001"], False),
        (["get", "--", "000000010000000000000001"], False),
        (["push", "-v"], False),
        (["push", "--help"], False),
        (["push", "-"], False),
        (["-v", "push", "pg_wal/000000010000000000000001"], False),
        (["get", "-v", "000000010000000000000001", "pg_wal/RECOVERYXLOG"], False),
        (["push", "pg_wal/000000010000000000000001", "extra"], False),
        (["get", "000000010000000000000001"], False),
        (["check", "x"], False),
        ([], False),
    ],
)
def test_only_the_plain_shapes_postgresql_uses_take_the_fast_path(argv: list[str], plain: bool) -> None:
    assert _plain_argv(argv) is plain


@pytest.mark.parametrize(
    "argv",
    [
        ("get", SpooledCluster.NAME, "-v"),
        ("get", SpooledCluster.NAME, "--verbose"),
        ("get", "-v", SpooledCluster.NAME),
        ("push", "-v", f"pg_wal/{SpooledCluster.NAME}"),
    ],
)
def test_the_fast_path_declines_options_even_when_the_spool_could_answer(
    box: SpooledCluster, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
) -> None:
    box.arm(SpooledCluster.PUSH)
    box.arm(SpooledCluster.GET)
    monkeypatch.chdir(box.data_dir)

    assert fast_path(list(argv), box.env) is None

    assert Path(spoolfiles.ack_path(box.root, box.NAME)).exists()  # neither answer was taken
    assert Path(spoolfiles.prefetched_path(box.root, box.fingerprint, box.NAME)).exists()
    assert sorted(p.name for p in box.data_dir.rglob("*")) == [box.NAME, "pg_wal"]  # no file named after an option


@pytest.mark.parametrize("option", ["-v", "--verbose"])
def test_get_name_then_an_option_is_a_usage_error_not_a_restore_into_a_file_named_after_it(
    box: SpooledCluster, option: str
) -> None:
    box.arm(SpooledCluster.GET)

    result = box.run(WALBUCKET, ("get", SpooledCluster.NAME, option))

    assert result.returncode == 202, result.stderr  # argparse's usage error, in get's range
    assert "the following arguments are required: DEST" in result.stderr
    assert not (box.data_dir / option).exists()
    assert Path(spoolfiles.prefetched_path(box.root, box.fingerprint, box.NAME)).exists()  # still there for %p
