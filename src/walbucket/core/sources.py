"""Where a setting's value comes from, and the value rules the lean fast path shares with settings.py.

The environment wins over the settings file; an empty variable unsets; ``WALBUCKET_SPOOL_DIR`` and
``WALBUCKET_Spool_Dir`` name the same setting; ``async`` is a flag word; ``async_wait`` is seconds in (0, 86400];
the state directory defaults to ``~/.cache/walbucket`` and the spool to ``<state_dir>/spool``. settings.py builds
the full Settings with these rules and the fast path (cli/entry.py) reads its four settings with them, so the two
cannot drift. Imports nothing: the fast path runs once per WAL file.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_ASYNC_WAIT",
    "ENV_PREFIX",
    "RENAMED",
    "default_spool_dir",
    "default_state_dir",
    "parse_flag",
    "parse_seconds",
    "parse_text",
    "raw_settings",
]

ENV_PREFIX = "WALBUCKET_"
CONFIG_ENV = "WALBUCKET_CONFIG"
DEFAULT_ASYNC_WAIT = 120.0  # seconds a command waits for the worker's answer
RENAMED = {"async": "async_mode"}  # setting names that are not Python identifiers, and the field of each
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def raw_settings(
    file_doc: Mapping[str, object], env: Mapping[str, str], config_name: str
) -> dict[str, tuple[object, str]]:
    """Merge the settings file and the environment: setting name -> (raw value, where it came from), unvalidated.

    An environment variable names its setting in any case after the prefix: ``WALBUCKET_Spool_Dir`` is ``spool_dir``.
    """
    raw: dict[str, tuple[object, str]] = {}
    for key, value in file_doc.items():
        raw[key] = (value, f"'{key}' in {config_name}")
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV:
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if value == "":
            raw.pop(name, None)  # an empty variable unsets, as in a shell
        else:
            raw[name] = (value, key)
    return raw


def parse_text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def parse_flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")


def parse_seconds(value: object) -> float:
    seconds = float(str(value).strip())
    if not seconds > 0 or seconds > 86400:
        raise ValueError("expected seconds, more than 0 and at most 86400")
    return seconds


def default_state_dir(home: str) -> str | None:
    """``~/.cache/walbucket``; None without a home directory."""
    return f"{home.rstrip('/')}/.cache/walbucket" if home else None


def default_spool_dir(state_dir: str) -> str:
    return f"{state_dir.rstrip('/')}/spool"
