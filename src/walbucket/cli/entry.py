"""The console script's entry point: the lean fast path of asynchronous mode, else the full command line.

PostgreSQL runs ``walbucket push %p`` / ``walbucket get %f %p`` once per WAL file. In asynchronous mode most calls
are answered from the spool or by a running worker, so this module tries that first with nothing but os, socket and
json imported, and hands over to cli/main.py (argparse, settings, and boto3 when needed) for everything else: other
commands or options, no running worker, a look-ahead error to report, a settings file it is unsure how to read. The
fast path reads only the settings it needs (async, spool_dir, state_dir, async_wait: cli/scan.py) from the
environment and the settings file; the worker it talks to was started by the full command, which validated all of them.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["fast_path", "run"]


def run() -> int:
    """The console script: never a Python traceback's exit 1, which restore_command would take for "not archived"."""
    try:
        code = fast_path(sys.argv[1:], os.environ)
        if code is not None:
            return code
        from walbucket.cli.main import run as full_command

        return full_command()
    except Exception as exc:  # noqa: BLE001 - the last line of defence of the exit-code contract
        get = next((a for a in sys.argv[1:] if not a.startswith("-")), None) == "get"
        sys.stderr.write(
            f"walbucket: ERROR: internal error: {exc!r} (exit {250 if get else 70})\n".encode(
                "ascii", "backslashreplace"
            ).decode()
        )
        return 250 if get else 70


def _plain_argv(argv: Sequence[str]) -> bool:
    """``push PATH`` or ``get NAME DEST`` and no option: ``get NAME -v`` is for argparse, not a file named -v."""
    shape = (len(argv) == 2 and argv[0] == "push") or (len(argv) == 3 and argv[0] == "get")
    return shape and not any(arg.startswith("-") for arg in argv[1:])


def fast_path(argv: Sequence[str], env: Mapping[str, str]) -> int | None:
    """Answer ``push PATH`` or ``get NAME DEST`` in asynchronous mode without starting anything; None to hand over."""
    started = time.monotonic()
    if not _plain_argv(argv):
        return None
    from walbucket.cli.scan import fast_settings

    found = fast_settings(env)
    if found is None:
        return None
    spool_dir, wait, config = found
    from walbucket.spooler.files import cluster_dir

    try:
        root = cluster_dir(spool_dir, ".")
    except OSError:
        return None
    from walbucket.cli.lines import failure_lines, success_line
    from walbucket.core.errors import exit_code_for
    from walbucket.core.fingerprint import settings_fingerprint

    fingerprint = settings_fingerprint(env, env.get("WALBUCKET_CONFIG"), config)
    command = argv[0]
    subject = f"{command} {os.path.basename(argv[1]) if command == 'push' else argv[1]}"
    try:
        answer = _answer(argv, root, wait, fingerprint)
    except Exception as exc:  # noqa: BLE001 - rendered exactly as the full command renders it
        code = exit_code_for(exc, command, os.path.exists("standby.signal"))
        sys.stderr.write("\n".join(failure_lines(subject, exc, code, time.monotonic() - started)) + "\n")
        return code
    if answer is None:
        return None
    line, code = answer
    sys.stderr.write(success_line(subject, line, time.monotonic() - started) + "\n")
    return code


def _answer(argv: Sequence[str], root: str, wait: float, fingerprint: str) -> tuple[str, int] | None:
    from walbucket.cli.lines import describe_get, describe_push
    from walbucket.spooler.client import get_async, push_async

    if argv[0] == "push":
        pushed = push_async(argv[1], root, wait, None, fingerprint)
        return None if pushed is None else (describe_push(pushed), 0)
    restored = get_async(argv[1], argv[2], root, wait, None, fingerprint)
    return None if restored is None else describe_get(restored)
