"""Process accounting for the benchmark: CPU seconds and peak memory of the processes PostgreSQL starts.

Commands (archive_command, restore_command and the latency runs) run under GNU time through a small wrapper
script that appends one line per run to ``<dir>/<phase>.time``: exact CPU and max RSS of the command and of
everything it waited for.

Daemons detach from the command that started them (walbucket's async worker, pgBackRest's async archive
processes), and the postmaster outlives pg_ctl. The benchmark makes itself a child subreaper
(prctl PR_SET_CHILD_SUBREAPER), so these orphans are reparented to it; the Reaper thread reaps them with wait4,
which reports their exact CPU time and peak RSS, including the children they waited for (pgBackRest's local
processes). It only ever reaps zombies it identified as such orphans, never a child that subprocess waits for.
Long-lived daemons are also read live from /proc (utime+stime, VmHWM) at phase boundaries.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CLK_TCK",
    "CmdRun",
    "Reaped",
    "Reaper",
    "TimingDir",
    "median",
    "proc_cpu",
    "proc_hwm",
    "read_time_log",
    "wait_until",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
_PR_SET_CHILD_SUBREAPER = 36
TIME_FORMAT = "%x %e %U %S %M"  # exit status, wall s, user s, system s, max RSS KiB

_WRAPPER = """#!/bin/sh
# timed DIR COMMAND...: run COMMAND under GNU time, appending one line "exit wall user sys maxrss_kib"
# to DIR/<phase>.time, where <phase> is the first line of DIR/phase (written by the benchmark).
dir=$1; shift
read -r phase < "$dir/phase" || phase=none
exec /usr/bin/time -a -o "$dir/$phase.time" -f '{fmt}' "$@"
"""


def proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3, the state, first); None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def proc_comm(pid: int) -> str:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return text[text.index("(") + 1 : text.rindex(")")]


def proc_cpu(pid: int) -> float | None:
    """utime + stime of a live process, in seconds."""
    fields = proc_stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_hwm(pid: int) -> int | None:
    """Peak resident set size (VmHWM) of a live process, in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def proc_cmdline(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def wait_until(predicate: object, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` (a callable) until true or ``timeout`` seconds pass; return whether it became true."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# -- commands under GNU time -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CmdRun:
    exit: int
    wall: float
    cpu: float  # user + system seconds
    maxrss: int  # bytes


def read_time_log(path: Path) -> list[CmdRun]:
    """Parse the lines GNU time appended (other lines, such as 'Command exited with non-zero status', are skipped)."""
    runs = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        parts = line.split()
        if len(parts) != 5:
            continue
        try:
            runs.append(CmdRun(int(parts[0]), float(parts[1]), float(parts[2]) + float(parts[3]), int(parts[4]) * 1024))
        except ValueError:
            continue
    return runs


class TimingDir:
    """A directory the server user can write, holding the wrapper's phase file and its per-phase logs."""

    def __init__(self, path: Path, give: object) -> None:
        assert callable(give)
        self.path = path
        self._give = give
        path.mkdir(parents=True, exist_ok=True)
        give(path)
        self.phase("setup")

    @staticmethod
    def install_wrapper(path: Path, give: object) -> Path:
        assert callable(give)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_WRAPPER.format(fmt=TIME_FORMAT))
        path.chmod(0o755)
        give(path)
        return path

    def phase(self, name: str) -> None:
        target = self.path / "phase"
        tmp = self.path / "phase.tmp"
        tmp.write_text(name + "\n")
        self._give(tmp)
        os.replace(tmp, target)

    def runs(self, phase: str) -> list[CmdRun]:
        return read_time_log(self.path / f"{phase}.time")


# -- orphans reparented to the benchmark ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reaped:
    pid: int
    kind: str  # walbucket-worker | pgbackrest | postgres
    role: str  # pgBackRest's command and role (archive-push:async), or the process's name
    cpu: float
    maxrss: int  # bytes
    label: str  # the benchmark phase current when it was reaped
    at: float


@dataclass
class _Orphan:
    kind: str
    role: str
    last_cpu: float = 0.0
    last_hwm: int = 0


@dataclass
class Reaper:
    """Reparent orphaned descendants to this process and reap them with wait4, recording their rusage."""

    interval: float = 0.05
    label: str = "setup"
    reaped: list[Reaped] = field(default_factory=list)
    _known: dict[int, _Orphan] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Reaper:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._poll()  # reap what finished last

    def _children(self) -> list[int]:
        pids: list[int] = []
        for task in os.listdir("/proc/self/task"):
            try:
                pids.extend(int(p) for p in Path(f"/proc/self/task/{task}/children").read_text().split())
            except OSError:
                continue
        return pids

    @staticmethod
    def _classify(pid: int, comm: str) -> _Orphan | None:
        if comm == "postgres":
            return _Orphan("postgres", "postmaster")
        argv = proc_cmdline(pid)
        if comm == "pgbackrest" or (argv and argv[0].endswith("pgbackrest")):
            role = next((a for a in argv if ":" in a and not a.startswith("-")), "pgbackrest")
            return _Orphan("pgbackrest", role)
        if len(argv) >= 3 and argv[-1] == "worker" and "walbucket" in argv and "-m" in argv:
            return _Orphan("walbucket-worker", "worker")
        return None

    def _poll(self) -> None:
        for pid in self._children():
            fields = proc_stat_fields(pid)
            if fields is None:
                continue
            with self._lock:
                orphan = self._known.get(pid)
            if orphan is None:
                orphan = self._classify(pid, proc_comm(pid))
                if orphan is None:
                    continue  # a child that subprocess waits for: never ours to reap
                with self._lock:
                    self._known[pid] = orphan
            if fields[0] != "Z":
                orphan.last_cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
                orphan.last_hwm = max(orphan.last_hwm, proc_hwm(pid) or 0)
                continue
            try:
                got, _status, usage = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if got == pid:
                with self._lock:
                    self._known.pop(pid, None)
                    self.reaped.append(
                        Reaped(
                            pid,
                            orphan.kind,
                            orphan.role,
                            usage.ru_utime + usage.ru_stime,
                            usage.ru_maxrss * 1024,
                            self.label,
                            time.monotonic(),
                        )
                    )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._poll()
            except Exception as exc:  # noqa: BLE001 - accounting must never stop the benchmark
                print(f"bench: reaper: {exc!r}", flush=True)

    def alive(self, kind: str) -> list[int]:
        with self._lock:
            return [pid for pid, o in self._known.items() if o.kind == kind]

    def wait_gone(self, kind: str, timeout: float) -> bool:
        return wait_until(lambda: not self.alive(kind), timeout, 0.1)

    def reaped_in(self, labels: Iterable[str], kind: str) -> list[Reaped]:
        wanted = set(labels)
        with self._lock:
            return [r for r in self.reaped if r.label in wanted and r.kind == kind]

    def final(self, pid: int) -> Reaped | None:
        with self._lock:
            return next((r for r in self.reaped if r.pid == pid), None)


def median(values: Iterable[float]) -> float | None:
    items = list(values)
    return statistics.median(items) if items else None
