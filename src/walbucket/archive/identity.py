"""The archive identity in the store: read once per process, created by the first segment pushed, checked.

identity.json (core/identity.py) records the system id, PostgreSQL version and segment size of the one cluster
whose WAL the archive holds. push creates it with a conditional write, so that two clusters racing to archive into
an empty prefix cannot both win; push, get, backfill and verify check every segment against it.
"""

from __future__ import annotations

import logging

from walbucket.core.errors import IdentityMismatch, IntegrityError, StoreError
from walbucket.core.identity import ArchiveIdentity, decode_identity, encode_identity, identity_conflict
from walbucket.core.keylayout import TAG_KIND, KeyLayout
from walbucket.core.walheader import WalHeader
from walbucket.core.walname import WalName
from walbucket.store.protocol import Store

__all__ = ["IDENTITY_HINT", "IdentityMemo", "ensure_identity", "load_identity"]

log = logging.getLogger("walbucket")


class IdentityMemo:
    """The archive identity once known: it never changes, so a long-running process reads it once."""

    def __init__(self) -> None:
        self.value: ArchiveIdentity | None = None


def load_identity(store: Store, layout: KeyLayout, memo: IdentityMemo | None = None) -> ArchiveIdentity | None:
    if memo is not None and memo.value is not None:
        return memo.value
    stored = store.read(layout.identity_key)
    if stored is None:
        return None
    try:
        identity = decode_identity(stored.body)
    except ValueError as exc:
        raise IntegrityError(f"archive identity '{layout.identity_key}' is unreadable: {exc}") from None
    if memo is not None:
        memo.value = identity
    return identity


def ensure_identity(
    wal: WalName, header: WalHeader, store: Store, layout: KeyLayout, conditional: bool, memo: IdentityMemo | None
) -> None:
    """Create the archive identity from ``header`` if there is none; else raise IdentityMismatch if they differ."""
    identity = load_identity(store, layout, memo)
    if identity is None:
        mine = ArchiveIdentity.from_header(header)
        body, tags = encode_identity(mine), {TAG_KIND: "identity"}
        if not conditional:
            store.put(layout.identity_key, body, {}, tags)
            if memo is not None:
                memo.value = mine
            return
        if store.create(layout.identity_key, body, {}, tags):
            if memo is not None:
                memo.value = mine
            log.info("created archive identity: system id %d, PostgreSQL %d", mine.system_id, mine.pg_version)
            return
        identity = load_identity(store, layout, memo)  # another writer created it first: check against theirs
        if identity is None:
            raise StoreError(f"archive identity '{layout.identity_key}' exists but cannot be read")
    conflict = identity_conflict(identity, header)
    if conflict is not None:
        raise IdentityMismatch(f"WAL file '{wal.name}' does not belong to this archive: {conflict}", hint=IDENTITY_HINT)


IDENTITY_HINT = (
    "each cluster needs its own bucket or prefix; check WALBUCKET_PREFIX, or archive a new cluster "
    "(after initdb or pg_upgrade) under a new prefix"
)
