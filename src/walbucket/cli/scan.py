"""Settings as the command line finds them: the settings file, the environment, the home directory.

Two readers over one set of rules (core/sources.py): :func:`fast_settings` for the lean fast path, which scans a
flat settings file without a TOML parser and reads only the four settings it needs, and :func:`load` for the full
command, which parses the file with tomllib and validates every setting (core/settings.py). Module-level imports are
os only: the fast path imports this module once per WAL file.
"""

from __future__ import annotations

import os

from walbucket.core.sources import (
    CONFIG_ENV,
    DEFAULT_ASYNC_WAIT,
    default_spool_dir,
    default_state_dir,
    parse_flag,
    parse_seconds,
    parse_text,
    raw_settings,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from walbucket.core.settings import Settings

__all__ = ["fast_settings", "home_dir", "load", "scan_flat_toml"]


def fast_settings(env: Mapping[str, str]) -> tuple[str, float, bytes | None] | None:
    """Return the spool directory, ``async_wait`` and the settings file's bytes (for the settings fingerprint) when
    asynchronous mode is on; None when it is off or anything is unusual: the full command then reads and says."""
    doc: dict[str, object] = {}
    raw = None
    config = env.get(CONFIG_ENV)
    if config:
        try:
            with open(config, "rb") as f:
                raw = f.read(_MAX_CONFIG + 1)
            scanned = scan_flat_toml(raw.decode()) if len(raw) <= _MAX_CONFIG else None
        except (OSError, UnicodeDecodeError):
            return None
        if scanned is None:
            return None
        doc = scanned
    values = {name: value for name, (value, _) in raw_settings(doc, env, "").items()}
    try:
        if not parse_flag(values.get("async", False)):
            return None
        wait = parse_seconds(values["async_wait"]) if "async_wait" in values else DEFAULT_ASYNC_WAIT
        spool_dir = parse_text(values["spool_dir"]) if "spool_dir" in values else None
        state_dir = parse_text(values["state_dir"]) if "state_dir" in values else default_state_dir(home_dir(env))
    except ValueError:
        return None
    if spool_dir is None and state_dir is None:
        return None
    return spool_dir or default_spool_dir(str(state_dir)), wait, raw


def load(config_path: str | None, env: Mapping[str, str]) -> tuple[Settings, str]:
    """Read and validate every setting, and their fingerprint (core/fingerprint.py) from the same raw environment
    and file bytes."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    from walbucket.core.errors import ConfigError
    from walbucket.core.fingerprint import settings_fingerprint
    from walbucket.core.settings import load_settings

    path = config_path or env.get(CONFIG_ENV)
    doc: dict[str, object] = {}
    raw = None
    if path:
        try:
            with open(path, "rb") as f:
                raw = f.read()
            doc = tomllib.loads(raw.decode())
        except OSError as exc:
            raise ConfigError(f"cannot read config file '{path}': {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file '{path}' is not valid TOML: {exc}") from None
    fingerprint = settings_fingerprint(env, path, raw)
    if not env.get("HOME"):  # Debian's pg_ctlcluster starts PostgreSQL without HOME
        env = {**env, "HOME": home_dir(env)}
    return load_settings(doc, env, config_name=f"'{path}'" if path else "config file"), fingerprint


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
