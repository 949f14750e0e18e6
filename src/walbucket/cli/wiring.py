"""Turn Settings into what the services take: a store, push options, a spool. Shared by every command's handler.

A handler gets the store through ``open_store``, a parameter of :func:`walbucket.cli.main.main`: the real
factory (store/factory.py, which imports botocore when called) or, in tests, one that returns an in-memory store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from walbucket.core.errors import ConfigError
from walbucket.core.settings import Settings

if TYPE_CHECKING:
    from walbucket.archive.push import PushOptions
    from walbucket.spooler.spool import Spool
    from walbucket.store.protocol import Store

__all__ = ["StoreFactory", "default_store_factory", "endpoint_id", "open_spool", "push_options", "tags_expected"]

StoreFactory = Callable[[Settings], "Store"]


def default_store_factory(settings: Settings) -> Store:
    """The S3 store the settings name; botocore is imported here, on first use."""
    from walbucket.store.factory import open_store

    return open_store(settings)


def endpoint_id(settings: Settings) -> str:
    """The endpoint and bucket, as the probes' results in <state_dir> are remembered under."""
    return f"{settings.endpoint_url or 'aws:' + (settings.region or 'default')}/{settings.bucket}"


def _state_dir(settings: Settings) -> Path | None:
    return Path(settings.state_dir) if settings.state_dir else None


def push_options(settings: Settings, store: Store) -> PushOptions:
    """Probe (once per endpoint, remembered in <state_dir>) what this store supports, and return push's options."""
    from functools import partial

    from walbucket.archive.conditional import PLAIN, conditional_writes_usable, remember_unsupported, upload_features
    from walbucket.archive.push import PushOptions
    from walbucket.core.keylayout import KeyLayout

    state_dir = _state_dir(settings)
    endpoint = endpoint_id(settings)
    mode = settings.conditional_writes
    layout = KeyLayout(settings.prefix)
    # Conditional writes first, probed with what every store takes; then what uploads may carry, probed with the
    # condition where the endpoint honours it (a bucket policy may refuse a PUT without it).
    conditional = conditional_writes_usable(mode, store.with_features(PLAIN), layout, endpoint, state_dir)
    features = upload_features(
        settings.object_tags, settings.upload_checksum, conditional, store, layout, endpoint, state_dir
    )
    fallback = partial(remember_unsupported, endpoint, state_dir) if mode == "auto" else None
    return PushOptions(settings.compression, settings.level, conditional, fallback, features)


def tags_expected(settings: Settings) -> bool:
    """Whether objects carry tags: ``object_tags``, or for ``auto`` what the last probe of the endpoint found."""
    if settings.object_tags != "auto":
        return settings.object_tags == "on"
    from walbucket.archive.conditional import remembered_features

    probed = remembered_features(endpoint_id(settings), _state_dir(settings))
    return probed is None or probed.tags


def open_spool(settings: Settings, fingerprint: str) -> Spool:
    """The spool of the data directory that is the current directory, created if missing."""
    from walbucket.spooler.spool import Spool

    if not settings.spool_dir:
        raise ConfigError("missing setting 'spool_dir'", hint="set WALBUCKET_SPOOL_DIR (or HOME) for async mode")
    spool = Spool.for_data_dir(Path(settings.spool_dir), Path.cwd(), fingerprint)
    try:
        spool.create()
    except OSError as exc:
        raise ConfigError(f"invalid setting 'spool_dir': cannot create '{spool.root}': {exc.strerror}") from None
    return spool
