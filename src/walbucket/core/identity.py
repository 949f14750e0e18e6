"""The archive identity: which cluster an archive belongs to, as stored in ``<prefix>/identity.json``.

Created by the first push of a segment with a conditional write, then never changed. Pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from walbucket.core.walheader import WalHeader

__all__ = ["ArchiveIdentity", "decode_identity", "encode_identity", "identity_conflict"]


@dataclass(frozen=True, slots=True)
class ArchiveIdentity:
    system_id: int
    pg_version: int
    seg_size: int

    @classmethod
    def from_header(cls, header: WalHeader) -> ArchiveIdentity:
        return cls(header.system_id, header.pg_version, header.seg_size)


def encode_identity(identity: ArchiveIdentity) -> bytes:
    doc = {
        "format": 1,
        "system_id": str(identity.system_id),
        "pg_version": identity.pg_version,
        "seg_size": identity.seg_size,
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def decode_identity(raw: bytes) -> ArchiveIdentity:
    """Parse identity.json; raise ValueError when it is not one."""
    try:
        doc = json.loads(raw)
        return ArchiveIdentity(int(doc["system_id"]), int(doc["pg_version"]), int(doc["seg_size"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a walbucket identity document: {exc}") from exc


def identity_conflict(archive: ArchiveIdentity, header: WalHeader) -> str | None:
    """Say how a WAL file's header disagrees with the archive identity, or return None when it agrees."""
    if header.system_id != archive.system_id:
        return f"system id {header.system_id} differs from the archive's system id {archive.system_id}"
    if header.pg_version != archive.pg_version:
        return f"PostgreSQL {_version(header.pg_version)} differs from the archive's {_version(archive.pg_version)}"
    if header.seg_size != archive.seg_size:
        return f"segment size {header.seg_size} differs from the archive's {archive.seg_size}"
    return None


def _version(major: int) -> str:
    return f"9.{major - 90}" if major >= 90 else str(major)
