"""The store's part of ``walbucket check``: each probe tried for real, answered as (status, detail[, hint]).

Every probe object lives under ``<prefix>/probe/`` and is left in place: walbucket needs no delete permission.
"""

from __future__ import annotations

import secrets
from typing import Literal

from walbucket.archive.conditional import probe_conditional_writes
from walbucket.archive.identity import load_identity
from walbucket.core.errors import IntegrityError
from walbucket.core.identity import ArchiveIdentity
from walbucket.core.keylayout import TAG_KIND, KeyLayout
from walbucket.store.protocol import Store, StoreFeatures

__all__ = ["Result", "Status"]

_PROBE_META = {"walbucket-check": "1"}
_PROBE_TAGS = {TAG_KIND: "probe"}
Status = Literal["OK", "FAIL", "WARN", "SKIP"]
Result = tuple[Status, str] | tuple[Status, str, str]  # status, detail and maybe a hint


def reachable(store: Store, prefix: str) -> Result:
    found = sum(1 for _ in store.list(prefix))
    return "OK", f"listed '{prefix}': {found} history files"


def probe_features(
    store: Store, layout: KeyLayout, tags_mode: str, conditional: bool, out: list[StoreFeatures]
) -> Result:
    features = store.probe_features(layout.probe_key(f"features-{secrets.token_hex(6)}"), conditional=conditional)
    out.append(features)
    if features.tags:
        return "OK", "object tags are kept"
    detail = "refused or dropped: pushes send no tags; lifecycle rules filter by prefix, checks use metadata and keys"
    if tags_mode == "on":
        return "FAIL", detail, 'set object_tags = "auto" or "off" for this endpoint'
    return "WARN", detail, "nothing to do: walbucket's safety does not depend on tags"


def effective(probed: StoreFeatures, tags_mode: str, checksum_mode: str) -> StoreFeatures:
    tags = probed.tags if tags_mode == "auto" else tags_mode == "on"
    checksum = probed.checksum if checksum_mode == "auto" else checksum_mode
    return StoreFeatures(
        tags, checksum, probed.conditional_multipart, probed.checksum_checked and checksum == probed.checksum
    )


def checksum(probed: StoreFeatures, mode: str) -> Result:
    if mode not in ("auto", probed.checksum) and _STRENGTH[mode] < _STRENGTH[probed.checksum]:
        return "WARN", f'the endpoint takes {probed.checksum}, upload_checksum = "{mode}" sends {mode}'
    header = {"sha256": "x-amz-checksum-sha256", "md5": "Content-MD5"}.get(probed.checksum)
    if header is None:
        hint = "an Object Lock bucket needs Content-MD5 or a checksum header on every PUT"
        return "WARN", "no checksum header accepted: a body damaged in transit is found only when get verifies it", hint
    if not probed.checksum_checked:
        hint = "nothing to do: get verifies SHA-256 and size before recovery replays a file"
        return "WARN", f"{header} accepted but not checked: a body damaged in transit is found only by get", hint
    if probed.checksum == "sha256":
        return "OK", "x-amz-checksum-sha256 checked: the store refuses a body damaged in transit"
    return "OK", "Content-MD5 checked (x-amz-checksum-sha256 is not): pushes send Content-MD5"


_STRENGTH = {"none": 0, "md5": 1, "sha256": 2}


def multipart(probed: StoreFeatures, mode: str) -> Result:
    if probed.conditional_multipart:
        return "OK", "a second completion of one key is refused (If-None-Match)"
    detail = "ignored: uploads above multipart_threshold go as one conditional PUT (up to 5 GiB) instead"
    if mode == "off":
        return "WARN", detail
    return "WARN", detail, "nothing to do: PostgreSQL's largest segment (1 GiB) fits one PUT"


def write(store: Store, key: str, body: bytes, tags: bool) -> Result:
    if not store.create(key, body, _PROBE_META, _PROBE_TAGS):
        return "FAIL", f"'{key}' already exists"
    return "OK", f"created '{key}' with tags" if tags else f"created '{key}'"


def read(store: Store, key: str, body: bytes) -> Result:
    stored = store.read(key)
    if stored is None or stored.body != body or dict(stored.info.metadata) != _PROBE_META:
        return "FAIL", f"'{key}' reads back different from what was written (body or metadata)"
    return "OK", "body and metadata read back"


def head(store: Store, key: str, body: bytes) -> Result:
    info = store.head(key)
    if info is None or info.size != len(body) or dict(info.metadata) != _PROBE_META:
        return "FAIL", f"HEAD of '{key}' does not show its size and metadata"
    return "OK", "size and metadata"


def listed(store: Store, key: str) -> Result:
    if not any(info.key == key for info in store.list(key)):
        return "FAIL", f"'{key}' is not listed", "a store that does not list new keys at once is not supported"
    return "OK", "the probe object is listed"


def tags(store: Store, key: str) -> Result:
    tags = store.tags(key)
    if tags != _PROBE_TAGS:
        return "FAIL", f"'{key}' has tags {tags}, not {_PROBE_TAGS}", "the endpoint must store object tags"
    return "OK", "tags read back"


def conditional(store: Store, layout: KeyLayout, mode: str, out: list[bool]) -> Result:
    out.append(probe_conditional_writes(store, layout))
    if out[-1]:
        if mode == "off":
            hint = 'set conditional_writes = "required" (or "auto") so that pushes never overwrite'
            return "WARN", 'honoured, but conditional_writes = "off" does not use them', hint
        return "OK", "a second create of one key is refused (If-None-Match)"
    detail = "ignored: a second create of one key overwrote it"
    if mode == "required":
        return "FAIL", detail, 'use an endpoint that honours If-None-Match, or conditional_writes = "auto"'
    return "WARN", detail, "push falls back to HEAD-then-PUT, which a racing writer (split brain) can defeat"


def identity(store: Store, layout: KeyLayout, out: list[ArchiveIdentity | None]) -> Result:
    try:
        identity = load_identity(store, layout)
    except IntegrityError as exc:
        return "FAIL", exc.message
    out.append(identity)
    if identity is None:
        return "OK", "none yet: the first push of a segment creates it"
    return (
        "OK",
        f"system id {identity.system_id}, PostgreSQL {identity.pg_version}, {identity.seg_size >> 20} MiB segments",
    )
