"""Decide whether pushes may rely on conditional writes (If-None-Match: *), probing the endpoint once.

An endpoint that ignores If-None-Match silently overwrites, which is exactly the failure walbucket exists to
prevent, so ``auto`` never trusts an endpoint it has not seen refuse a second create of the same key. The answer is
remembered per endpoint and bucket in ``<state_dir>/conditional-writes.json``. An endpoint remembered as honouring
conditional writes that later rejects one (HTTP 501) is remembered as not honouring them (:func:`remember_unsupported`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .errors import ConditionalWritesUnsupported
from .fsutil import write_file_atomically
from .keylayout import TAG_KIND, KeyLayout
from .store import Store

__all__ = ["PROBE_BODY", "conditional_writes_usable", "probe_conditional_writes", "remember_unsupported"]

log = logging.getLogger("walbucket")
PROBE_BODY = b"walbucket conditional-write probe: safe to keep, never read\n"
_CACHE_NAME = "conditional-writes.json"


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
        _save(state_dir, cache)
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
    _save(state_dir, cache)


def _load(state_dir: Path | None) -> dict[str, bool]:
    if state_dir is None:
        return {}
    try:
        raw = json.loads((state_dir / _CACHE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in raw.items() if isinstance(v, bool)} if isinstance(raw, dict) else {}


def _save(state_dir: Path | None, cache: dict[str, bool]) -> None:
    if state_dir is None:
        return
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_file_atomically(state_dir / _CACHE_NAME, json.dumps(cache, sort_keys=True).encode())
    except OSError as exc:  # a cache that cannot be written only costs a probe next time
        log.debug("cannot remember conditional-write support in %s: %s", state_dir, exc)
