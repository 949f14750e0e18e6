"""The async worker and its prefetcher in-process: a store whose requests the test lets finish, no sleeps.

The worker runs in a thread on a real Unix socket in a temporary spool; the client is walbucket's own
(async_client, worker_protocol). Each transfer the test wants to control waits at a gate until the test releases it,
or makes it fail, so races such as a stop with requests in flight are pinned down exactly.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from walbucket.archive.push import PushOptions, push
from walbucket.core.errors import StoreUnavailable
from walbucket.core.fingerprint import PROTOCOL
from walbucket.core.keylayout import KeyLayout
from walbucket.core.settings import Settings
from walbucket.core.walname import parse_wal_name
from walbucket.spooler.client import get_async, push_async
from walbucket.spooler.spool import Spool
from walbucket.spooler.wire import ask_worker
from walbucket.spooler.worker import Worker
from walbucket.store.memory import MemoryStore
from walbucket.store.protocol import ObjectInfo, StoredObject
from walfactory import segment_bytes

FP = "0123456789abcdef"
LAYOUT = KeyLayout("pg")
NAMES = [f"0000000100000000000000{n:02X}" for n in range(1, 9)]
WAIT = 10.0  # bounds every wait: a failing test fails in seconds, never hangs


@dataclass
class Gate:
    """One request held until the test says: ``entered`` once it arrives, then it waits for ``release``."""

    entered: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    error: Exception | None = None

    def release(self, error: Exception | None = None) -> None:
        self.error = error
        self.released.set()


class GatedStore(MemoryStore):
    """A MemoryStore whose gated (operation, key) requests wait for the test before they run."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[tuple[str, str], Gate] = {}

    def gate(self, op: str, name: str) -> Gate:
        key = LAYOUT.key(parse_wal_name(name))  # type: ignore[arg-type]
        self.gates[(op, key)] = Gate()
        return self.gates[(op, key)]

    def _pass(self, op: str, key: str) -> None:
        gate = self.gates.get((op, key))
        if gate is None:
            return
        gate.entered.set()
        assert gate.released.wait(WAIT), f"{op} {key} was never released"
        if gate.error is not None:
            raise gate.error

    def read(self, key: str) -> StoredObject | None:
        self._pass("read", key)
        return super().read(key)

    def create(self, key: str, body: bytes, metadata: Any, tags: Any) -> bool:
        self._pass("create", key)
        return super().create(key, body, metadata, tags)

    def head(self, key: str) -> ObjectInfo | None:
        self._pass("head", key)
        return super().head(key)

    def reads(self) -> list[str]:
        """The WAL files read (the archive identity left out)."""
        names = [key.rsplit("/", 1)[-1] for op, key in self.requests if op == "read"]
        return [name for name in names if parse_wal_name(name) is not None]


@dataclass
class Rig:
    worker: Worker
    store: GatedStore
    spool: Spool
    data_dir: Path
    thread_result: Future[str]
    contents: dict[str, bytes]

    @property
    def socket(self) -> str:
        return str(self.spool.socket_path)

    def ask(self, request: dict[str, Any]) -> dict[str, Any] | None:
        return ask_worker(self.socket, request, None, WAIT)

    def get(self, name: str) -> dict[str, Any] | None:
        return get_async(name, str(self.data_dir / "pg_wal" / "RECOVERYXLOG"), str(self.spool.root), WAIT, None, FP)

    def ready(self, *names: str) -> None:
        for name in names:
            (self.data_dir / "pg_wal" / name).write_bytes(self.contents[name])
            (self.data_dir / "pg_wal" / "archive_status" / f"{name}.ready").touch()

    def stored(self, name: str) -> bool:
        return LAYOUT.key(parse_wal_name(name)) in self.store.objects  # type: ignore[arg-type]


@pytest.fixture
def contents() -> dict[str, bytes]:
    return {name: segment_bytes(name, fill=name.encode()) for name in NAMES}


@pytest.fixture
def make_rig(tmp_path: Path, contents: dict[str, bytes]) -> Iterator[Any]:
    """``make_rig(archived=[names], **settings)``: a worker serving in a thread; stopped when the test ends."""
    rigs: list[Rig] = []
    pool = ThreadPoolExecutor(4)
    short = Path(tempfile.mkdtemp(prefix="wb-", dir="/tmp"))  # a socket path must stay short

    def make(archived: list[str] = (), **overrides: Any) -> Rig:  # type: ignore[assignment]
        data_dir = tmp_path / "pgdata"
        (data_dir / "pg_wal" / "archive_status").mkdir(parents=True)
        store = GatedStore()
        source = tmp_path / "archived"
        source.mkdir()
        for name in archived:
            (source / name).write_bytes(contents[name])
            push(source / name, store, LAYOUT, PushOptions("zstd", 1))
        store.requests.clear()
        values = {"bucket": "wal-archive", "prefix": "pg", "async_workers": 4, "async_idle_exit": 3600.0,
                  "async_wait": WAIT, **overrides}  # fmt: skip
        settings = Settings(**values)
        spool = Spool(short / "spool", FP)
        spool.create()
        worker = Worker(settings, data_dir, spool, store, lambda: PushOptions("zstd", 1))
        listener = worker.listen()
        rig = Rig(worker, store, spool, data_dir, pool.submit(worker.run, listener), contents)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        for gate in rig.store.gates.values():
            gate.release()
        rig.worker.stop("the test ended")
        rig.thread_result.result(WAIT)
    pool.shutdown()


def request(op: str, fingerprint: str = FP, version: int = PROTOCOL, **fields: str) -> dict[str, Any]:
    return {"op": op, "v": version, "fp": fingerprint, **fields}


# --- stopping with requests in flight ------------------------------------------------------------------------------


def test_a_stop_with_a_get_in_flight_answers_it_truly_and_starts_no_prefetch(make_rig: Any) -> None:
    rig = make_rig(archived=NAMES[:6])
    gate = rig.store.gate("read", NAMES[0])
    with ThreadPoolExecutor(1) as client:
        answer = client.submit(rig.get, NAMES[0])
        assert gate.entered.wait(WAIT)
        rig.worker.stop()
        assert rig.worker.draining.wait(WAIT)
        assert not rig.spool.socket_path.exists(), "a command arriving now must start the next worker"
        assert rig.ask(request("ping")) is None
        gate.release()
        result = answer.result(WAIT)
    assert rig.thread_result.result(WAIT) == "stopped on a signal"
    # Answered by this worker (restored), or, when the stop removed the file before the command took it, handed
    # over to the full command (None), which starts the next worker: never an error, never "not in the archive".
    if result is not None:
        assert result["status"] == "ok"
        assert (rig.data_dir / "pg_wal" / "RECOVERYXLOG").read_bytes() == rig.contents[NAMES[0]]
    assert rig.store.reads() == [NAMES[0]], "no prefetch may start once the worker stops"
    assert list(rig.spool.restore_dir.iterdir()) == []


def test_a_stop_with_a_push_in_flight_stores_it_and_answers_archived(make_rig: Any) -> None:
    rig = make_rig()
    rig.ready(NAMES[0])
    gate = rig.store.gate("create", NAMES[0])
    path = str(rig.data_dir / "pg_wal" / NAMES[0])
    with ThreadPoolExecutor(1) as client:
        answer = client.submit(push_async, path, str(rig.spool.root), WAIT, None, FP)
        assert gate.entered.wait(WAIT)
        rig.worker.stop()
        assert rig.worker.draining.wait(WAIT)
        gate.release()
        result = answer.result(WAIT)
    assert result is not None and result["outcome"] == "archived"
    assert rig.stored(NAMES[0])
    assert rig.thread_result.result(WAIT) == "stopped on a signal"


def test_a_command_queued_before_the_stop_is_still_served(make_rig: Any) -> None:
    rig = make_rig(archived=NAMES[:1])
    gate = rig.store.gate("read", NAMES[0])
    with ThreadPoolExecutor(1) as client:
        answer = client.submit(rig.ask, request("get", name=NAMES[0]))
        assert gate.entered.wait(WAIT)  # connected and being served
        rig.worker.stop("idle for 60s")  # as the idle exit would, racing this request
        gate.release()
        assert answer.result(WAIT) == {"status": "ok", "size": len(rig.contents[NAMES[0]]),
                                       "stored": rig.store.objects[LAYOUT.key(parse_wal_name(NAMES[0]))].body.__len__(),
                                       "partial": False}  # fmt: skip
    assert rig.thread_result.result(WAIT) == "idle for 60s"


def test_a_stop_during_a_prefetch_recovery_waits_for_answers_the_command(make_rig: Any) -> None:
    rig = make_rig(archived=NAMES[:6])
    gate = rig.store.gate("read", NAMES[1])
    assert rig.get(NAMES[0]) == {"status": "ok", "size": len(rig.contents[NAMES[0]]), "from_spool": False}
    assert gate.entered.wait(WAIT)  # the prefetch of the next segment is in flight
    with ThreadPoolExecutor(1) as client:
        answer = client.submit(rig.get, NAMES[1])  # recovery waits for that prefetch
        rig.worker.stop()
        assert rig.worker.draining.wait(WAIT)
        gate.release()
        result = answer.result(WAIT)
    if result is not None:
        assert (rig.data_dir / "pg_wal" / "RECOVERYXLOG").read_bytes() == rig.contents[NAMES[1]]
    assert rig.thread_result.result(WAIT) == "stopped on a signal"


# --- settings ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mismatch", [request("push", fingerprint="fedcba9876543210", path="/x"), request("get", version=1, name=NAMES[0])]
)
def test_a_request_with_other_settings_or_protocol_is_never_served_and_stops_the_worker(
    make_rig: Any, mismatch: dict[str, Any]
) -> None:
    rig = make_rig(archived=NAMES[:1])
    assert rig.ask(mismatch) is None  # "mismatch" counts as no worker: the command finds one for its settings
    assert rig.thread_result.result(WAIT) == "stopped for a command with other settings"
    assert rig.store.requests == []
    assert not rig.spool.socket_path.exists()


def test_acknowledgements_of_other_settings_do_not_answer_a_push(make_rig: Any, tmp_path: Path) -> None:
    rig = make_rig()
    rig.ready(NAMES[0])
    path = str(rig.data_dir / "pg_wal" / NAMES[0])
    assert push_async(path, str(rig.spool.root), WAIT, None, FP) is not None
    other = Spool(rig.spool.root, "fedcba9876543210")  # a worker of another prefix acknowledged this file
    from walbucket.spooler.spool import stamp_of

    other.write_ack(NAMES[0], stamp_of(Path(path)), "archived")
    assert rig.spool.take_ack(NAMES[0], stamp_of(Path(path))) is None


# --- archiving ahead -----------------------------------------------------------------------------------------------


def test_the_look_ahead_refills_as_uploads_finish_and_never_exceeds_its_window(make_rig: Any) -> None:
    rig = make_rig(async_lookahead=2)
    rig.ready(*NAMES[:6])
    gates = {name: rig.store.gate("create", name) for name in NAMES[1:6]}
    path = str(rig.data_dir / "pg_wal" / NAMES[0])
    assert push_async(path, str(rig.spool.root), WAIT, None, FP) == {
        "status": "ok", "outcome": "archived", "size": len(rig.contents[NAMES[0]]),
        "stored": len(rig.store.objects[LAYOUT.key(parse_wal_name(NAMES[0]))].body), "from_spool": False,
    }  # fmt: skip
    for step, name in enumerate(NAMES[1:6]):
        assert gates[name].entered.wait(WAIT), f"{name} was never queued"
        window = NAMES[1 + step : 3 + step]
        beyond = [n for n in NAMES[1:6] if n not in window and n > window[-1]]
        assert not any(gates[n].entered.is_set() for n in beyond), f"more than 2 uploads ahead at {name}"
        gates[name].release()
    for name in NAMES[1:6]:
        assert _wait_for_ack(rig, name)
        assert rig.stored(name)


def _wait_for_ack(rig: Rig, name: str) -> bool:
    ack = rig.spool.archive_dir / f"{name}.ok"
    done = threading.Event()
    for _ in range(int(WAIT * 100)):
        if ack.exists():
            return True
        done.wait(0.01)
    return False


# --- restoring ahead -----------------------------------------------------------------------------------------------


def test_a_prefetch_failing_while_recovery_waits_for_it_is_an_error_then_fetched_again(make_rig: Any) -> None:
    rig = make_rig(archived=NAMES[:6])
    gate = rig.store.gate("read", NAMES[1])
    assert rig.get(NAMES[0]) is not None
    assert gate.entered.wait(WAIT)
    with ThreadPoolExecutor(1) as client:
        answer = client.submit(rig.get, NAMES[1])
        gate.release(StoreUnavailable("storage unavailable for the test"))
        with pytest.raises(StoreUnavailable, match="storage unavailable for the test"):
            answer.result(WAIT)  # an outage, never "not in the archive"
    del rig.store.gates[("read", LAYOUT.key(parse_wal_name(NAMES[1])))]  # type: ignore[arg-type]
    assert rig.get(NAMES[1]) == {"status": "ok", "size": len(rig.contents[NAMES[1]]), "from_spool": False}
    assert (rig.data_dir / "pg_wal" / "RECOVERYXLOG").read_bytes() == rig.contents[NAMES[1]]


def test_a_signal_only_raises_a_flag_and_the_accept_loop_stops_gracefully(make_rig: Any) -> None:
    """The handler must not take a lock: the thread it interrupts may hold it (an Event's set, say)."""
    rig = make_rig()
    rig.worker.signalled()
    assert rig.thread_result.result(WAIT) == "stopped on a signal"
    assert not rig.spool.socket_path.exists()
