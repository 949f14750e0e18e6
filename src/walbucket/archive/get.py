"""Restore one WAL file from the archive for PostgreSQL's restore_command."""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

from walbucket.archive.fsutil import CHUNK, AtomicFile
from walbucket.archive.identity import IdentityMemo, load_identity
from walbucket.core.codecs import CODECS, Codec
from walbucket.core.errors import DamagedDownload, IdentityMismatch, IntegrityError, UsageError, WalFileError
from walbucket.core.identity import identity_conflict
from walbucket.core.keylayout import META_CODEC, META_NAME, META_SHA256, META_SIZE, META_SYSTEM_ID, KeyLayout
from walbucket.core.walheader import (
    LONG_HEADER_SIZE,
    HeaderError,
    SegmentMismatch,
    WalHeader,
    parse_long_header,
    read_control_system_id,
    segment_mismatch,
)
from walbucket.core.walname import WalKind, WalName, parse_wal_name, segments_per_log
from walbucket.store.protocol import Store, StoredObject

__all__ = ["Missing", "Restored", "get", "restorable_name", "verify_into"]

log = logging.getLogger("walbucket")


@dataclass(frozen=True, slots=True)
class Restored:
    name: str
    key: str
    size: int
    stored_size: int
    from_partial: bool = False


@dataclass(frozen=True, slots=True)
class Missing:
    name: str
    key: str


def get(
    name: str,
    dest: Path,
    store: Store,
    layout: KeyLayout,
    *,
    data_dir: Path | None,
    restore_partial: bool = False,
    memo: IdentityMemo | None = None,
) -> Restored | Missing:
    """Restore WAL file ``name`` to ``dest``, verified, or report it Missing after one request.

    ``dest`` appears complete or not at all. Segments are checked against the archive identity and against the
    cluster being recovered (``data_dir/global/pg_control``). With ``restore_partial``, a segment that is absent
    is answered from its ``.partial`` object (only then: a full segment always wins).
    A download that fails its checksum or does not decompress is read once more before DamagedDownload is raised:
    the damage may be the transfer's, and a recovery should not stop for that.
    """
    wal = restorable_name(name)
    key = layout.key(wal)
    try:
        return _restore(wal, key, dest, store, layout, data_dir, restore_partial, memo)
    except DamagedDownload as first:
        log.warning("%s; reading it once more", first.message)
        again = _restore(wal, key, dest, store, layout, data_dir, restore_partial, memo)
        if isinstance(again, Missing):  # deleted in between: "not in the archive" would end a recovery early
            raise
        return again


def _restore(
    wal: WalName,
    key: str,
    dest: Path,
    store: Store,
    layout: KeyLayout,
    data_dir: Path | None,
    restore_partial: bool,
    memo: IdentityMemo | None,
) -> Restored | Missing:
    stored = store.read(key)
    from_partial = False
    if stored is None and restore_partial and wal.kind is WalKind.SEGMENT:
        partial = parse_wal_name(wal.name + ".partial")
        assert partial is not None
        stored = store.read(layout.key(partial))
        from_partial = stored is not None
    if stored is None:
        return Missing(wal.name, key)
    verify_into(wal, stored, dest, store, layout, data_dir, memo)
    return Restored(wal.name, stored.info.key, int(stored.info.metadata[META_SIZE]), stored.info.size, from_partial)


def restorable_name(name: str) -> WalName:
    """Parse ``name`` as restore_command's %f, or raise UsageError (a swapped %f %p lands here)."""
    wal = parse_wal_name(name)
    if wal is None:
        raise UsageError(
            f"'{name}' is not a WAL file name",
            hint="restore_command must be 'walbucket get %f %p' (the name first, then the destination path)",
        )
    return wal


def verify_into(
    wal: WalName,
    stored: StoredObject,
    dest: Path,
    store: Store,
    layout: KeyLayout,
    data_dir: Path | None,
    memo: IdentityMemo | None = None,
) -> WalHeader | None:
    """Decompress ``stored`` into ``dest`` atomically after checking hash, size, header and identity."""
    key = stored.info.key
    meta = stored.info.metadata
    codec = CODECS.get(meta.get(META_CODEC, ""))
    expected_sha = meta.get(META_SHA256)
    if codec is None or expected_sha is None or not meta.get(META_SIZE, "").isdigit():
        raise IntegrityError(
            f"object '{key}' lacks walbucket's metadata (codec, SHA-256, size)",
            hint="it was not written by walbucket push, or its metadata was stripped by a copy",
        )
    stored_name = meta.get(META_NAME)
    asked = layout.name_of(key)
    if stored_name is not None and asked is not None and stored_name != asked.name:
        raise IntegrityError(
            f"the answer for '{key}' is the object of WAL file '{stored_name}'",
            hint="a proxy or cache between walbucket and the store mixes up objects; restore stopped so that "
            "recovery does not replay the wrong WAL",
        )
    local_id = read_control_system_id(data_dir) if data_dir is not None else None
    _check_system_id(wal, meta.get(META_SYSTEM_ID), local_id)
    try:
        with AtomicFile(dest) as out:
            head, size, sha256 = _decompress_into(out, stored, codec)
            if size != int(meta[META_SIZE]) or sha256 != expected_sha:
                raise DamagedDownload(
                    f"WAL file '{wal.name}' from '{key}' fails its checksum (SHA-256 or size differ from the metadata)",
                    hint="the stored object is damaged; restore stopped so that recovery does not replay bad WAL",
                )
            header = _check_header(wal, head, size, store, layout, local_id, memo) if wal.is_wal_data else None
            out.commit()
    except OSError as exc:  # the local disk failed, not the stored object
        raise WalFileError(f"cannot write WAL file '{dest}': {exc.strerror}") from None
    return header


def _decompress_into(out: AtomicFile, stored: StoredObject, codec: Codec) -> tuple[bytes, int, str]:
    """Stream-decompress the body into ``out`` in bounded pieces; return its first bytes, size and SHA-256.

    Bounded: WAL compresses 30-fold, so decompressing the body in one call would hold the whole segment in memory.
    """
    digest = hashlib.sha256()
    head = b""
    size = 0
    try:
        reader = codec.reader(io.BytesIO(stored.body))
        buffer = memoryview(bytearray(CHUNK))  # one buffer, reused: no new megabyte per chunk
        while n := reader.readinto(buffer):
            chunk = buffer[:n]
            if len(head) < LONG_HEADER_SIZE:
                head += bytes(chunk[: LONG_HEADER_SIZE - len(head)])
            digest.update(chunk)
            size += n
            out.write(chunk)
    except OSError:
        raise  # the local disk, not the stored object
    except Exception as exc:  # noqa: BLE001 - any codec failure means the stored bytes are damaged
        raise DamagedDownload(f"object '{stored.info.key}' does not decompress with {codec.name}: {exc}") from None
    return head, size, digest.hexdigest()


def _check_system_id(wal: WalName, stored_id: str | None, local_id: int | None) -> None:
    if stored_id is not None and local_id is not None and stored_id != str(local_id):
        raise IdentityMismatch(
            f"WAL file '{wal.name}' belongs to system id {stored_id}, but this cluster's pg_control has {local_id}",
            hint=_HINT,
        )


def _check_header(
    wal: WalName,
    head: bytes,
    size: int,
    store: Store,
    layout: KeyLayout,
    local_id: int | None,
    memo: IdentityMemo | None,
) -> WalHeader:
    try:
        header = parse_long_header(head)
    except HeaderError as exc:
        raise IntegrityError(f"WAL file '{wal.name}' restored from the archive is not a valid segment: {exc}") from None
    mismatch = segment_mismatch(wal, header, size)
    if mismatch is not None:
        raise IntegrityError(f"the object for WAL file '{wal.name}' {_restored_words(mismatch, header)}")
    _check_system_id(wal, str(header.system_id), local_id)
    identity = load_identity(store, layout, memo)
    conflict = identity_conflict(identity, header) if identity is not None else None
    if conflict is not None:
        raise IdentityMismatch(f"WAL file '{wal.name}' does not belong to this archive: {conflict}", hint=_HINT)
    return header


def _restored_words(mismatch: SegmentMismatch, header: WalHeader) -> str:
    if mismatch.reason == "name":
        return (
            f"holds a segment of size {header.seg_size}, at which that name does not exist "
            f"(its last 8 hex digits must be below {segments_per_log(header.seg_size):08X})"
        )
    return "holds another segment's data" if mismatch.reason == "address" else mismatch.detail


_HINT = "restore_command reads another cluster's archive: check the bucket and prefix settings"
