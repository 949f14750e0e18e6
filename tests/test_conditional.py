"""Whether pushes may rely on If-None-Match: probed once per endpoint and bucket, then remembered."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import pytest

from walbucket.archive.conditional import (
    PROBE_BODY,
    conditional_writes_usable,
    probe_conditional_writes,
    remember_unsupported,
)
from walbucket.core.errors import ConditionalWritesUnsupported
from walbucket.core.keylayout import KeyLayout
from walbucket.store.memory import MemoryStore

LAYOUT = KeyLayout("pg")
PROBE_KEY = "pg/probe/conditional-write"
ENDPOINT = "http://127.0.0.1:9000/wal-archive"


class _RejectingStore(MemoryStore):
    """An endpoint that answers If-None-Match with 501 Not Implemented."""

    def create(self, key: str, body: bytes, metadata: Mapping[str, str], tags: Mapping[str, str]) -> bool:
        self.requests.append(("create", key))
        raise ConditionalWritesUnsupported(f"the endpoint rejects conditional writes (If-None-Match) for '{key}'")


def cache_of(state_dir: Path) -> object:
    return json.loads((state_dir / "conditional-writes.json").read_text())


def test_probe_of_an_honouring_endpoint_is_true_and_leaves_the_probe_object() -> None:
    store = MemoryStore()
    assert probe_conditional_writes(store, LAYOUT) is True
    assert store.requests == [("create", PROBE_KEY), ("create", PROBE_KEY)]
    assert store.objects[PROBE_KEY].body == PROBE_BODY
    assert store.objects[PROBE_KEY].tags == {"walbucket-kind": "probe"}


def test_probe_when_the_probe_object_exists_takes_one_request() -> None:
    store = MemoryStore()
    store.put(PROBE_KEY, PROBE_BODY, {}, {})
    store.requests.clear()
    assert probe_conditional_writes(store, LAYOUT) is True
    assert store.requests == [("create", PROBE_KEY)]


def test_probe_of_an_ignoring_endpoint_is_false() -> None:
    store = MemoryStore(honours_conditions=False)
    assert probe_conditional_writes(store, LAYOUT) is False
    assert store.requests == [("create", PROBE_KEY), ("create", PROBE_KEY)]


def test_probe_of_a_rejecting_endpoint_is_false() -> None:
    store = _RejectingStore()
    assert probe_conditional_writes(store, LAYOUT) is False
    assert store.requests == [("create", PROBE_KEY)]


def test_probe_never_touches_wal_keys() -> None:
    store = MemoryStore()
    probe_conditional_writes(store, LAYOUT)
    assert all(LAYOUT.name_of(key) is None for key in store.objects)


HONOURS = MemoryStore
IGNORES = partial(MemoryStore, honours_conditions=False)
REJECTS = _RejectingStore


@pytest.mark.parametrize(
    ("make_store", "mode", "usable"),
    [(HONOURS, "auto", True), (HONOURS, "required", True), (IGNORES, "auto", False), (REJECTS, "auto", False)],
    ids=["honours-auto", "honours-required", "ignores-auto", "rejects-auto"],
)
def test_modes_after_a_probe(make_store: Callable[[], MemoryStore], mode: str, usable: bool, tmp_path: Path) -> None:
    assert conditional_writes_usable(mode, make_store(), LAYOUT, ENDPOINT, tmp_path / "state") is usable
    assert cache_of(tmp_path / "state") == {ENDPOINT: usable}


@pytest.mark.parametrize("make_store", [IGNORES, REJECTS], ids=["ignores", "rejects"])
def test_required_on_an_endpoint_without_conditional_writes_is_refused(
    make_store: Callable[[], MemoryStore], tmp_path: Path
) -> None:
    with pytest.raises(ConditionalWritesUnsupported) as caught:
        conditional_writes_usable("required", make_store(), LAYOUT, ENDPOINT, tmp_path)
    assert caught.value.message == f"endpoint '{ENDPOINT}' does not honour conditional writes (If-None-Match)"
    assert caught.value.hint == (
        'use an endpoint that does, or set conditional_writes = "auto" to fall back to HEAD-then-PUT'
    )


@pytest.mark.parametrize("make_store", [HONOURS, IGNORES], ids=["honours", "ignores"])
def test_off_makes_no_request_and_writes_no_cache(make_store: Callable[[], MemoryStore], tmp_path: Path) -> None:
    store = make_store()
    assert conditional_writes_usable("off", store, LAYOUT, ENDPOINT, tmp_path) is False
    assert store.requests == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("honours", "mode"), [(True, "auto"), (False, "auto"), (True, "required")])
def test_the_answer_is_cached_and_reused_without_requests(honours: bool, mode: str, tmp_path: Path) -> None:
    state_dir = tmp_path / "state" / "walbucket"
    first = MemoryStore(honours_conditions=honours)
    assert conditional_writes_usable(mode, first, LAYOUT, ENDPOINT, state_dir) is honours
    assert state_dir.stat().st_mode & 0o777 == 0o700
    second = MemoryStore(honours_conditions=honours)
    assert conditional_writes_usable(mode, second, LAYOUT, ENDPOINT, state_dir) is honours
    assert second.requests == []


def test_a_cached_no_still_refuses_required(tmp_path: Path) -> None:
    conditional_writes_usable("auto", MemoryStore(honours_conditions=False), LAYOUT, ENDPOINT, tmp_path)
    store = MemoryStore()
    with pytest.raises(ConditionalWritesUnsupported):
        conditional_writes_usable("required", store, LAYOUT, ENDPOINT, tmp_path)
    assert store.requests == []


def test_the_cache_is_per_endpoint(tmp_path: Path) -> None:
    other = "http://127.0.0.1:9000/other-bucket"
    conditional_writes_usable("auto", MemoryStore(), LAYOUT, ENDPOINT, tmp_path)
    store = MemoryStore(honours_conditions=False)
    assert conditional_writes_usable("auto", store, LAYOUT, other, tmp_path) is False
    assert store.requests != []
    assert cache_of(tmp_path) == {ENDPOINT: True, other: False}


@pytest.mark.parametrize(
    "content",
    ["not json", "[1, 2]", '{"http://127.0.0.1:9000/wal-archive": "yes"}', ""],
)
def test_an_unreadable_cache_means_probing_again(content: str, tmp_path: Path) -> None:
    (tmp_path / "conditional-writes.json").write_text(content)
    store = MemoryStore()
    assert conditional_writes_usable("auto", store, LAYOUT, ENDPOINT, tmp_path) is True
    assert store.requests == [("create", PROBE_KEY), ("create", PROBE_KEY)]
    assert cache_of(tmp_path) == {ENDPOINT: True}


def test_without_a_state_dir_every_call_probes(tmp_path: Path) -> None:
    store = MemoryStore()
    assert conditional_writes_usable("auto", store, LAYOUT, ENDPOINT, None) is True
    store.requests.clear()
    assert conditional_writes_usable("auto", store, LAYOUT, ENDPOINT, None) is True
    assert store.requests == [("create", PROBE_KEY)]


def test_a_state_dir_that_cannot_be_created_costs_only_a_probe(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert conditional_writes_usable("auto", MemoryStore(), LAYOUT, ENDPOINT, blocker / "state") is True
    assert blocker.read_text() == "not a directory"


def test_no_temporary_file_is_left_in_the_state_dir(tmp_path: Path) -> None:
    conditional_writes_usable("auto", MemoryStore(), LAYOUT, ENDPOINT, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["conditional-writes.json"]


def test_a_rejection_after_a_yes_is_remembered_as_no(tmp_path: Path) -> None:
    other = "http://127.0.0.1:9000/other-bucket"
    conditional_writes_usable("auto", MemoryStore(), LAYOUT, ENDPOINT, tmp_path)
    conditional_writes_usable("auto", MemoryStore(), LAYOUT, other, tmp_path)
    remember_unsupported(ENDPOINT, tmp_path)
    assert cache_of(tmp_path) == {ENDPOINT: False, other: True}
    store = MemoryStore()
    assert conditional_writes_usable("auto", store, LAYOUT, ENDPOINT, tmp_path) is False
    with pytest.raises(ConditionalWritesUnsupported):
        conditional_writes_usable("required", store, LAYOUT, ENDPOINT, tmp_path)
    assert store.requests == []


def test_remembering_without_a_state_dir_does_nothing(tmp_path: Path) -> None:
    remember_unsupported(ENDPOINT, None)
    assert list(tmp_path.iterdir()) == []
