"""The only module that knows how WAL file names map to object keys, metadata and tags.

See docs/key-layout.md. A key depends on the WAL file name alone, never on content or settings, so that two
pushes of one name always meet on one key (and the conditional write decides between them)::

    <prefix>/identity.json                                   archive identity (system id, version, segment size)
    <prefix>/wal/<TTTTTTTTLLLLLLLL>/<TTTTTTTTLLLLLLLLSSSSSSSS>     segments, grouped by timeline and log id
    <prefix>/partial/<TTTTTTTTLLLLLLLL>/<...>.partial              partial segments of promoted timelines
    <prefix>/history/<TTTTTTTT>.history                      timeline history files: never expire
    <prefix>/backup/<TTTTTTTTLLLLLLLL>/<...>.<OOOOOOOO>.backup      backup history files

Pure: names in, keys out.
"""

from __future__ import annotations

from dataclasses import dataclass

from walbucket.core.walname import WalKind, WalName, parse_wal_name

__all__ = [
    "FORMAT_VERSION",
    "IDENTITY_NAME",
    "KIND_DIRS",
    "META_CODEC",
    "META_FORMAT",
    "META_NAME",
    "META_SHA256",
    "META_SIZE",
    "META_SYSTEM_ID",
    "TAG_KIND",
    "TAG_PG_VERSION",
    "TAG_SYSTEM_ID",
    "TAG_TIMELINE",
    "KeyLayout",
    "normalize_prefix",
    "object_metadata",
    "object_tags",
]

IDENTITY_NAME = "identity.json"
KIND_DIRS: dict[WalKind, str] = {
    WalKind.SEGMENT: "wal",
    WalKind.PARTIAL: "partial",
    WalKind.HISTORY: "history",
    WalKind.BACKUP: "backup",
}

# User metadata (x-amz-meta-*): what get needs to verify an object, returned by HEAD and GET alike.
META_FORMAT = "walbucket-format"
META_SHA256 = "walbucket-sha256"
META_SIZE = "walbucket-size"
META_CODEC = "walbucket-codec"
META_SYSTEM_ID = "walbucket-system-id"
META_NAME = "walbucket-name"  # the WAL file name: get refuses an answer that is another object's (a proxy's mix-up)
FORMAT_VERSION = "1"

# Object tags: what lifecycle rules and inspection filter on.
TAG_SYSTEM_ID = "walbucket-system-id"
TAG_PG_VERSION = "walbucket-pg-version"
TAG_TIMELINE = "walbucket-timeline"
TAG_KIND = "walbucket-kind"


def normalize_prefix(prefix: str) -> str:
    """Strip the slashes around a prefix; reject empty path parts ('a//b') and dot parts."""
    stripped = prefix.strip("/")
    if stripped and any(part in ("", ".", "..") for part in stripped.split("/")):
        raise ValueError(f"invalid prefix '{prefix}'")
    return stripped


@dataclass(frozen=True, slots=True)
class KeyLayout:
    prefix: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", normalize_prefix(self.prefix))

    def _join(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts)) if self.prefix else "/".join(parts)

    @property
    def identity_key(self) -> str:
        return self._join(IDENTITY_NAME)

    def kind_prefix(self, kind: WalKind) -> str:
        """Return the key prefix (ending in '/') under which every object of ``kind`` lives."""
        return self._join(KIND_DIRS[kind]) + "/"

    def grouped(self, kind: WalKind) -> bool:
        """Tell whether keys of ``kind`` live in sub-directories of its kind prefix (one per timeline and log id)."""
        return kind is not WalKind.HISTORY

    def key(self, wal: WalName) -> str:
        directory = KIND_DIRS[wal.kind]
        if not self.grouped(wal.kind):
            return self._join(directory, wal.name)
        return self._join(directory, wal.name[:16], wal.name)

    def name_of(self, key: str) -> WalName | None:
        """Invert :meth:`key`: the WAL name stored under ``key``, or None for any other key."""
        wal = parse_wal_name(key.rsplit("/", 1)[-1])
        return wal if wal is not None and self.key(wal) == key else None

    def probe_key(self, name: str = "conditional-write") -> str:
        """Key of a probe object (default: the If-None-Match test; ``walbucket check`` adds others); never WAL."""
        return self._join("probe", name)


def object_metadata(
    sha256_hex: str, size: int, codec: str, system_id: int | None, name: str | None = None
) -> dict[str, str]:
    meta = {META_FORMAT: FORMAT_VERSION, META_SHA256: sha256_hex, META_SIZE: str(size), META_CODEC: codec}
    if system_id is not None:
        meta[META_SYSTEM_ID] = str(system_id)
    if name is not None:
        meta[META_NAME] = name
    return meta


def object_tags(wal: WalName, system_id: int | None, pg_version: int | None) -> dict[str, str]:
    tags = {TAG_KIND: wal.kind.value, TAG_TIMELINE: str(wal.timeline)}
    if system_id is not None:
        tags[TAG_SYSTEM_ID] = str(system_id)
    if pg_version is not None:
        tags[TAG_PG_VERSION] = str(pg_version)
    return tags
