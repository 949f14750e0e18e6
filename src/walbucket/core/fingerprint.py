"""The settings fingerprint: which worker may serve a command, and which spool files answer it.

A worker holds the settings it started with. A command whose settings differ (another bucket, prefix, endpoint,
credentials, codec, a new walbucket version) must never be answered by it, nor from acknowledgements and prefetched
files it left in the spool. Both sides compute this fingerprint from the same raw inputs, before any parsing, so the
lean fast path computes it as cheaply as the full command: every ``WALBUCKET_*`` and ``AWS_*`` variable (the AWS
SDK's endpoint, profile, region and credential variables), ``HOME`` (it locates ``~/.aws`` and the default state
directory), the settings file's path and bytes, walbucket's version and the wire protocol's. Any change gives another
fingerprint: a worker is replaced too often rather than once too rarely. Imports only os and the C SHA-256 module.
"""

from __future__ import annotations

try:
    from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]  # Python 3.11: the C module alone; hashlib costs 4 ms on the fast path
except ImportError:  # pragma: no cover - Python 3.12 and later, or a build without the builtin hash modules
    try:
        from _sha2 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment,unused-ignore]

from walbucket import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PROTOCOL", "settings_fingerprint"]

PROTOCOL = 2  # the wire format's version: sent in every request, and part of the socket's name
_COMMAND_ONLY = frozenset({"WALBUCKET_ASYNC_WAIT"})  # how long a command waits; the worker never reads it


def settings_fingerprint(env: Mapping[str, str], config_path: str | None, config: bytes | None) -> str:
    """Return 16 hex digits that change whenever anything a worker's settings derive from changes.

    ``config`` is the settings file's content as read (None when there is none, or it could not be read).
    """
    digest = sha256(f"walbucket {__version__} protocol {PROTOCOL}\0".encode())
    for name in sorted(env):
        if (name.startswith(("WALBUCKET_", "AWS_")) and name not in _COMMAND_ONLY) or name == "HOME":
            digest.update(f"{name}={env[name]}\0".encode("utf-8", "surrogateescape"))
    digest.update(f"config={config_path or ''}\0".encode("utf-8", "surrogateescape"))
    if config is not None:
        digest.update(config)
    return str(digest.hexdigest()[:16])
