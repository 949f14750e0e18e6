"""In-memory Store for unit tests; ``honours_conditions=False`` behaves like an endpoint that ignores If-None-Match."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from walbucket.store.protocol import LifecycleRules, ObjectInfo, StoredObject, StoreFeatures

__all__ = ["MemoryStore"]


@dataclass
class _Entry:
    body: bytes
    metadata: dict[str, str]
    tags: dict[str, str]
    modified: float = field(default_factory=time.time)


@dataclass
class MemoryStore:
    honours_conditions: bool = True
    objects: dict[str, _Entry] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    lifecycle: LifecycleRules | None = None  # the bucket's lifecycle rules; None: no configuration
    features: StoreFeatures = field(default_factory=StoreFeatures)  # how this view of the store writes
    honours: StoreFeatures = field(default_factory=StoreFeatures)  # what probe_features finds
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _info(self, key: str, entry: _Entry) -> ObjectInfo:
        return ObjectInfo(key, len(entry.body), dict(entry.metadata))

    def read(self, key: str) -> StoredObject | None:
        self.requests.append(("read", key))
        entry = self.objects.get(key)
        return None if entry is None else StoredObject(self._info(key, entry), entry.body)

    def head(self, key: str) -> ObjectInfo | None:
        self.requests.append(("head", key))
        entry = self.objects.get(key)
        return None if entry is None else self._info(key, entry)

    def create(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> bool:
        self.requests.append(("create", key))
        with self._lock:
            if self.honours_conditions and key in self.objects:
                return False
            self.objects[key] = _Entry(bytes(body), dict(metadata), dict(tags) if self.features.tags else {})
            return True

    def put(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> None:
        self.requests.append(("put", key))
        with self._lock:
            self.objects[key] = _Entry(bytes(body), dict(metadata), dict(tags) if self.features.tags else {})

    def tags(self, key: str) -> dict[str, str] | None:
        self.requests.append(("tags", key))
        entry = self.objects.get(key)
        return None if entry is None else dict(entry.tags)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self.requests.append(("list", prefix))
        for key in sorted(k for k in self.objects if k.startswith(prefix)):
            entry = self.objects[key]
            yield ObjectInfo(key, len(entry.body), last_modified=entry.modified)

    def list_prefixes(self, prefix: str) -> Iterator[str]:
        self.requests.append(("list_prefixes", prefix))
        rests = (k[len(prefix) :] for k in list(self.objects) if k.startswith(prefix))
        yield from sorted({prefix + rest.split("/", 1)[0] + "/" for rest in rests if "/" in rest})

    def with_features(self, features: StoreFeatures) -> MemoryStore:
        return replace(self, features=features)  # the same objects, requests and lock

    def probe_features(self, key: str, *, conditional: bool = True) -> StoreFeatures:
        self.requests.append(("probe_features", key))
        return self.honours if conditional else replace(self.honours, conditional_multipart=False)

    def lifecycle_rules(self) -> LifecycleRules | None:
        self.requests.append(("lifecycle_rules", ""))
        return None if self.lifecycle is None else [dict(rule) for rule in self.lifecycle]
