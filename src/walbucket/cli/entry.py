"""The console script's entry point: the lean fast path of asynchronous mode, else the full command line.

PostgreSQL runs ``walbucket push %p`` / ``walbucket get %f %p`` once per WAL file. In asynchronous mode most calls
are answered from the spool or by a running worker, so this module tries that first with nothing but os, socket and
json imported, and hands over to cli.run (argparse, settings, and boto3 when needed) for everything else: other
commands or options, no running worker, a look-ahead error to report, a settings file it is unsure how to read. The
fast path reads only the settings it needs (async, spool_dir, state_dir, async_wait) from the environment and the
settings file; the worker it talks to was started by the full command, which validated all of them.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["fast_path", "home_dir", "run", "scan_flat_toml"]

_TRUE = {"1", "true", "yes", "on"}


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


_FAST_SETTINGS = ("async", "spool_dir", "state_dir", "async_wait")


def _settings(env: Mapping[str, str]) -> tuple[dict[str, object], bytes | None] | None:
    """Return the settings the fast path needs, the environment over the settings file, and the file's bytes for
    the settings fingerprint; None if unsure."""
    if any(k.startswith("WALBUCKET_") and not k.isupper() for k in env):
        return None  # settings.py takes WALBUCKET_Spool_Dir too: leave such names to it
    values: dict[str, object] = {}
    config = env.get("WALBUCKET_CONFIG")
    raw = None
    if config:
        try:
            with open(config, "rb") as f:
                raw = f.read(_MAX_CONFIG + 1)
            text = raw.decode()
        except (OSError, UnicodeDecodeError):
            return None  # the full command reports it
        doc = scan_flat_toml(text) if len(text) <= _MAX_CONFIG else None
        if doc is None:
            return None
        values.update((k, v) for k, v in doc.items() if k in _FAST_SETTINGS)
        if any(isinstance(v, str) and not v.strip() for v in values.values()):
            return None  # settings.py refuses an empty string
    for name in _FAST_SETTINGS:
        value = env.get("WALBUCKET_" + name.upper())
        if value == "":
            values.pop(name, None)  # an empty variable unsets, as in settings.py
        elif value is not None:
            values[name] = value
    return values, raw


def _spool_root(env: Mapping[str, str], values: Mapping[str, object]) -> str | None:
    """Find this data directory's spool as settings.py would; None if async is off or the spool is unknown."""
    flag = values.get("async")
    if not (flag is True or (isinstance(flag, str) and flag.strip().lower() in _TRUE)):
        return None
    spool_dir = values.get("spool_dir")
    if not spool_dir:
        state_dir = values.get("state_dir")
        if not state_dir:
            home = home_dir(env)
            state_dir = os.path.join(home, ".cache", "walbucket") if home else ""
        if not isinstance(state_dir, str) or not state_dir:
            return None
        spool_dir = os.path.join(state_dir.strip(), "spool")
    if not isinstance(spool_dir, str):
        return None
    from walbucket.spooler.files import cluster_dir

    try:
        return cluster_dir(spool_dir.strip(), ".")
    except OSError:
        return None


def home_dir(env: Mapping[str, str]) -> str:
    """HOME, or the user's home directory from the password database (Debian's pg_ctlcluster starts PostgreSQL
    without HOME); "" when neither says."""
    if env.get("HOME"):
        return env["HOME"]
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return ""  # no such user: the full command says what is missing


_MAX_CONFIG = 1 << 16
_BARE_KEY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_DIGITS = frozenset("0123456789_")
_ODD_CHARACTERS = frozenset("\x7f\x85\u2028\u2029")


def scan_flat_toml(text: str) -> dict[str, object] | None:
    """Read a flat TOML document of ``key = value`` lines without importing a TOML parser; None if unsure.

    Understood: blank and comment lines, bare keys, basic strings without escapes, literal strings, true, false and
    decimal numbers (returned as their text), each with an optional trailing comment. Anything else (tables, arrays,
    escapes, multi-line strings, a repeated key) gives None, and the full command reads the file with tomllib.
    """
    text = text.replace("\r\n", "\n")
    if any((c < " " and c not in "\t\n") or c in _ODD_CHARACTERS for c in text):
        return None  # control characters (TOML refuses them) or line breaks that only str.splitlines knows
    doc: dict[str, object] = {}
    for raw in text.split("\n"):
        line = raw.strip(" \t")
        if not line or line.startswith("#"):
            continue
        key, sep, rest = line.partition("=")
        key = key.strip(" \t")
        if not sep or not key or not set(key) <= _BARE_KEY or key in doc:
            return None
        value = _scan_value(rest.strip(" \t"))
        if value is None:
            return None
        doc[key] = value
    return doc


def _scan_value(text: str) -> object | None:
    """Return the value at the start of ``text`` when only a comment follows it; None if unsure."""
    if text[:1] in {'"', "'"}:
        quote = text[0]
        end = text.find(quote, 1)
        body = text[1:end]
        if end < 0 or text.startswith(quote * 3) or "\\" in body or any(c < " " and c != "\t" for c in body):
            return None
        value: object = body
        rest = text[end + 1 :]
    else:
        word, comment, rest = text.partition("#")
        word = word.rstrip(" \t")
        rest = comment + rest
        if word in {"true", "false"}:
            value = word == "true"
        elif _decimal(word):
            value = word
        else:
            return None
    rest = rest.strip(" \t")
    return value if not rest or rest.startswith("#") else None


def _decimal(word: str) -> bool:
    """A TOML integer or float in plain decimal notation (``-12``, ``1_000``, ``30.5``), no exponent."""
    whole, dot, fraction = (word[1:] if word[:1] in "+-" else word).partition(".")
    parts = [whole, fraction] if dot else [whole]
    if whole[:1] == "0" and len(whole) > 1:
        return False  # TOML has no leading zeros
    return all(p[:1].isdigit() and p[-1:].isdigit() and "__" not in p and set(p) <= _DIGITS for p in parts)


def _wait(values: Mapping[str, object]) -> float | None:
    """``async_wait`` in seconds; None when settings.py would refuse it (the full command says why)."""
    try:
        wait = float(str(values.get("async_wait") or 120))
    except ValueError:
        return None
    return wait if 0 < wait <= 86400 else None


def _plain_argv(argv: Sequence[str]) -> bool:
    """``push PATH`` or ``get NAME DEST`` and no option: ``get NAME -v`` is for argparse, not a file named -v."""
    shape = (len(argv) == 2 and argv[0] == "push") or (len(argv) == 3 and argv[0] == "get")
    return shape and not any(arg.startswith("-") for arg in argv[1:])


def fast_path(argv: Sequence[str], env: Mapping[str, str]) -> int | None:
    """Answer ``push PATH`` or ``get NAME DEST`` in asynchronous mode without starting anything; None to hand over."""
    started = time.monotonic()
    if not _plain_argv(argv):
        return None
    found = _settings(env)
    if found is None:
        return None
    values, config = found
    root = _spool_root(env, values)
    wait = _wait(values)
    if root is None or wait is None:
        return None
    from walbucket.core.errors import exit_code_for, failure_lines, printable
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
    sys.stderr.write(printable(f"walbucket {subject}: {line} in {time.monotonic() - started:.3f}s") + "\n")
    return code


def _answer(argv: Sequence[str], root: str, wait: float, fingerprint: str) -> tuple[str, int] | None:
    from walbucket.spooler import client as async_client

    if argv[0] == "push":
        pushed = async_client.push_async(argv[1], root, wait, None, fingerprint)
        return None if pushed is None else (async_client.describe_push(pushed), 0)
    restored = async_client.get_async(argv[1], argv[2], root, wait, None, fingerprint)
    return None if restored is None else async_client.describe_get(restored)
