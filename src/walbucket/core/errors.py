"""One exception tree; each class carries its exit codes (docs/exit-codes.md).

::

    WalbucketError                     exit  get-exit
    ├── UsageError                        2       202   bad arguments or a name that is not a WAL file name
    ├── ConfigError                       3       203   missing or invalid setting
    ├── WalFileError                      4       204   the local file is unreadable, of the wrong size, not WAL
    ├── IdentityMismatch                  5       205   WAL of another cluster, version or segment size
    ├── ArchiveConflict                   6       206   same name already archived with different content
    ├── StoreError                        7       207   storage refused: access denied, no such bucket, ...
    │   └── StoreUnavailable              8    208 / 8  outage or throttling that outlasted the retry budget
    ├── ConditionalWritesUnsupported      9       209   conditional_writes=required, endpoint ignores or rejects
    │                                                   If-None-Match (auto falls back to HEAD-then-PUT)
    └── IntegrityError                   10       210   stored object fails its checksum or is not what its key says
        └── DamagedDownload              10       210   the bytes read fail a checksum or do not decompress (get reads
                                                        once more first: the damage may be the transfer's)
    (any other exception)                70       250   a bug: report it
    (no exception: problems found)       11               verify, check, backfill: problems found and listed

``get`` answers PostgreSQL's restore_command contract: 0 restored, 1 not in the archive, 2..125 "not available"
(recovery may end or, on a standby, retry), above 125 "abort recovery". Every failure of ``get`` aborts recovery,
because ending a point-in-time recovery early looks like success and loses data; the one exception is an outage on
a standby (``standby.signal``), which answers 8, so PostgreSQL retries and streams meanwhile.
"""

from __future__ import annotations

__all__ = [
    "FINDINGS_EXIT",
    "INTERNAL_EXIT",
    "INTERNAL_GET_EXIT",
    "ArchiveConflict",
    "ConditionalWritesUnsupported",
    "ConfigError",
    "DamagedDownload",
    "IdentityMismatch",
    "IntegrityError",
    "StoreError",
    "StoreUnavailable",
    "UsageError",
    "WalFileError",
    "WalbucketError",
    "exit_code_for",
]

INTERNAL_EXIT = 70
FINDINGS_EXIT = 11  # the admin commands ran and report problems as values (docs/inspect.md), not as an exception
INTERNAL_GET_EXIT = 250


class WalbucketError(Exception):
    """Base of every error walbucket reports; ``hint`` is a line the user can act on."""

    exit_code = 1
    get_exit_code = 201

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(WalbucketError):
    exit_code = 2
    get_exit_code = 202


class ConfigError(WalbucketError):
    exit_code = 3
    get_exit_code = 203


class WalFileError(WalbucketError):
    exit_code = 4
    get_exit_code = 204


class IdentityMismatch(WalbucketError):
    exit_code = 5
    get_exit_code = 205


class ArchiveConflict(WalbucketError):
    exit_code = 6
    get_exit_code = 206


class StoreError(WalbucketError):
    exit_code = 7
    get_exit_code = 207


class StoreUnavailable(StoreError):
    exit_code = 8
    get_exit_code = 208
    standby_get_exit_code = 8


class ConditionalWritesUnsupported(WalbucketError):
    exit_code = 9
    get_exit_code = 209


class IntegrityError(WalbucketError):
    exit_code = 10
    get_exit_code = 210


class DamagedDownload(IntegrityError):
    """The bytes read fail a checksum or do not decompress: the stored object or the transfer is damaged."""


def exit_code_for(exc: BaseException, command: str, standby: bool) -> int:
    """Choose the exit code of ``command`` failing with ``exc`` (``standby``: the data directory has standby.signal)."""
    if not isinstance(exc, WalbucketError):
        return INTERNAL_GET_EXIT if command == "get" else INTERNAL_EXIT
    if command != "get":
        return exc.exit_code
    if standby and isinstance(exc, StoreUnavailable):
        return StoreUnavailable.standby_get_exit_code
    return exc.get_exit_code
