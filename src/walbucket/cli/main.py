"""The command line: parse, load settings, open the store, call a service, render one line, return an exit code.

The only module that reads the environment, prints or exits. It imports boto3 only through open_store.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from walbucket import __version__
from walbucket.cli.lines import failure_lines, mib, printable, success_line
from walbucket.cli.scan import load
from walbucket.cli.wiring import StoreFactory, default_store_factory, open_spool, push_options
from walbucket.core.errors import StoreUnavailable, UsageError, WalbucketError, exit_code_for
from walbucket.core.settings import CONFIG_ENV, Settings

if TYPE_CHECKING:
    from walbucket.spooler.spool import Spool

__all__ = ["main", "run"]

log = logging.getLogger("walbucket")

_DESCRIPTION = """\
Archive PostgreSQL's write-ahead log to S3-compatible object storage and restore it.

  archive_command = 'walbucket push %p'
  restore_command = 'walbucket get %f %p'

Settings come from WALBUCKET_* environment variables and a TOML file (--config or WALBUCKET_CONFIG);
credentials from the AWS SDK's standard chain. See docs/configuration.md and docs/exit-codes.md."""

_PUSH_HELP = """\
Archive one WAL file (segment, .partial, .history or .backup) for archive_command.
Exit 0 only once the object is stored; an identical copy already in the archive is success;
a different copy under the same name is refused (exit 6) and never overwritten."""

_GET_HELP = """\
Restore WAL file NAME to DEST for restore_command, verified and written atomically.
Exit 0 restored; 1 not in the archive; 8 archive unreachable on a standby (PostgreSQL retries);
above 125 (202-250) for any other failure, which aborts recovery instead of ending it early."""


_WORKER_HELP = """\
Run the asynchronous worker for the data directory that is the current directory, in the foreground.
push and get start it on their own when async = on; it pushes ready WAL ahead and prefetches WAL for recovery
into the spool directory, and exits after async_idle_exit seconds without work."""


_LIFECYCLE_HELP = """\
Print the S3 lifecycle configuration (JSON) that expires segments, .partial and .backup files under the prefix and
never history files or identity.json, for 'aws s3api put-bucket-lifecycle-configuration --lifecycle-configuration'
or 'mc ilm rule import'. Defaults equal terraform/modules/walbucket-archive's on an unversioned bucket (with
versioning on, add --noncurrent-days 7 as the module does); see docs/retention.md."""

_LIFECYCLE_OPTIONS = (
    ("--wal-days", "wal_days", int, "expire segments after DAYS (default 14)"),
    ("--partial-days", "partial_days", int, "expire .partial files after DAYS (default 7)"),
    ("--backup-days", "backup_days", int, "expire .backup files after DAYS (default: --wal-days - 1)"),
    ("--transition-days", "transition_days", int, "move segments to --transition-class after DAYS (default: never)"),
    ("--transition-class", "transition_storage_class", str, "STANDARD_IA (default), ONEZONE_IA, GLACIER_IR, ..."),
    ("--abort-multipart-days", "abort_incomplete_multipart_days", int, "abort unfinished uploads (default 1; 0 off)"),
    ("--noncurrent-days", "noncurrent_days", int, "expire noncurrent versions after DAYS (default: never)"),
)


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _ArgumentError(f"{self.prog}: {message}")


def _common_options(defaults: bool) -> _Parser:
    # A subcommand's defaults overwrite what the main parser parsed, so the subcommands' copies of these options
    # have no default: 'walbucket --config F push P' and 'walbucket push --config F P' both read F.
    keep: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="PATH", help=f"TOML settings file (default: ${CONFIG_ENV})", **keep)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also log retries, the conditional-write probe and identity creation",
        **keep,
    )
    return common


def _parser() -> _Parser:
    common = _common_options(defaults=False)
    parser = _Parser(
        prog="walbucket", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(defaults=True)],
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"walbucket {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    push = commands.add_parser(
        "push", parents=[common], help="archive one WAL file (archive_command)", description=_PUSH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    push.add_argument("path", metavar="WAL_PATH", help="path of the WAL file (%%p)")
    get = commands.add_parser(
        "get", parents=[common], help="restore one WAL file (restore_command)", description=_GET_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    get.add_argument("name", metavar="NAME", help="WAL file name to restore (%%f)")
    get.add_argument("dest", metavar="DEST", help="path to write it to (%%p)")
    commands.add_parser(
        "worker", parents=[common], help="run the async worker of the data directory in the current directory",
        description=_WORKER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    lifecycle = commands.add_parser(
        "lifecycle", parents=[common], help="print the bucket lifecycle configuration that expires old WAL (JSON)",
        description=_LIFECYCLE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    for option, dest, kind, text in _LIFECYCLE_OPTIONS:
        lifecycle.add_argument(option, dest=dest, type=kind, metavar="DAYS" if kind is int else "CLASS", help=text)
    from walbucket.cli.admin import add_admin_commands

    add_admin_commands(commands, common)
    return parser


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


def _command_word(argv: Sequence[str]) -> str | None:
    """Find the command in an argv argparse refused: the first word that is neither an option nor --config's value."""
    words = iter(argv)
    for word in words:
        if word == "--":
            return next(words, None)
        if len(word) > 2 and "--config".startswith(word):  # argparse takes --conf F as --config F
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


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
        args = _parser().parse_args(argv)
    except _ArgumentError as exc:
        print(f"{printable(str(exc))}\n(walbucket --help lists the commands)", file=sys.stderr)
        return UsageError.get_exit_code if _command_word(argv) == "get" else UsageError.exit_code
    _log_to_stderr(logging.DEBUG if args.verbose else logging.WARNING)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
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


def _log_to_stderr(level: int) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLineFormatter("walbucket: %(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def run() -> int:
    """Console-script entry point: a SIGTERM still removes temporary files, then ends the process as SIGTERM."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return main(sys.argv[1:], os.environ)
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return 143
