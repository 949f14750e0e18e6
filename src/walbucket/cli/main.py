"""The command line: parse, load settings, open the store, call a service, render one line, return an exit code.

The only module that reads the environment, prints or exits. It imports botocore only through open_store.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from walbucket.cli.lines import failure_lines, mib, printable, success_line
from walbucket.cli.parser import Answered, ArgumentError, build_parser, command_word
from walbucket.cli.scan import load
from walbucket.cli.wiring import StoreFactory, default_store_factory, open_spool, push_options
from walbucket.core.errors import StoreUnavailable, UsageError, WalbucketError, exit_code_for
from walbucket.core.settings import Settings

if TYPE_CHECKING:
    from walbucket.spooler.spool import Spool

__all__ = ["main", "run"]

log = logging.getLogger("walbucket")


def _starter(args: argparse.Namespace, spool: Spool) -> Callable[[], None]:
    from walbucket.spooler.client import worker_starter

    config = ["--config", args.config] if args.config else []
    command = [sys.executable, "-m", "walbucket", *config, "worker"]
    return worker_starter(command, os.getcwd(), str(spool.root), args.env)


def _push_async(args: argparse.Namespace, settings: Settings) -> str:
    from walbucket.archive.push import archivable_name
    from walbucket.cli.lines import describe_push
    from walbucket.core.errors import WalFileError
    from walbucket.spooler.client import push_async

    path = Path(args.path)
    archivable_name(path)
    if not os.access(path, os.R_OK):
        raise WalFileError(f"cannot read WAL file '{path}': no such file or no permission")
    spool = open_spool(settings, args.fingerprint)
    result = push_async(str(path), str(spool.root), settings.async_wait, _starter(args, spool), args.fingerprint)
    if result is None:  # only without a starter; kept for the type checker
        raise StoreUnavailable("no async worker answered")
    return describe_push(result)


def _push(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    if settings.async_mode:
        return _push_async(args, settings), 0
    from walbucket.archive.push import Uploaded, archive, prepare
    from walbucket.core.keylayout import KeyLayout

    prepared = prepare(Path(args.path), settings.compression, settings.level)  # a bad file never reaches the store
    store = args.open_store(settings)
    options = push_options(settings, store)
    layout = KeyLayout(settings.prefix)
    if options.features is not None:
        store = store.with_features(options.features)
    outcome = archive(prepared, store, layout, options.conditional, Path.cwd(), fallback=options.fallback)
    if isinstance(outcome, Uploaded):
        return f"archived {mib(outcome.size)} as {mib(outcome.stored_size)} {outcome.codec}", 0
    return f"already archived with identical content (duplicate), {mib(outcome.size)}", 0


def _get(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    if settings.async_mode:
        return _get_async(args, settings)
    from walbucket.archive.get import Missing, get
    from walbucket.core.keylayout import KeyLayout

    store = args.open_store(settings)
    outcome = get(
        args.name, Path(args.dest), store, KeyLayout(settings.prefix),
        data_dir=Path.cwd(), restore_partial=settings.restore_partial,
    )  # fmt: skip
    if isinstance(outcome, Missing):
        return "not in the archive", 1
    source = " from its .partial" if outcome.from_partial else ""
    return f"restored {mib(outcome.size)}{source} from {mib(outcome.stored_size)} stored", 0


def _get_async(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    from walbucket.archive.get import restorable_name
    from walbucket.cli.lines import describe_get
    from walbucket.spooler.client import get_async

    restorable_name(args.name)
    spool = open_spool(settings, args.fingerprint)
    starter = _starter(args, spool)
    result = get_async(args.name, args.dest, str(spool.root), settings.async_wait, starter, args.fingerprint)
    if result is None:  # only without a starter; kept for the type checker
        raise StoreUnavailable("no async worker answered")
    return describe_get(result)


def _worker(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    from walbucket.spooler.worker import Worker, acquire_lock

    logging.getLogger("walbucket").setLevel(logging.INFO)
    spool = open_spool(settings, args.fingerprint)
    if acquire_lock(spool, wait=_LOCK_WAIT) is None:
        return "another worker serves this data directory", 0
    store = args.open_store(settings)
    worker = Worker(settings, Path.cwd(), spool, store, lambda: push_options(settings, store))
    for signum in (signal.SIGTERM, signal.SIGINT):  # stop gracefully: every waiting command gets its answer
        signal.signal(signum, worker.signalled)
    return f"exited: {worker.serve()}", 0


_LOCK_WAIT = 10.0  # seconds a new worker waits for an old one that drains after a settings change


def _lifecycle(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    import json

    from walbucket.admin.lifecycle import lifecycle_configuration, policy_from_options
    from walbucket.core.keylayout import KeyLayout

    configuration = lifecycle_configuration(KeyLayout(settings.prefix), policy_from_options(vars(args)))
    print(json.dumps(configuration, indent=2))
    return "", 0


# Each command: (parsed arguments, settings) -> (the one log line, or "" for none; exit code).
COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], tuple[str, int]]] = {
    "push": _push,
    "get": _get,
    "worker": _worker,
    "lifecycle": _lifecycle,
}


def _handler(command: str) -> Callable[[argparse.Namespace, Settings], tuple[str, int]]:
    if command in COMMANDS:
        return COMMANDS[command]
    from walbucket.cli.admin import ADMIN_COMMANDS

    return ADMIN_COMMANDS[command]


class _Terminated(BaseException):
    pass


def _on_sigterm(_signum: int, _frame: object) -> NoReturn:
    raise _Terminated


def main(argv: Sequence[str], env: Mapping[str, str], open_store: StoreFactory = default_store_factory) -> int:
    """Run one command and return its exit code (docs/exit-codes.md).

    ``env`` stands for the process environment; ``open_store`` turns the settings into the store the command uses.
    """
    started = time.monotonic()
    try:
        args = build_parser().parse_args(argv)
    except Answered as answered:
        return answered.status
    except ArgumentError as exc:
        print(f"{printable(str(exc))}\n(walbucket --help lists the commands)", file=sys.stderr)
        return UsageError.get_exit_code if command_word(argv) == "get" else UsageError.exit_code
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with _log_to_stderr(logging.DEBUG if args.verbose else logging.WARNING):
        return _run(args, env, open_store, started)


def _run(args: argparse.Namespace, env: Mapping[str, str], open_store: StoreFactory, started: float) -> int:
    subject = {"get": lambda: f"get {args.name}", "push": lambda: f"push {Path(args.path).name}"}.get(
        args.command, lambda: str(args.command)
    )()
    try:
        settings, args.fingerprint = load(args.config, env)
        args.env = env
        args.open_store = open_store
        line, code = _handler(args.command)(args, settings)
    except _Terminated:
        raise
    except Exception as exc:
        if not isinstance(exc, WalbucketError):
            log.debug("internal error", exc_info=True)
        code = exit_code_for(exc, args.command, Path("standby.signal").exists())
        print("\n".join(failure_lines(subject, exc, code, time.monotonic() - started)), file=sys.stderr)
        return code
    if line:
        print(success_line(subject, line, time.monotonic() - started), file=sys.stderr)
    return code


class _OneLineFormatter(logging.Formatter):
    """Every log record on one line: control characters in a name or message are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


@contextmanager
def _log_to_stderr(level: int) -> Iterator[None]:
    """Log at ``level`` to the current stderr for one command, then leave the root logger as it was (main() may run
    many times in one process: in-process callers, tests)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter("walbucket: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def run() -> int:
    """Console-script entry point: a SIGTERM still removes temporary files, then ends the process as SIGTERM."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return main(sys.argv[1:], os.environ)
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return 143
