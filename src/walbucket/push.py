"""Archive one WAL file so PostgreSQL may recycle it."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from .codecs import CODECS
from .errors import ArchiveConflict, IdentityMismatch, IntegrityError, StoreError, UsageError, WalFileError
from .identity import ArchiveIdentity, decode_identity, encode_identity, identity_conflict
from .keylayout import META_SHA256, TAG_KIND, KeyLayout, object_metadata, object_tags
from .store import ObjectInfo, Store
from .walheader import HeaderError, WalHeader, parse_long_header, read_control_system_id
from .walname import WalName, parse_wal_name

__all__ = ["AlreadyArchived", "PushOptions", "Uploaded", "load_identity", "push"]

log = logging.getLogger("walbucket")
_MAX_TEXT_FILE = 1 << 20  # history and backup files are a few hundred bytes


@dataclass(frozen=True, slots=True)
class PushOptions:
    codec: str = "zstd"
    level: int = 3
    conditional: bool = True  # False: HEAD-then-PUT, for endpoints that ignore If-None-Match


@dataclass(frozen=True, slots=True)
class Uploaded:
    name: str
    key: str
    size: int
    stored_size: int
    codec: str
    conditional: bool


@dataclass(frozen=True, slots=True)
class AlreadyArchived:
    name: str
    key: str
    size: int


def push(
    path: Path, store: Store, layout: KeyLayout, options: PushOptions, data_dir: Path | None = None
) -> Uploaded | AlreadyArchived:
    """Archive one WAL file so PostgreSQL may recycle it.

    Identical bytes already in the archive are success: PostgreSQL re-archives after a crash.
    Different bytes under the same name mean split brain or a shared prefix: refuse, so PostgreSQL keeps the file.
    ``data_dir`` (archive_command's working directory) lets files without a page header be checked against the
    cluster's pg_control.
    """
    wal = parse_wal_name(path.name)
    if wal is None:
        raise UsageError(
            f"'{path.name}' is not the name of a WAL file PostgreSQL archives",
            hint="archive_command must pass %p: a segment, .partial, .history or .backup file",
        )
    data = _read(path, wal)
    system_id, pg_version = _check_content(wal, data, store, layout, options, data_dir)
    codec = CODECS[options.codec]
    body = codec.compress(data, options.level)
    digest = hashlib.sha256(data).hexdigest()
    key = layout.key(wal)
    metadata = object_metadata(digest, len(data), codec.name, system_id)
    tags = object_tags(wal, system_id, pg_version)
    if options.conditional:
        if store.create(key, body, metadata, tags):
            return Uploaded(wal.name, key, len(data), len(body), codec.name, True)
        existing = store.head(key)
        if existing is None:  # created and deleted in between: only a person deleting objects does that
            raise StoreError(f"WAL file '{wal.name}' was refused as existing but is not in the archive")
        return _compare(wal, key, digest, len(data), existing)
    existing = store.head(key)
    if existing is not None:
        return _compare(wal, key, digest, len(data), existing)
    log.warning(
        "'%s': endpoint ignores conditional writes; HEAD-then-PUT is not safe against a racing writer", wal.name
    )
    store.put(key, body, metadata, tags)
    return Uploaded(wal.name, key, len(data), len(body), codec.name, False)


def load_identity(store: Store, layout: KeyLayout) -> ArchiveIdentity | None:
    stored = store.read(layout.identity_key)
    if stored is None:
        return None
    try:
        return decode_identity(stored.body)
    except ValueError as exc:
        raise IntegrityError(f"archive identity '{layout.identity_key}' is unreadable: {exc}") from None


def _read(path: Path, wal: WalName) -> bytes:
    try:
        with path.open("rb") as f:
            if not wal.is_wal_data:
                data = f.read(_MAX_TEXT_FILE + 1)
                if len(data) > _MAX_TEXT_FILE:
                    raise WalFileError(f"'{wal.name}' is larger than any {wal.kind.value} file PostgreSQL writes")
                return data
            return f.read()
    except OSError as exc:
        raise WalFileError(f"cannot read WAL file '{path}': {exc.strerror}") from None


def _check_content(
    wal: WalName, data: bytes, store: Store, layout: KeyLayout, options: PushOptions, data_dir: Path | None
) -> tuple[int | None, int | None]:
    """Validate the file against its name and the archive identity; return (system id, PG version) for tags."""
    if not wal.is_wal_data:
        identity = load_identity(store, layout)
        local = read_control_system_id(data_dir) if data_dir is not None else None
        if identity is not None and local is not None and local != identity.system_id:
            raise IdentityMismatch(
                f"'{wal.name}' comes from a cluster with system id {local}, "
                f"but the archive belongs to system id {identity.system_id}",
                hint=_IDENTITY_HINT,
            )
        if identity is not None:
            return identity.system_id, identity.pg_version
        return local, None
    header = _header(wal, data)
    _ensure_identity(wal, header, store, layout, options.conditional)
    return header.system_id, header.pg_version


def _header(wal: WalName, data: bytes) -> WalHeader:
    try:
        header = parse_long_header(data)
    except HeaderError as exc:
        raise WalFileError(f"WAL file '{wal.name}' is not a valid segment: {exc}") from None
    assert wal.segment is not None  # segments and partials always have one
    if len(data) != header.seg_size:
        raise WalFileError(
            f"WAL file '{wal.name}' is {len(data)} bytes, but its segment size is {header.seg_size}",
            hint="the file is truncated or not a WAL segment; PostgreSQL only archives complete segments",
        )
    if header.page_lsn != wal.segment.start_lsn(header.seg_size) or header.timeline > wal.timeline:
        raise WalFileError(
            f"WAL file '{wal.name}' holds the data of another segment (page address {_lsn(header.page_lsn)}, "
            f"timeline {header.timeline})",
            hint="the file was renamed or copied under a wrong name",
        )
    return header


def _ensure_identity(wal: WalName, header: WalHeader, store: Store, layout: KeyLayout, conditional: bool) -> None:
    identity = load_identity(store, layout)
    if identity is None:
        mine = ArchiveIdentity.from_header(header)
        body, tags = encode_identity(mine), {TAG_KIND: "identity"}
        if not conditional:
            store.put(layout.identity_key, body, {}, tags)
            return
        if store.create(layout.identity_key, body, {}, tags):
            log.info("created archive identity: system id %d, PostgreSQL %d", mine.system_id, mine.pg_version)
            return
        identity = load_identity(store, layout)  # another writer created it first: check against theirs
        if identity is None:
            raise StoreError(f"archive identity '{layout.identity_key}' exists but cannot be read")
    conflict = identity_conflict(identity, header)
    if conflict is not None:
        raise IdentityMismatch(
            f"WAL file '{wal.name}' does not belong to this archive: {conflict}", hint=_IDENTITY_HINT
        )


_IDENTITY_HINT = (
    "each cluster needs its own bucket or prefix; check WALBUCKET_PREFIX, or archive a new cluster "
    "(after initdb or pg_upgrade) under a new prefix"
)


def _compare(wal: WalName, key: str, digest: str, size: int, existing: ObjectInfo) -> AlreadyArchived:
    if existing.metadata.get(META_SHA256) == digest:
        return AlreadyArchived(wal.name, key, size)
    raise ArchiveConflict(
        f"WAL file '{wal.name}' already exists in the archive with different content",
        hint="an old primary may still be running after a failover (split brain), or two clusters share one prefix; "
        "the archived object was not changed and PostgreSQL keeps its file",
    )


def _lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"
