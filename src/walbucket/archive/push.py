"""Archive one WAL file so PostgreSQL may recycle it."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from walbucket.archive.fsutil import CHUNK
from walbucket.archive.identity import IDENTITY_HINT, IdentityMemo, ensure_identity, load_identity
from walbucket.core.codecs import CODECS, Codec
from walbucket.core.errors import (
    ArchiveConflict,
    ConditionalWritesUnsupported,
    IdentityMismatch,
    StoreError,
    UsageError,
    WalFileError,
)
from walbucket.core.keylayout import META_SHA256, KeyLayout, object_metadata, object_tags
from walbucket.core.walheader import (
    LONG_HEADER_SIZE,
    HeaderError,
    WalHeader,
    parse_long_header,
    read_control_system_id,
    segment_mismatch,
)
from walbucket.core.walname import WalName, parse_wal_name
from walbucket.store.protocol import ObjectInfo, Store, StoreFeatures

__all__ = [
    "AlreadyArchived",
    "Prepared",
    "PushOptions",
    "Uploaded",
    "archivable_name",
    "archive",
    "prepare",
    "push",
]

log = logging.getLogger("walbucket")
_MAX_TEXT_FILE = 1 << 20  # history and backup files are a few hundred bytes


@dataclass(frozen=True, slots=True)
class PushOptions:
    codec: str = "zstd"
    level: int = CODECS["zstd"].default_level  # as Settings.level; the CLI passes the configured one
    conditional: bool = True  # False: HEAD-then-PUT, for endpoints that ignore If-None-Match
    # conditional_writes = "auto": called when the endpoint rejects If-None-Match after all; push then falls back
    fallback: Callable[[], None] | None = None
    features: StoreFeatures | None = None  # how uploads are written (tags, checksum header, multipart); None: as is


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
    path: Path,
    store: Store,
    layout: KeyLayout,
    options: PushOptions,
    data_dir: Path | None = None,
    memo: IdentityMemo | None = None,
) -> Uploaded | AlreadyArchived:
    """Archive one WAL file so PostgreSQL may recycle it: :func:`prepare` then :func:`archive`."""
    prepared = prepare(path, options.codec, options.level)
    if options.features is not None:
        store = store.with_features(options.features)
    return archive(prepared, store, layout, options.conditional, data_dir, memo, options.fallback)


def prepare(path: Path, codec_name: str, level: int) -> Prepared:
    """Check the name and read, hash and compress the file: all that push does before it talks to the store."""
    return _prepare(path, archivable_name(path), CODECS[codec_name], level)


def archivable_name(path: Path) -> WalName:
    """Return the WAL name of ``path``, or raise UsageError when PostgreSQL would never archive such a file."""
    wal = parse_wal_name(path.name)
    if wal is None:
        raise UsageError(
            f"'{path.name}' is not the name of a WAL file PostgreSQL archives",
            hint="archive_command must pass %p: a segment, .partial, .history or .backup file",
        )
    return wal


def archive(
    prepared: Prepared,
    store: Store,
    layout: KeyLayout,
    conditional: bool,
    data_dir: Path | None = None,
    memo: IdentityMemo | None = None,
    fallback: Callable[[], None] | None = None,
) -> Uploaded | AlreadyArchived:
    """Store a prepared WAL file unless the archive already has it.

    Identical bytes already in the archive are success: PostgreSQL re-archives after a crash.
    Different bytes under the same name mean split brain or a shared prefix: refuse, so PostgreSQL keeps the file.
    ``data_dir`` (archive_command's working directory) lets files without a page header be checked against the
    cluster's pg_control. ``memo`` keeps the archive identity between calls of a long-running process.
    ``fallback`` is for conditional_writes = "auto": an endpoint remembered as honouring If-None-Match may still
    reject it (HTTP 501, nothing written); then ``fallback`` records that and the push is made once more with
    HEAD-then-PUT. Without it, the rejection is raised.
    """
    try:
        return _archive(prepared, store, layout, conditional, data_dir, memo)
    except ConditionalWritesUnsupported:
        if not conditional or fallback is None:
            raise
        fallback()
        return _archive(prepared, store, layout, False, data_dir, memo)


def _archive(
    prepared: Prepared,
    store: Store,
    layout: KeyLayout,
    conditional: bool,
    data_dir: Path | None,
    memo: IdentityMemo | None,
) -> Uploaded | AlreadyArchived:
    wal = prepared.wal
    system_id, pg_version = _check_content(wal, prepared, store, layout, conditional, data_dir, memo)
    body, digest, size = prepared.body, prepared.sha256, prepared.size
    key = layout.key(wal)
    metadata = object_metadata(digest, size, prepared.codec, system_id, wal.name)
    tags = object_tags(wal, system_id, pg_version)
    if conditional:
        if store.create(key, body, metadata, tags):
            return Uploaded(wal.name, key, size, len(body), prepared.codec, True)
        existing = store.head(key)
        if existing is None:  # created and deleted in between: only a person deleting objects does that
            raise StoreError(f"WAL file '{wal.name}' was refused as existing but is not in the archive")
        return _compare(wal, key, digest, size, existing)
    existing = store.head(key)
    if existing is not None:
        return _compare(wal, key, digest, size, existing)
    log.warning(
        "'%s': endpoint ignores conditional writes; HEAD-then-PUT is not safe against a racing writer", wal.name
    )
    store.put(key, body, metadata, tags)
    return Uploaded(wal.name, key, size, len(body), prepared.codec, False)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A WAL file read, hashed and compressed, not yet checked against the archive."""

    wal: WalName
    codec: str
    body: bytes  # compressed
    size: int
    sha256: str
    head: bytes  # the first LONG_HEADER_SIZE bytes, for the page header


def _prepare(path: Path, wal: WalName, codec: Codec, level: int) -> Prepared:
    """Read, hash and compress the file in chunks: memory holds the compressed body and one chunk, not the file."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if not wal.is_wal_data and size > _MAX_TEXT_FILE:
                raise WalFileError(f"'{wal.name}' is larger than any {wal.kind.value} file PostgreSQL writes")
            stream = codec.compressor(level, size)
            digest = hashlib.sha256()
            parts: list[bytes] = []
            head = b""
            total = 0
            buffer = memoryview(bytearray(CHUNK))  # one buffer, reused: no new megabyte per chunk
            while total < size and (n := f.readinto(buffer[: min(CHUNK, size - total)])):
                chunk = buffer[:n]
                if len(head) < LONG_HEADER_SIZE:
                    head += bytes(chunk[: LONG_HEADER_SIZE - len(head)])
                digest.update(chunk)
                parts.append(stream.compress(chunk))
                total += n
            total += sum(len(extra) for extra in iter(lambda: f.read(CHUNK), b""))
            # checked before flush: the compressors were promised `size` bytes and fail on any other count
            if total != size:
                raise WalFileError(f"WAL file '{wal.name}' changed size while it was read ({size} -> {total} bytes)")
            parts.append(stream.flush())
    except OSError as exc:
        raise WalFileError(f"cannot read WAL file '{path}': {exc.strerror}") from None
    return Prepared(wal, codec.name, b"".join(parts), total, digest.hexdigest(), head)


def _check_content(
    wal: WalName,
    prepared: Prepared,
    store: Store,
    layout: KeyLayout,
    conditional: bool,
    data_dir: Path | None,
    memo: IdentityMemo | None,
) -> tuple[int | None, int | None]:
    """Validate the file against its name and the archive identity; return (system id, PG version) for tags."""
    if not wal.is_wal_data:
        identity = load_identity(store, layout, memo)
        local = read_control_system_id(data_dir) if data_dir is not None else None
        if identity is not None and local is not None and local != identity.system_id:
            raise IdentityMismatch(
                f"'{wal.name}' comes from a cluster with system id {local}, "
                f"but the archive belongs to system id {identity.system_id}",
                hint=IDENTITY_HINT,
            )
        if identity is not None:
            return identity.system_id, identity.pg_version
        return local, None
    header = _header(wal, prepared.head, prepared.size)
    ensure_identity(wal, header, store, layout, conditional, memo)
    return header.system_id, header.pg_version


def _header(wal: WalName, head: bytes, size: int) -> WalHeader:
    try:
        header = parse_long_header(head)
    except HeaderError as exc:
        raise WalFileError(f"WAL file '{wal.name}' is not a valid segment: {exc}") from None
    mismatch = segment_mismatch(wal, header, size)
    if mismatch is not None:
        raise WalFileError(f"WAL file '{wal.name}' {mismatch.detail}", hint=_MISMATCH_HINTS[mismatch.reason])
    return header


_MISMATCH_HINTS = {
    "size": "the file is truncated or not a WAL segment; PostgreSQL only archives complete segments",
    "name": "the file was renamed or copied under a wrong name",
    "address": "the file was renamed or copied under a wrong name",
}


def _compare(wal: WalName, key: str, digest: str, size: int, existing: ObjectInfo) -> AlreadyArchived:
    if existing.metadata.get(META_SHA256) == digest:
        return AlreadyArchived(wal.name, key, size)
    raise ArchiveConflict(
        f"WAL file '{wal.name}' already exists in the archive with different content",
        hint="an old primary may still be running after a failover (split brain), or two clusters share one prefix; "
        "the archived object was not changed and PostgreSQL keeps its file",
    )
