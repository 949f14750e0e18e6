"""The console script's entry point: the lean fast path of asynchronous mode, else the full command line.

PostgreSQL runs ``walbucket push %p`` / ``walbucket get %f %p`` once per WAL file. In asynchronous mode most calls
are answered from the spool or by a running worker, so this module tries that first with nothing but os, socket and
json imported, and hands over to cli.run (argparse, settings, and boto3 when needed) for everything else: other
commands or options, a settings file, no running worker, a look-ahead error to report. The fast path reads only the
settings it needs from the environment; the worker it talks to was started by the full command, which validated all
of them.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["fast_path", "run"]

_TRUE = {"1", "true", "yes", "on"}


def run() -> int:
    code = fast_path(sys.argv[1:], os.environ)
    if code is not None:
        return code
    from .cli import run as full_command

    return full_command()


def _spool_root(env: Mapping[str, str]) -> str | None:
    """Find this data directory's spool as settings.py would, from the environment alone; None if unsure."""
    if env.get("WALBUCKET_ASYNC", "").strip().lower() not in _TRUE or env.get("WALBUCKET_CONFIG"):
        return None
    spool_dir = env.get("WALBUCKET_SPOOL_DIR")
    if not spool_dir:
        state_dir = env.get("WALBUCKET_STATE_DIR") or (
            os.path.join(env["HOME"], ".cache", "walbucket") if env.get("HOME") else ""
        )
        if not state_dir:
            return None
        spool_dir = os.path.join(state_dir, "spool")
    from .spoolfiles import cluster_dir

    try:
        return cluster_dir(spool_dir.strip(), ".")
    except OSError:
        return None


def fast_path(argv: Sequence[str], env: Mapping[str, str]) -> int | None:
    """Answer ``push PATH`` or ``get NAME DEST`` in asynchronous mode without starting anything; None to hand over."""
    started = time.monotonic()
    if not ((len(argv) == 2 and argv[0] == "push") or (len(argv) == 3 and argv[0] == "get")):
        return None
    root = _spool_root(env)
    try:
        wait = float(env.get("WALBUCKET_ASYNC_WAIT") or 120)
    except ValueError:
        return None
    if root is None:
        return None
    from .errors import exit_code_for, failure_lines

    command = argv[0]
    subject = f"{command} {os.path.basename(argv[1]) if command == 'push' else argv[1]}"
    try:
        answer = _answer(argv, root, wait)
    except Exception as exc:  # noqa: BLE001 - rendered exactly as the full command renders it
        code = exit_code_for(exc, command, os.path.exists("standby.signal"))
        sys.stderr.write("\n".join(failure_lines(subject, exc, code)) + "\n")
        return code
    if answer is None:
        return None
    line, code = answer
    sys.stderr.write(f"walbucket {subject}: {line} in {time.monotonic() - started:.3f}s\n")
    return code


def _answer(argv: Sequence[str], root: str, wait: float) -> tuple[str, int] | None:
    from . import async_client

    if argv[0] == "push":
        pushed = async_client.push_async(argv[1], root, wait, None)
        return None if pushed is None else (async_client.describe_push(pushed), 0)
    restored = async_client.get_async(argv[1], argv[2], root, wait, None)
    return None if restored is None else async_client.describe_get(restored)
