"""The command line's grammar: every command, its options and its --help text (argparse, built on each call).

Parsing only: cli/main.py runs what was parsed, cli/admin.py the commands people run by hand.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, NoReturn

from walbucket import __version__
from walbucket.core.sources import CONFIG_ENV

__all__ = ["Answered", "ArgumentError", "build_parser", "command_word"]

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


class Answered(Exception):
    """argparse answered the command line itself (--help, --version): nothing to run; ``status`` is the exit code."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ArgumentError(Exception):
    """argparse refused the command line: its message, without argparse's exit."""

    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ArgumentError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        """--help and --version end here: their exit code goes back to main() as a value, not as SystemExit."""
        if message:
            self._print_message(message)
        raise Answered(status)


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


def build_parser() -> _Parser:
    """The whole command line: every command, its options and its --help."""
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
    _add_admin_commands(commands, common)
    return parser


_SHOW_HELP = """\
Show the archive: its identity; per timeline its parent and switch point, first and last segment, count, sizes
and compression ratio; partial, history and backup history files. Lists by key prefix in parallel."""
_VERIFY_HELP = """\
Verify the archive: gaps in each timeline (with switch points taken into account), missing or inconsistent
history files, orphan .partial files, and objects whose metadata or tags disagree with the archive identity
(a sample; --deep downloads every object and checks it as get would). When the archive records base backups
(.backup files), also compare the bucket's lifecycle rules with them and warn when WAL a backup needs is gone or
expires first: one more request, which needs s3:GetLifecycleConfiguration. Exit 11 when it finds an error."""
_CHECK_HELP = """\
Check a setup before PostgreSQL relies on it: credentials, bucket, conditional writes, what uploads may carry (tags,
a checksum header the store checks, If-None-Match on multipart completion), the permissions push and get need (on
a probe object under <prefix>/probe/), the local cluster (--pgdata or the current directory) against the archive
identity and, with --dsn, that a forced WAL switch arrives in the archive. Exit 11 when a check fails."""
_BACKFILL_HELP = """\
Push the finished WAL files of a pg_wal directory that the archive lacks, e.g. what an old primary had not archived
at failover. Each file gets push's identity and duplicate checks; different content already archived is reported as
a conflict and never overwritten. Exit 11 when a file is in conflict or refused."""


def _add_admin_commands(commands: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    """Add the admin commands' parsers to the main parser's subcommands."""

    def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, parents=[common], help=summary, description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
        return parser

    show = add("show", "show the archive's timelines, ranges and sizes", _SHOW_HELP)
    show.add_argument("--exact", action="store_true", help="read each object's original size (a HEAD per object)")
    show.add_argument("--jobs", type=_positive, metavar="N", help="parallel requests (default 16)")
    verify = add("verify", "find gaps and inconsistencies in the archive (exit 11)", _VERIFY_HELP)
    verify.add_argument("--deep", action="store_true", help="download and check every object")
    verify.add_argument("--jobs", type=_positive, metavar="N", help="parallel requests (default 16; 4 with --deep)")
    check = add("check", "check settings, permissions and archiving of a new setup (exit 11)", _CHECK_HELP)
    check.add_argument("--pgdata", metavar="DIR", help="data directory of the local cluster (default: current)")
    check.add_argument("--dsn", metavar="CONNSTRING", help="connect with psql, switch WAL, watch it arrive")
    check.add_argument("--psql", default="psql", metavar="PATH", help="the psql program (default: psql)")
    check.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="wait for the segment")
    backfill = add("backfill", "push what a pg_wal directory holds and the archive lacks (exit 11)", _BACKFILL_HELP)
    backfill.add_argument("pg_wal", metavar="PGWAL_DIR", help="the pg_wal directory, e.g. of the old primary")
    backfill.add_argument("--dry-run", action="store_true", help="tell what would be pushed; write nothing")
    backfill.add_argument("--include-unmarked", action="store_true", help="also segments without archive_status")
    backfill.add_argument("--jobs", type=_positive, metavar="N", help="parallel pushes (default 4)")


def _positive(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 256, not '{text}'")
    return int(text)


def command_word(argv: Sequence[str]) -> str | None:
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
