"""Decide how pushes write to an endpoint, probing it once: conditional writes, tags, checksum headers, multipart.

An endpoint that ignores If-None-Match silently overwrites, which is exactly the failure walbucket exists to
prevent, so ``auto`` never trusts an endpoint it has not seen refuse a second create of the same key. The answer is
remembered per endpoint and bucket in ``<state_dir>/conditional-writes.json``. An endpoint remembered as honouring
conditional writes that later rejects one (HTTP 501) is remembered as not honouring them (:func:`remember_unsupported`).

The rest of what an upload carries is probed the same way, once per endpoint, and remembered in
``<state_dir>/store-features.json`` (:func:`upload_features`): whether it takes object tags, which checksum header
(SHA-256, Content-MD5 or none), and whether it honours If-None-Match when a multipart upload completes. Explicit
settings (``object_tags``, ``upload_checksum``) win over the probe.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from walbucket.archive.fsutil import write_file_atomically
from walbucket.core.errors import ConditionalWritesUnsupported
from walbucket.core.keylayout import TAG_KIND, KeyLayout
from walbucket.store.protocol import CHECKSUMS, Store, StoreFeatures

__all__ = [
    "PLAIN",
    "PROBE_BODY",
    "conditional_writes_usable",
    "probe_conditional_writes",
    "remember_unsupported",
    "remembered_features",
    "upload_features",
]

log = logging.getLogger("walbucket")
PROBE_BODY = b"walbucket conditional-write probe: safe to keep, never read\n"
# How the conditional-write probe writes, before the endpoint's features are known: no tags (R2 and B2 refuse them),
# Content-MD5 (every S3 API takes it; Object Lock buckets need it, B2 refuses the SHA-256 header).
PLAIN = StoreFeatures(tags=False, checksum="md5", conditional_multipart=False, checksum_checked=False)
_CACHE_NAME = "conditional-writes.json"
_FEATURES_NAME = "store-features.json"


def probe_conditional_writes(store: Store, layout: KeyLayout) -> bool:
    """Tell whether the endpoint refuses to create a key that exists. Creates the probe object if it is absent."""
    key = layout.probe_key()
    tags = {TAG_KIND: "probe"}
    try:
        if not store.create(key, PROBE_BODY, {}, tags):
            return True
        return not store.create(key, PROBE_BODY, {}, tags)
    except ConditionalWritesUnsupported:
        return False


def conditional_writes_usable(
    mode: str, store: Store, layout: KeyLayout, endpoint_id: str, state_dir: Path | None
) -> bool:
    """Return True when pushes use If-None-Match; raise ConditionalWritesUnsupported when ``required`` can't be met."""
    if mode == "off":
        return False
    cache = _load(state_dir)
    supported = cache.get(endpoint_id)
    if supported is None:
        supported = probe_conditional_writes(store, layout)
        log.info("endpoint %s %s conditional writes", endpoint_id, "honours" if supported else "ignores")
        cache[endpoint_id] = supported
        _save(state_dir, _CACHE_NAME, cache)
    if not supported and mode == "required":
        raise ConditionalWritesUnsupported(
            f"endpoint '{endpoint_id}' does not honour conditional writes (If-None-Match)",
            hint='use an endpoint that does, or set conditional_writes = "auto" to fall back to HEAD-then-PUT',
        )
    return supported


def remember_unsupported(endpoint_id: str, state_dir: Path | None) -> None:
    """Remember that the endpoint rejected a conditional write, so that later pushes use HEAD-then-PUT at once.

    For ``auto`` only: the endpoint changed (or sits behind a new proxy) since it was probed.
    """
    log.info("endpoint %s rejected a conditional write; remembered as not honouring them", endpoint_id)
    cache = _load(state_dir)
    cache[endpoint_id] = False
    _save(state_dir, _CACHE_NAME, cache)


def upload_features(
    tags: str,
    checksum: str,
    conditional: bool,
    store: Store,
    layout: KeyLayout,
    endpoint_id: str,
    state_dir: Path | None,
) -> StoreFeatures:
    """Return how uploads are written: ``tags`` (auto | on | off) and ``checksum`` (auto | sha256 | md5 | none) as
    set, else as probed; whether multipart completion honours If-None-Match matters only with ``conditional``."""
    if tags != "auto" and checksum != "auto" and not conditional:
        return StoreFeatures(tags == "on", checksum, conditional_multipart=True)
    cache = _load_features(state_dir)
    probed = cache.get(endpoint_id)
    if probed is None:
        probed = store.probe_features(layout.probe_key(f"features-{secrets.token_hex(6)}"), conditional=conditional)
        log.info(
            "endpoint %s: tags %s, checksum header %s (%s), conditional multipart completion %s", endpoint_id,
            "kept" if probed.tags else "refused or dropped", probed.checksum,
            "checked" if probed.checksum_checked else "not checked",
            "honoured" if probed.conditional_multipart else "ignored",
        )  # fmt: skip
        cache[endpoint_id] = probed
        _save(state_dir, _FEATURES_NAME, {k: asdict(v) for k, v in cache.items()})
    chosen = probed.checksum if checksum == "auto" else checksum
    return StoreFeatures(
        probed.tags if tags == "auto" else tags == "on",
        chosen,
        probed.conditional_multipart,
        probed.checksum_checked and chosen == probed.checksum,
    )


def remembered_features(endpoint_id: str, state_dir: Path | None) -> StoreFeatures | None:
    """What the last probe found for this endpoint, or None when it was never probed."""
    return _load_features(state_dir).get(endpoint_id)


def _load_features(state_dir: Path | None) -> dict[str, StoreFeatures]:
    features: dict[str, StoreFeatures] = {}
    for endpoint, value in _read(state_dir, _FEATURES_NAME).items():
        if not isinstance(value, dict):
            continue
        try:
            found = StoreFeatures(**value)
        except TypeError:
            continue  # written by another version: probe again
        if (
            isinstance(found.tags, bool)
            and found.checksum in CHECKSUMS
            and isinstance(found.conditional_multipart, bool)
        ):
            features[endpoint] = found
    return features


def _read(state_dir: Path | None, name: str) -> dict[str, object]:
    if state_dir is None:
        return {}
    try:
        raw = json.loads((state_dir / name).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _load(state_dir: Path | None) -> dict[str, bool]:
    return {k: v for k, v in _read(state_dir, _CACHE_NAME).items() if isinstance(v, bool)}


def _save(state_dir: Path | None, name: str, cache: Mapping[str, object]) -> None:
    if state_dir is None:
        return
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_file_atomically(state_dir / name, json.dumps(cache, sort_keys=True).encode())
    except OSError as exc:  # a cache that cannot be written only costs a probe next time
        log.debug("cannot remember what the endpoint supports in %s: %s", state_dir, exc)
