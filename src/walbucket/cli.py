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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .errors import INTERNAL_EXIT, INTERNAL_GET_EXIT, ConfigError, StoreUnavailable, UsageError, WalbucketError
from .settings import CONFIG_ENV, Settings, load_settings

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


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _ArgumentError(f"{self.prog}: {message}")


def _parser() -> _Parser:
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="PATH", help=f"TOML settings file (default: ${CONFIG_ENV})")
    common.add_argument("-v", "--verbose", action="store_true", help="log each request and decision")
    parser = _Parser(
        prog="walbucket", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
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
    return parser


def _load(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    path = args.config or env.get(CONFIG_ENV)
    doc: dict[str, Any] = {}
    if path:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config file '{path}': {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file '{path}' is not valid TOML: {exc}") from None
    return load_settings(doc, env, config_name=f"'{path}'" if path else "config file")


def _endpoint_id(settings: Settings) -> str:
    return f"{settings.endpoint_url or 'aws:' + (settings.region or 'default')}/{settings.bucket}"


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB" if size >= 1 << 16 else f"{size} bytes"


def _push(args: argparse.Namespace, settings: Settings) -> str:
    from .conditional import conditional_writes_usable
    from .keylayout import KeyLayout
    from .push import PushOptions, Uploaded, push
    from .store.factory import open_store

    store = open_store(settings)
    layout = KeyLayout(settings.prefix)
    state_dir = Path(settings.state_dir) if settings.state_dir else None
    conditional = conditional_writes_usable(
        settings.conditional_writes, store, layout, _endpoint_id(settings), state_dir
    )
    options = PushOptions(settings.compression, settings.level, conditional)
    outcome = push(Path(args.path), store, layout, options, data_dir=Path.cwd())
    if isinstance(outcome, Uploaded):
        return f"archived {_mib(outcome.size)} as {_mib(outcome.stored_size)} {outcome.codec}"
    return f"already archived with identical content (duplicate), {_mib(outcome.size)}"


def _get(args: argparse.Namespace, settings: Settings) -> tuple[str, int]:
    from .get import Missing, get
    from .keylayout import KeyLayout
    from .store.factory import open_store

    store = open_store(settings)
    outcome = get(
        args.name, Path(args.dest), store, KeyLayout(settings.prefix),
        data_dir=Path.cwd(), restore_partial=settings.restore_partial,
    )  # fmt: skip
    if isinstance(outcome, Missing):
        return "not in the archive", 1
    source = " from its .partial" if outcome.from_partial else ""
    return f"restored {_mib(outcome.size)}{source} from {_mib(outcome.stored_size)} stored", 0


class _Terminated(BaseException):
    pass


def _on_sigterm(_signum: int, _frame: object) -> NoReturn:
    raise _Terminated


def main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run one command and return its exit code (docs/exit-codes.md)."""
    started = time.monotonic()
    is_get = "get" in argv
    try:
        args = _parser().parse_args(argv)
    except _ArgumentError as exc:
        print(f"{exc}\n(walbucket --help lists the commands)", file=sys.stderr)
        return UsageError.get_exit_code if is_get else UsageError.exit_code
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="walbucket: %(levelname)s: %(message)s"
    )
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    subject = f"{args.command} {args.name if args.command == 'get' else Path(args.path).name}"
    try:
        settings = _load(args, env)
        if args.command == "push":
            line, code = _push(args, settings), 0
        else:
            line, code = _get(args, settings)
    except WalbucketError as exc:
        code = exc.exit_code
        if args.command == "get":
            standby = isinstance(exc, StoreUnavailable) and Path("standby.signal").exists()
            code = StoreUnavailable.standby_get_exit_code if standby else exc.get_exit_code
        print(f"walbucket {subject}: ERROR: {exc.message} (exit {code})", file=sys.stderr)
        if exc.hint:
            print(f"HINT: {exc.hint}", file=sys.stderr)
        return code
    except _Terminated:
        raise
    except Exception as exc:
        code = INTERNAL_GET_EXIT if args.command == "get" else INTERNAL_EXIT
        log.debug("internal error", exc_info=True)
        print(f"walbucket {subject}: ERROR: internal error: {exc!r} (exit {code})", file=sys.stderr)
        return code
    print(f"walbucket {subject}: {line} in {time.monotonic() - started:.3f}s", file=sys.stderr)
    return code


def run() -> int:
    """Console-script entry point: a SIGTERM still removes temporary files, then ends the process as SIGTERM."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return main(sys.argv[1:], os.environ)
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return 143
