"""`make bench`: walbucket's latency, archive and restore throughput, CPU and memory, next to pgBackRest's.

A benchmark, not a test: it reports numbers, and prints each target with PASS or MISS; it fails only when the
harness itself fails. Everything runs on this machine and talks only to 127.0.0.1: moto's S3 server (a child
process), stunnel in front of it for pgBackRest (which speaks S3 only over TLS), and throwaway PostgreSQL 15
clusters (as the 'postgres' user when run as root). Every process it started is stopped by its PID.

What it measures (docs/performance.md explains each figure):
  startup     a fresh interpreter importing walbucket's paths (python -c), and the installed bin/walbucket exec'd as
              PostgreSQL runs it, answering a push and a get from a spool prepared for it (tools/bench_micro.py)
  latency     one push and one get: cold (sync, a fresh process each), through the async worker and from its
              spool, and a get of a file that is not archived; medians of --runs runs
  live        pgbench -i -s SCALE (about 1.03 GiB of WAL at 85) with archiving on: archive rate, the backlog of
              .ready files each second, and the time from the load's end until the last segment is archived
  drain       the same load with archiving paused (archive_command = ''), then resumed: segments per second
  pitr        point-in-time recovery from a base backup taken before the live load, to a restore point at
              its end: segments replayed per second
  cpu, memory CPU seconds per segment and peak RSS of the archiver's processes: commands under GNU time,
              daemons (walbucket's worker, pgBackRest's async processes) reaped by the benchmark with wait4
for three modes: walbucket sync, walbucket async, pgBackRest async (archive-async=y, process-max=4), when
pgBackRest is installed. Results: bench-output/latest.json and latest.txt (the table also goes to stdout).

Two loads (--loads): ``init`` is pgbench -i, whose WAL is stored 17-35-fold smaller; ``oltp`` is pgbench's TPC-B-like
transactions on a table larger than shared_buffers, with a checkpoint every 30 s or 64 MB of WAL, so that full-page
images fill the WAL as on a busy server: stored about 10-fold smaller (production OLTP WAL: 3-5-fold; pgbench's rows
are blank-padded). The report gives each load's compression ratio.
Transport (--transport): ``tls`` (the default) sends walbucket through the same stunnel TLS endpoint as pgBackRest,
with certificate verification on; ``http`` talks to moto directly, a second, labelled figure (pgBackRest has no
plain-HTTP S3 client, so an http run compares walbucket only with itself).

Run: .venv/bin/python tools/bench.py [--scale 85] [--runs 7] [--modes wb-sync,wb-async,pgbr-async]
     [--loads init,oltp] [--transport tls] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_micro import codec_profile, startup_profile
from bench_pgbackrest import PgBackRest, Stunnel, pgbackrest_path
from bench_procs import CLK_TCK, TIME_FORMAT, Reaper, TimingDir, median, proc_cpu, proc_hwm, read_time_log
from bench_procs import wait_until as poll
from bench_report import render, targets
from lab_pg import PGBIN, PgCluster, PgError, PgLab, walbucket_executable
from lab_s3 import MotoServer

BUCKET = "walbucket-bench"
SEG = 16 << 20
MISSING = "00000001000000FF000000FE"  # never written: the answer is 'not in the archive'
TARGET_NAME = "bench-end"
_RESTORED_RE = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
# a segment's key: walbucket's .../NAME, pgBackRest's .../NAME-SHA1.zst
_SEGMENT_KEY_RE = re.compile(r"/(?P<name>[0-9A-F]{24})(-[0-9a-f]{40})?(\.[a-z0-9]+)?$")


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Mode:
    name: str
    tool: str  # walbucket | pgbackrest
    asynchronous: bool
    title: str


MODES = {
    m.name: m
    for m in (
        Mode("wb-sync", "walbucket", False, "walbucket sync"),
        Mode("wb-async", "walbucket", True, "walbucket async"),
        Mode("pgbr-async", "pgbackrest", True, "pgBackRest async"),
    )
}


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class Bench:
    args: argparse.Namespace
    lab: PgLab
    moto: MotoServer
    reaper: Reaper
    stunnel: Stunnel | None
    wrapper: Path
    say: Progress
    ca_bundle: Path | None = None  # the stunnel certificate, readable by the server user
    pgbackrest: bool = False  # installed, with stunnel, and not left out (--no-pgbackrest)

    def endpoint_env(self, transport: str) -> dict[str, str]:
        """How walbucket reaches the S3 endpoint: through stunnel over TLS (verified), or moto over plain HTTP."""
        if transport == "http":
            return {}
        if self.stunnel is None or self.ca_bundle is None:
            raise BenchError("the tls transport needs stunnel (make bench installs it)")
        return {"WALBUCKET_ENDPOINT_URL": f"https://127.0.0.1:{self.stunnel.port}",
                "WALBUCKET_CA_BUNDLE": str(self.ca_bundle)}  # fmt: skip

    @property
    def moto_log(self) -> Path:
        return Path(self.args.out) / "moto.log"

    @property
    def spool_dir(self) -> Path:
        return Path(self.lab.env["WALBUCKET_STATE_DIR"]) / "spool"


def wb_env(prefix: str, asynchronous: bool, **extra: str) -> dict[str, str]:
    return {
        "WALBUCKET_PREFIX": prefix,
        "WALBUCKET_ASYNC": "on" if asynchronous else "off",
        "WALBUCKET_ASYNC_IDLE_EXIT": "3600",  # the benchmark reads its CPU and stops it itself
        **{f"WALBUCKET_{k.upper()}": v for k, v in extra.items()},
    }


# -- walbucket's worker ----------------------------------------------------------------------------------------


def _spool(b: Bench, data_dir: Path) -> Any:
    from walbucket.spooler.spool import Spool

    return Spool.for_data_dir(b.spool_dir, data_dir, "")  # the fingerprint is the worker's: see _prefetched


def worker_pid(b: Bench, data_dir: Path) -> int | None:
    """The PID of the async worker serving ``data_dir``, if it runs.

    Found among the orphans reparented to the benchmark (bench_procs.Reaper) by its working directory, so the
    benchmark does not depend on the spool's layout, which may change under it.
    """
    wanted = str(data_dir.resolve())
    for pid in b.reaper.alive("walbucket-worker"):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == wanted:
                return pid
        except OSError:
            continue
    return None


def stop_worker(b: Bench, pid: int | None) -> None:
    """Stop a worker this benchmark caused to start, by its PID; the reaper records its final rusage."""
    if pid is not None:
        stop_pid(pid)


def stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if not poll(lambda: not Path(f"/proc/{pid}").exists(), 10, 0.05):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- a phase's CPU and memory --------------------------------------------------------------------------------------


class Meter:
    """CPU and peak memory of one phase: commands (GNU time), the worker or pgBackRest's daemons, the endpoint."""

    def __init__(self, b: Bench, timing: TimingDir, data_dir: Path, label: str) -> None:
        self.b, self.timing, self.data_dir, self.label = b, timing, data_dir, label
        self.worker: int | None = None
        self.w0 = self.m0 = self.s0 = 0.0
        self.log0 = 0
        self.t0 = 0.0

    def _stunnel_pid(self) -> int | None:
        proc = self.b.stunnel.proc if self.b.stunnel else None
        return proc.pid if proc else None

    def start(self) -> None:
        self.b.reaper.label = self.label
        self.timing.phase(self.label)
        self.worker = worker_pid(self.b, self.data_dir)
        self.w0 = (proc_cpu(self.worker) or 0.0) if self.worker else 0.0
        self.m0 = (proc_cpu(self.b.moto.proc.pid) or 0.0) if self.b.moto.proc else 0.0
        spid = self._stunnel_pid()
        self.s0 = (proc_cpu(spid) or 0.0) if spid else 0.0
        self.log0 = _size(self.b.moto_log)
        self.t0 = time.monotonic()

    def stop(self, segments: int) -> dict[str, Any]:
        b = self.b
        b.reaper.wait_gone("pgbackrest", 30)  # pgBackRest's async processes exit once their queue is done
        self.timing.phase("idle")
        b.reaper.label = "idle"
        worker = self.worker or worker_pid(b, self.data_dir)
        worker_cpu, worker_rss = 0.0, None
        if worker is not None:
            now = proc_cpu(worker)
            final = b.reaper.final(worker)
            worker_cpu = (now if now is not None else (final.cpu if final else 0.0)) - self.w0
            worker_rss = proc_hwm(worker) or (final.maxrss if final else 0)
        daemons = b.reaper.reaped_in([self.label], "pgbackrest")
        commands = self.timing.runs(self.label)
        cmd_cpu = sum(r.cpu for r in commands)
        daemon_cpu = sum(r.cpu for r in daemons)
        moto_cpu = (proc_cpu(b.moto.proc.pid) or 0.0) - self.m0 if b.moto.proc else 0.0
        spid = self._stunnel_pid()
        stunnel_cpu = ((proc_cpu(spid) or 0.0) - self.s0) if spid else 0.0
        tool_cpu = cmd_cpu + worker_cpu + daemon_cpu
        per = max(segments, 1)
        return {
            "segments": segments,
            "commands": len(commands),
            "command_failures": sum(1 for r in commands if r.exit not in (0, 1)),
            "command_cpu_s": round(cmd_cpu, 3),
            "command_wall_median_ms": _ms(median(r.wall for r in commands)),
            "command_max_rss_mib": _mib(max((r.maxrss for r in commands), default=0)),
            "worker_pid": worker,
            "worker_cpu_s": round(worker_cpu, 3),
            "worker_peak_rss_mib": None if worker_rss is None else _mib(worker_rss),
            "daemons": len(daemons),
            "daemon_roles": sorted({r.role for r in daemons}),
            "daemon_cpu_s": round(daemon_cpu, 3),
            "daemon_max_rss_mib": _mib(max(r.maxrss for r in daemons)) if daemons else None,
            "tool_cpu_s": round(tool_cpu, 3),
            "tool_cpu_per_segment_ms": round(1000 * tool_cpu / per, 1),
            "moto_cpu_s": round(moto_cpu, 3),
            "moto_cpu_per_segment_ms": round(1000 * moto_cpu / per, 1),
            "stunnel_cpu_s": round(stunnel_cpu, 3),
            "s3_requests": _s3_requests(b.moto_log, self.log0),
        }


_REQUEST_RE = re.compile(r'"(?:\x1b\[[0-9;]*m)?(GET|PUT|HEAD|POST|DELETE) \S+ HTTP/[0-9.]+(?:\x1b\[0m)?" (\d{3})')


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _s3_requests(log: Path, offset: int) -> dict[str, int]:
    """Count the requests moto logged since ``offset``, by method, and the 404 answers."""
    counts: dict[str, int] = {}
    try:
        with log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return counts
    for method, status in _REQUEST_RE.findall(text):
        counts[method] = counts.get(method, 0) + 1
        if status == "404":
            counts["404"] = counts.get("404", 0) + 1
    return counts


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _mib(size: float) -> float:
    return round(size / (1 << 20), 1)


# -- latency -------------------------------------------------------------------------------------------------------


# bash's $EPOCHREALTIME around the command: "$1" is where the two timestamps go, the rest is the command.
_CLOCKED = (
    'out=$1; shift; start=$EPOCHREALTIME; "$@"; code=$?; end=$EPOCHREALTIME; echo "$start $end" > "$out"; exit $code'
)


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float
    rss: int
    exit: int


class Latency:
    def __init__(self, b: Bench, cwd: Path) -> None:
        self.b = b
        self.cwd = cwd
        self.time_file = b.lab.make_dir(b.lab.base_dir / "latency-time") / "last.time"
        self.wall_file = self.time_file.with_name("last.wall")
        self.results: dict[str, dict[str, Any]] = {}

    def run(self, argv: Sequence[str], env: dict[str, str], expect: int = 0) -> Sample:
        """Run one command as PostgreSQL does (a small process forks and execs it) and time it from that process.

        The clock is bash's, around the fork and exec of GNU time and the command, so the figure does not include
        forking this large benchmark process; both tools are timed the same way.
        """
        self.time_file.unlink(missing_ok=True)
        self.wall_file.unlink(missing_ok=True)
        timed = ["/usr/bin/time", "-o", str(self.time_file), "-f", TIME_FORMAT, *argv]
        proc = self.b.lab.run(["bash", "-c", _CLOCKED, "clocked", str(self.wall_file), *timed], cwd=self.cwd, env=env,
                              check=False)  # fmt: skip
        try:
            started, ended = (float(v.replace(",", ".")) for v in self.wall_file.read_text().split())
        except (OSError, ValueError) as exc:
            raise BenchError(f"{shlex.join(argv)}: no timing ({exc}):\n{proc.stderr[-1500:]}") from None
        wall = ended - started
        runs = read_time_log(self.time_file)
        code = runs[-1].exit if runs else proc.returncode
        if code != expect:
            raise BenchError(f"{shlex.join(argv)} exited with {code}, expected {expect}:\n{proc.stderr[-1500:]}")
        return Sample(wall, runs[-1].cpu if runs else 0.0, runs[-1].maxrss if runs else 0, code)

    def series(self, key: str, tool: str, label: str, items: Sequence[Any], one: Callable[[Any], Sample]) -> None:
        try:
            samples = [one(item) for item in items]
        except (BenchError, PgError, OSError) as exc:
            self.results[key] = {"tool": tool, "label": label, "error": str(exc)}
            self.b.say(f"latency {key}: FAILED: {str(exc).splitlines()[0]}")
            return
        walls = [s.wall for s in samples]
        self.results[key] = {
            "tool": tool,
            "label": label,
            "runs": len(samples),
            "median_ms": _ms(median(walls)),
            "min_ms": _ms(min(walls)),
            "max_ms": _ms(max(walls)),
            "cpu_median_ms": _ms(median(s.cpu for s in samples)),
            "max_rss_mib": _mib(max(s.rss for s in samples)),
        }
        r = self.results[key]
        self.b.say(f"latency {key}: median {r['median_ms']} ms (cpu {r['cpu_median_ms']} ms, {r['max_rss_mib']} MiB)")


def _wal_dir(b: Bench, name: str, source: Path, segments: Sequence[str], ready: bool) -> Path:
    """Copies of ``segments`` in a directory of their own; with ``ready``, an archive_status/*.ready for each."""
    directory = b.lab.make_dir(b.lab.base_dir / "latency-wal" / name)
    for seg in segments:
        shutil.copyfile(source / seg, directory / seg)
        b.lab.give(directory / seg)
    if ready:
        status = b.lab.make_dir(directory / "archive_status")
        for seg in segments:
            b.lab.write_file(status / f"{seg}.ready", "")
    return directory


def _mark_done(directory: Path, seg: str) -> None:
    """What PostgreSQL does after archive_command succeeded."""
    status = directory / "archive_status"
    if (status / f"{seg}.ready").exists():
        os.replace(status / f"{seg}.ready", status / f"{seg}.done")


def run_latency(b: Bench) -> dict[str, Any]:
    runs = b.args.runs
    need = 2 * runs + 4
    b.say(f"latency: a cluster with {need}+ full WAL segments (pgbench -i, archiving paused)")
    lat = b.lab.cluster("lat").init()
    lat.configure(archive_mode=True, archive_command="")
    lat.start()
    lat.pgbench_init(max(4, math.ceil(need * 16 / 12) + 2))
    lat.switch_wal()
    pgbr = None
    if b.stunnel is not None and b.pgbackrest:
        pgbr = PgBackRest(b.lab, b.stunnel, BUCKET, "lat", lat, "lat", archive_timeout=30)
        pgbr.run("stanza-create")
    lat.stop()
    status = lat.wal_dir / "archive_status"
    segs = sorted(
        n[: -len(".ready")]
        for n in os.listdir(status)
        if n.endswith(".ready") and len(n) == 30 and (lat.wal_dir / n[:24]).stat().st_size == SEG
    )
    if len(segs) < need:
        raise BenchError(f"the latency cluster wrote {len(segs)} segments, {need} needed")
    segs = segs[-need:]
    results: dict[str, Any] = {"codecs": codec_profile([lat.wal_dir / s for s in segs[:4]])}
    b.say(f"codecs, CPU ms per segment: {results['codecs']}")
    lat_box = Latency(b, lat.data_dir)
    plain = _wal_dir(b, "plain", lat.wal_dir, segs, ready=False)
    dest = b.lab.make_dir(b.lab.base_dir / "latency-restore")
    _latency_walbucket_sync(b, lat_box, segs, plain, dest)
    _latency_walbucket_async(b, lat_box, lat, segs, plain, dest)
    if pgbr is not None:
        _latency_pgbackrest(b, lat_box, lat, pgbr, segs, plain, dest)
    return {**results, **lat_box.results}


def _latency_walbucket_sync(b: Bench, box: Latency, segs: list[str], plain: Path, dest: Path) -> None:
    runs, wb = b.args.runs, str(walbucket_executable())
    env = {**wb_env("lat/sync", False), **b.endpoint_env(b.args.transports[0])}
    b.say("latency: walbucket sync (a fresh process per command)")
    box.series(
        "wb.sync.push",
        "walbucket",
        "push, cold process (sync)",
        segs[:runs],
        lambda s: box.run([wb, "push", str(plain / s)], env),
    )
    box.series(
        "wb.sync.get",
        "walbucket",
        "get, cold process (sync)",
        segs[:runs],
        lambda s: box.run([wb, "get", s, str(dest / f"sync-{s}")], env),
    )
    box.series(
        "wb.sync.missing",
        "walbucket",
        "get of a missing file, cold (sync)",
        range(runs),
        lambda _i: box.run([wb, "get", MISSING, str(dest / "missing")], env, expect=1),
    )


def _latency_walbucket_async(b: Bench, box: Latency, lat: PgCluster, segs: list[str], plain: Path, dest: Path) -> None:
    runs, wb = b.args.runs, str(walbucket_executable())
    endpoint = b.endpoint_env(b.args.transports[0])
    env = {**wb_env("lat/async", True), **endpoint}
    spool = _spool(b, lat.data_dir)
    b.say("latency: walbucket async (worker started by the first command)")
    box.series(
        "wb.async.push_start",
        "walbucket",
        "push, no worker yet (starts it)",
        segs[:1],
        lambda s: box.run([wb, "push", str(plain / s)], env),
    )
    box.series(
        "wb.async.push_worker",
        "walbucket",
        "push through the running worker",
        segs[1 : runs + 1],
        lambda s: box.run([wb, "push", str(plain / s)], env),
    )
    ahead_segs = segs[runs + 1 : 2 * runs + 3]
    ahead = _wal_dir(b, "ahead", lat.wal_dir, ahead_segs, ready=True)

    def push_ahead(seg: str) -> Sample:
        sample = box.run([wb, "push", str(ahead / seg)], env)
        _mark_done(ahead, seg)
        return sample

    try:
        push_ahead(ahead_segs[0])  # the worker queues the other .ready files
        if not poll(lambda: all((spool.archive_dir / f"{s}.ok").exists() for s in ahead_segs[1:]), 60):
            raise BenchError("the worker did not push the ready segments ahead within 60 s")
    except BenchError as exc:
        box.results["wb.async.push_spool"] = {"tool": "walbucket", "label": "push", "error": str(exc)}
    else:
        box.series(
            "wb.async.push_spool",
            "walbucket",
            "push answered from the spool (pushed ahead)",
            ahead_segs[1 : runs + 1],
            push_ahead,
        )
    box.run([wb, "get", segs[0], str(dest / f"async-{segs[0]}")], env)  # the worker prefetches what follows
    poll(lambda: all(any(spool.restore_root.glob(f"*/{s}")) for s in segs[1 : runs + 1]), 60)
    box.series(
        "wb.async.get_spool",
        "walbucket",
        "get answered from the spool (prefetched)",
        segs[1 : runs + 1],
        lambda s: box.run([wb, "get", s, str(dest / f"async-{s}")], env),
    )
    box.series(
        "wb.async.missing",
        "walbucket",
        "get of a missing file, worker running",
        range(runs),
        lambda _i: box.run([wb, "get", MISSING, str(dest / "missing")], env, expect=1),
    )
    stop_worker(b, worker_pid(b, lat.data_dir))
    # no prefetch: every get goes through the worker
    env0 = {**wb_env("lat/async", True, async_lookahead="0"), **endpoint}
    box.run([wb, "get", MISSING, str(dest / "missing")], env0, expect=1)  # starts that worker
    box.series(
        "wb.async.get_worker",
        "walbucket",
        "get through the running worker (not prefetched)",
        ahead_segs[1 : runs + 1],
        lambda s: box.run([wb, "get", s, str(dest / f"async0-{s}")], env0),
    )
    stop_worker(b, worker_pid(b, lat.data_dir))


def _latency_pgbackrest(
    b: Bench, box: Latency, lat: PgCluster, pgbr: PgBackRest, segs: list[str], plain: Path, dest: Path
) -> None:
    runs = b.args.runs
    b.say("latency: pgBackRest (sync: --no-archive-async; async: archive-async=y, process-max=4)")
    box.series(
        "pgbr.sync.push",
        "pgbackrest",
        "push, cold process (sync)",
        segs[:runs],
        lambda s: box.run(pgbr.argv("--no-archive-async", "archive-push", str(plain / s)), {}),
    )
    box.series(
        "pgbr.sync.get",
        "pgbackrest",
        "get, cold process (sync)",
        segs[:runs],
        lambda s: box.run(pgbr.argv("--no-archive-async", "archive-get", s, str(dest / f"pgbr-{s}")), {}),
    )
    box.series(
        "pgbr.sync.missing",
        "pgbackrest",
        "get of a missing file, cold (sync)",
        range(runs),
        lambda _i: box.run(pgbr.argv("--no-archive-async", "archive-get", MISSING, str(dest / "m")), {}, 1),
    )
    # async push reads the .ready files of the cluster's own pg_wal: leave only the segments of this test ready
    status = lat.wal_dir / "archive_status"
    mine = set(segs[runs : 2 * runs + 1])
    for name in os.listdir(status):
        if name.endswith(".ready") and name[:-6] not in mine:
            os.replace(status / name, status / f"{name[:-6]}.done")

    def push(seg: str) -> Sample:
        sample = box.run(pgbr.argv("archive-push", str(lat.wal_dir / seg)), {})
        _mark_done(lat.wal_dir, seg)
        return sample

    ordered = segs[runs : 2 * runs + 1]
    box.series("pgbr.async.push_start", "pgbackrest", "push, no async process yet (starts it)", ordered[:1], push)
    box.series("pgbr.async.push_spool", "pgbackrest", "push answered from the spool (pushed ahead)", ordered[1:], push)
    b.reaper.wait_gone("pgbackrest", 30)

    def get(seg: str) -> Sample:
        return box.run(pgbr.argv("archive-get", seg, str(dest / f"pgbr-async-{seg}")), {})

    box.series("pgbr.async.get_start", "pgbackrest", "get, no async process yet (starts it)", ordered[:1], get)
    box.series("pgbr.async.get_spool", "pgbackrest", "get answered from the spool (prefetched)", ordered[1:], get)
    box.series(
        "pgbr.async.missing",
        "pgbackrest",
        "get of a missing file, async",
        range(runs),
        lambda _i: box.run(pgbr.argv("archive-get", MISSING, str(dest / "m")), {}, 1),
    )
    b.reaper.wait_gone("pgbackrest", 30)


# -- archive and restore throughput --------------------------------------------------------------------------------


def ready_count(status: Path) -> int:
    try:
        return sum(1 for n in os.listdir(status) if n.endswith(".ready"))
    except FileNotFoundError:
        return 0


class Backlog:
    """The number of .ready files, sampled every second while a phase runs."""

    def __init__(self, status: Path) -> None:
        self.status = status
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backlog", daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(ready_count(self.status))
            if self._stop.wait(1.0):
                return

    def __enter__(self) -> Backlog:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(ready_count(self.status))


def _hup(cluster: PgCluster) -> None:
    pid = cluster.postmaster_pid()
    if pid is None:
        raise BenchError(f"{cluster.name} is not running")
    os.kill(pid, signal.SIGHUP)


def _wait_caught_up(cluster: PgCluster, timeout: float) -> bool:
    """Wait until no .ready file is left; give up early when archive_command keeps failing."""
    status = cluster.wal_dir / "archive_status"
    failures0 = cluster.log_text().count("archive command failed")
    checked = [time.monotonic()]

    def done() -> bool:
        if ready_count(status) == 0:
            return True
        if time.monotonic() - checked[0] > 1:
            checked[0] = time.monotonic()
            if cluster.log_text().count("archive command failed") - failures0 >= 3:
                raise BenchError(f"archive_command fails on {cluster.name}:\n{cluster.log_tail(12)}")
        return False

    return poll(done, timeout, 0.02)


# The oltp load's server settings: shared_buffers (128 MB) smaller than the table, a checkpoint every 30 s or 64 MB of
# WAL (every page's first change after one is a full-page image, as on a busy server), the defaults otherwise
# (full_page_writes on, no wal_compression). Its WAL is stored about 10-fold smaller with zstd-1; pgbench -i's 17-35.
OLTP_TRANSACTIONS = 20000  # per client: about 1 GiB of WAL at OLTP_GUCS (14 KiB a transaction, mostly page images)
OLTP_GUCS = {"shared_buffers": "128MB", "checkpoint_timeout": "30s", "max_wal_size": "64MB"}


class ModeRun:
    """One mode's primary, the copy restored from its base backup, and the commands each runs, for one load and
    transport (``tag``: e.g. 'oltp-tls')."""

    def __init__(self, b: Bench, mode: Mode, load: str, transport: str) -> None:
        self.b, self.mode, self.load, self.transport = b, mode, load, transport
        self.tag = f"{load}-{transport}"
        lab = b.lab
        self.prefix = f"bench/{self.tag}/{mode.name}"
        env = (
            {**wb_env(self.prefix, mode.asynchronous), **b.endpoint_env(transport)} if mode.tool == "walbucket" else {}
        )
        self.label = f"{mode.name}.{self.tag}"
        self.first_load_segment = ""  # the segment the first measured load starts in
        self.primary = lab.cluster(f"{mode.name}-{self.tag}", env=env)
        self.restored = lab.cluster(f"{mode.name}-{self.tag}-pitr", env=env)
        self.t_archive = TimingDir(lab.base_dir / "timing" / self.label, lab.give)
        self.t_restore = TimingDir(lab.base_dir / "timing" / f"{self.label}-pitr", lab.give)
        wb = str(walbucket_executable())
        self.pgbr: PgBackRest | None = None
        self.pgbr_restore: PgBackRest | None = None
        if mode.tool == "walbucket":
            self.archive_command = shlex.join([str(b.wrapper), str(self.t_archive.path), wb, "push"]) + " %p"
            self.restore_command = shlex.join([str(b.wrapper), str(self.t_restore.path), wb, "get"]) + " %f %p"
        else:
            assert b.stunnel is not None
            stanza = f"bench-{self.tag}"
            self.pgbr = PgBackRest(lab, b.stunnel, BUCKET, stanza, self.primary, self.label)
            self.pgbr_restore = PgBackRest(lab, b.stunnel, BUCKET, stanza, self.restored, f"{self.label}-pitr")
            self.archive_command = self.pgbr.archive_command([str(b.wrapper), str(self.t_archive.path)])
            self.restore_command = self.pgbr_restore.restore_command([str(b.wrapper), str(self.t_restore.path)])

    def run(self) -> dict[str, Any]:
        b, primary = self.b, self.primary
        b.say(f"{self.mode.title} [{self.tag}]: primary, archive_command = '{self.archive_command}'")
        primary.init()
        primary.configure(archive_mode=True, archive_command=self.archive_command)
        if self.load == "oltp":
            primary.configure(**OLTP_GUCS)
        primary.start()
        if self.pgbr is not None:
            self.pgbr.run("stanza-create")
            self.pgbr.run("check")
        primary.wait_archived(primary.switch_wal(), timeout=120)
        if self.load == "oltp":
            b.say(f"{self.mode.title} [{self.tag}]: pgbench -i -s {b.args.oltp_scale} (not measured)")
            primary.pgbench_init(b.args.oltp_scale)
            primary.psql("CHECKPOINT")
            primary.wait_archived(primary.switch_wal(), timeout=b.args.timeout)
        b.say(f"{self.mode.title} [{self.tag}]: base backup (pg_basebackup -X none)")
        self.restored.backup_from(primary, wal_method="none")
        result: dict[str, Any] = {"mode": self.mode.name, "title": self.mode.title}
        result["live"] = self.live()
        result["drain"] = self.drain()
        primary.stop()
        stop_worker(b, worker_pid(b, primary.data_dir))
        result["pitr"] = self.pitr()
        self.restored.stop()
        stop_worker(b, worker_pid(b, self.restored.data_dir))
        b.reaper.wait_gone("pgbackrest", 30)
        result["stored"] = self.stored()
        return result

    def stored(self) -> dict[str, Any]:
        """The sizes in the bucket of the segments the two loads wrote (live and drain, not the set-up before them):
        how well this load's WAL compressed with this tool."""
        prefix = f"{self.prefix}/wal/" if self.pgbr is None else f"pgbackrest/archive/bench-{self.tag}/"
        pages = self.b.moto.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)  # type: ignore[attr-defined]
        sizes = [
            o["Size"]
            for page in pages
            for o in page.get("Contents", [])
            if (m := _SEGMENT_KEY_RE.search(o["Key"])) and m["name"] >= self.first_load_segment
        ]
        stored = sum(sizes)
        return {
            "segments": len(sizes),
            "stored_mib": round(stored / (1 << 20), 1),
            "ratio": round(len(sizes) * SEG / stored, 1) if stored else None,
        }

    def _load(self) -> tuple[float, str, int]:
        """The load, as fast as it goes; return its duration, the last segment and the WAL bytes written."""
        primary, args = self.primary, self.b.args
        lsn0 = primary.current_lsn()
        if not self.first_load_segment:
            self.first_load_segment = primary.scalar(f"SELECT pg_walfile_name('{lsn0}')")
        started = time.monotonic()
        if self.load == "oltp":
            primary.pgbench(transactions=args.oltp_transactions, clients=4)
        else:
            primary.pgbench_init(args.scale)
        duration = time.monotonic() - started
        rows = primary.psql(
            f"SELECT pg_create_restore_point('{TARGET_NAME}');"
            f"SELECT pg_walfile_name(l), pg_wal_lsn_diff(l, '{lsn0}') FROM pg_switch_wal() l"
        )
        return duration, rows[-1][0], int(float(rows[-1][1]))

    def live(self) -> dict[str, Any]:
        b, primary = self.b, self.primary
        status = primary.wal_dir / "archive_status"
        _wait_caught_up(primary, 120)
        archived0 = primary.archiver().archived_count
        meter = Meter(b, self.t_archive, primary.data_dir, f"{self.label}.live")
        b.say(f"{self.mode.title} [{self.tag}]: live load with archiving on")
        meter.start()
        with Backlog(status) as backlog:
            duration, last, wal_bytes = self._load()
            load_end = time.monotonic()
            caught_up = _wait_caught_up(primary, b.args.timeout)
            done = time.monotonic()
        stats = primary.archiver()
        segments = stats.archived_count - archived0
        lag = done - load_end if caught_up else None
        b.say(
            f"{self.mode.title} [{self.tag}]: {wal_bytes / (1 << 20):.0f} MiB of WAL in {duration:.1f} s; last segment "
            f"archived {lag if lag is None else round(lag, 2)} s after the load's end"
        )
        return {
            "wal_mib": round(wal_bytes / (1 << 20), 1),
            "load_s": round(duration, 2),
            "wal_rate_mib_s": round(wal_bytes / (1 << 20) / duration, 1),
            "segments_archived": segments,
            "failed": stats.failed_count,
            "last_segment": last,
            "lag_s": None if lag is None else round(lag, 3),
            "archive_rate_seg_s": round(segments / (done - meter.t0), 2),
            "max_backlog": max(backlog.samples),
            "backlog": backlog.samples,
            "cpu": meter.stop(segments),
        }

    def drain(self) -> dict[str, Any]:
        b, primary = self.b, self.primary
        status = primary.wal_dir / "archive_status"
        primary.configure(archive_command="")
        _hup(primary)
        time.sleep(1)
        b.say(f"{self.mode.title} [{self.tag}]: archiving paused; the same load again to build a backlog")
        duration, last, wal_bytes = self._load()
        poll((status / f"{last}.ready").exists, 30)
        backlog = ready_count(status)
        # a cold start, as after an outage or a pause: walbucket's worker stopped (pgBackRest's async process has
        # already exited once its queue was empty), so the drain includes starting it, its connections and probes
        stop_worker(b, worker_pid(b, primary.data_dir))
        primary.configure(archive_command=self.archive_command)
        meter = Meter(b, self.t_archive, primary.data_dir, f"{self.label}.drain")
        meter.start()
        with Backlog(status) as series:
            started = time.monotonic()
            _hup(primary)
            moved = poll(lambda: ready_count(status) < backlog, b.args.timeout, 0.01)
            first = time.monotonic() - started if moved else None
            caught_up = _wait_caught_up(primary, b.args.timeout)
            elapsed = time.monotonic() - started
        rate = backlog / elapsed if caught_up else None
        b.say(
            f"{self.mode.title} [{self.tag}]: drained {backlog} segments in {elapsed:.1f} s "
            f"({rate if rate is None else round(rate, 1)} segments/s), the first after "
            f"{first if first is None else round(first, 2)} s"
        )
        return {
            "wal_mib": round(wal_bytes / (1 << 20), 1),
            "load_s": round(duration, 2),
            "segments": backlog,
            "first_archived_s": None if first is None else round(first, 3),
            "drain_s": round(elapsed, 3),
            "rate_seg_s": None if rate is None else round(rate, 2),
            "failed": primary.archiver().failed_count,
            "backlog": series.samples,
            "cpu": meter.stop(backlog),
        }

    def pitr(self) -> dict[str, Any]:
        b, restored = self.b, self.restored
        restored.configure(archive_mode=False)  # the copy must not archive into the primary's archive
        restored.setup_recovery(
            self.restore_command, recovery_target_name=TARGET_NAME, recovery_target_action="promote"
        )
        meter = Meter(b, self.t_restore, restored.data_dir, f"{self.label}.pitr")
        b.say(
            f"{self.mode.title} [{self.tag}]: point-in-time recovery to '{TARGET_NAME}', "
            f"restore_command = '{self.restore_command}'"
        )
        meter.start()
        started = time.monotonic()
        restored.start(wait=False)
        finished = poll(lambda: _recovery_state(restored) is not None, b.args.timeout, 0.05)
        elapsed = time.monotonic() - started
        state = _recovery_state(restored) if finished else "timeout"
        segments = len(set(_RESTORED_RE.findall(restored.log_text())))
        rate = segments / elapsed if state == "ready" else None
        b.say(
            f"{self.mode.title} [{self.tag}]: recovery {state}: {segments} segments restored and replayed in "
            f"{elapsed:.1f} s"
        )
        return {
            "state": state,
            "segments": segments,
            "recovery_s": round(elapsed, 3),
            "rate_seg_s": None if rate is None else round(rate, 2),
            "cpu": meter.stop(segments),
        }


def _recovery_state(cluster: PgCluster) -> str | None:
    text = cluster.log_text()
    if "database system is ready to accept connections" in text:
        return "ready"
    if "FATAL:" in text or "PANIC:" in text:
        return "failed"
    return None


# -- the run -------------------------------------------------------------------------------------------------------


def _version(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    return (proc.stdout + proc.stderr).strip().splitlines()[0] if (proc.stdout + proc.stderr).strip() else "?"


def _machine_cpu() -> tuple[float, float, float, float]:
    """(busy, steal, this benchmark's own) CPU seconds so far, and the time: to tell how busy other tenants were.

    This benchmark's own CPU is its rusage and that of every child it waited for, which at the end is every process
    it started (orphans included: the reaper waits for them).
    """
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    own = sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK, own, time.monotonic()


def _cpu_share(before: tuple[float, ...], after: tuple[float, ...]) -> dict[str, float]:
    elapsed = after[3] - before[3]
    busy, steal, own = (after[i] - before[i] for i in range(3))
    cores = os.cpu_count() or 1
    return {
        "elapsed_s": round(elapsed, 1),
        "machine_busy_core_s": round(busy, 1),
        "benchmark_core_s": round(own, 1),
        "other_processes_core_s": round(max(busy - own, 0.0), 1),
        "other_processes_share_of_machine": round(max(busy - own, 0.0) / (elapsed * cores), 3),
        "steal_core_s": round(steal, 1),
    }


def _walbucket_codec() -> str:
    from walbucket.core.settings import Settings

    defaults = Settings(bucket="walbucket-bench")
    return f"{defaults.compression} level {defaults.level} (its default)"


def _stunnel_version() -> str:
    if not shutil.which("stunnel"):
        return "stunnel not installed"
    proc = subprocess.run(["stunnel", "-version"], capture_output=True, text=True, timeout=30, check=False)
    line = next((x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("stunnel ")), "stunnel ?")
    return line.split(" on ")[0]


def machine_details(lab: PgLab) -> dict[str, Any]:
    import platform
    from importlib import metadata

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")
    )
    versions = {}
    for dist in ("walbucket", "boto3", "botocore", "moto", "zstandard"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": lab.server_version(),
        **versions,
        "pgbackrest": _version(["pgbackrest", "version"]) if pgbackrest_path() else "not installed",
        "stunnel": _stunnel_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=85, help="pgbench -i scale, init load (85: ~1.03 GiB of WAL)")
    parser.add_argument("--loads", default="init,oltp", help="comma-separated subset of init, oltp")
    parser.add_argument("--transport", default="tls", help="tls, http or tls,http: how walbucket reaches S3")
    parser.add_argument("--oltp-scale", type=int, default=30, help="pgbench scale of the oltp table (30: ~450 MB)")
    parser.add_argument("--oltp-transactions", type=int, default=OLTP_TRANSACTIONS,
                        help="transactions per client (4 clients) of each oltp load")  # fmt: skip
    parser.add_argument("--runs", type=int, default=7, help="runs per latency figure (the median is reported)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    parser.add_argument("--no-pgbackrest", action="store_true", help="leave pgBackRest out even when installed")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency runs")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for a drain or a recovery")
    parser.add_argument("--quick", action="store_true", help="try the harness: smaller loads, 3 runs")
    parser.add_argument("--out", type=Path, default=Path("bench-output"), help="where the JSON and table go")
    parser.add_argument("--keep", action="store_true", help="keep the lab directory (data dirs, logs)")
    args = parser.parse_args(argv)
    if args.quick:
        args.scale, args.runs, args.oltp_scale, args.oltp_transactions = 8, 3, 12, OLTP_TRANSACTIONS // 10
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {', '.join(sorted(unknown))}")
    args.loads = args.loads.split(",")
    args.transports = args.transport.split(",")
    if set(args.loads) - {"init", "oltp"} or set(args.transports) - {"tls", "http"}:
        parser.error("--loads takes init and/or oltp, --transport tls and/or http")
    return args


def _run_all(b: Bench, modes: list[Mode], results: dict[str, Any]) -> None:
    if not b.args.no_latency:
        results["latency"] = run_latency(b)
        results["codecs"] = results["latency"].pop("codecs", None)
    for load in b.args.loads:
        for transport in b.args.transports:
            run: dict[str, Any] = {"load": load, "transport": transport, "modes": {}}
            results["runs"].append(run)
            for mode in modes:
                if mode.tool == "pgbackrest" and transport != "tls":
                    continue  # pgBackRest speaks S3 only over TLS
                try:
                    run["modes"][mode.name] = ModeRun(b, mode, load, transport).run()
                except (BenchError, PgError, TimeoutError, subprocess.SubprocessError) as exc:
                    b.say(f"{mode.title} [{load}-{transport}]: FAILED: {exc}")
                    run["modes"][mode.name] = {"mode": mode.name, "title": mode.title, "error": str(exc)}
                finally:
                    for cluster in b.lab.clusters:
                        cluster.kill()


def main(argv: list[str]) -> int:
    args = _parse(argv)
    say = Progress()
    missing = [p for p in (walbucket_executable(), PGBIN / "postgres", PGBIN / "pgbench") if not p.exists()]
    if missing or not Path("/usr/bin/time").exists():
        print(f"bench: missing {', '.join(map(str, missing)) or '/usr/bin/time'} (make bench installs it)")
        return 1
    have_stunnel = shutil.which("stunnel") is not None
    if "tls" in args.transports and not have_stunnel:
        say("stunnel is not installed: walbucket over plain HTTP only, and no pgBackRest (make bench installs it)")
        args.transports = ["http"]
    have_pgbr = pgbackrest_path() is not None and have_stunnel and not args.no_pgbackrest
    modes = [MODES[m] for m in args.modes.split(",") if have_pgbr or MODES[m].tool != "pgbackrest"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "moto.log").unlink(missing_ok=True)  # its request log is counted per phase
    moto = MotoServer(log_path=args.out / "moto.log")
    lab = PgLab(env={**moto.env(BUCKET), "WALBUCKET_ASYNC_IDLE_EXIT": "3600"})
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "settings": {
            "scale": args.scale,
            "runs": args.runs,
            "modes": [m.name for m in modes],
            "loads": args.loads,
            "transports": args.transports,
            "oltp_scale": args.oltp_scale,
            "oltp_transactions": args.oltp_transactions,
            "pgbackrest": "installed" if have_pgbr else "not installed (or --no-pgbackrest)",
            "walbucket_codec": _walbucket_codec(),
        },
        "machine": machine_details(lab),
        "startup": startup_profile(
            str(walbucket_executable().with_name("python")), args.runs, str(walbucket_executable())
        ),
        "runs": [],
    }
    cpu0 = _machine_cpu()
    reaper = Reaper().start()
    stunnel: Stunnel | None = None
    failure = None
    try:
        moto.start()
        moto.client().create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
        ca_bundle = None
        if have_pgbr or "tls" in args.transports:
            stunnel = Stunnel(lab.base_dir / "stunnel", moto.port).start()
            ca_bundle = lab.give(Path(shutil.copy(stunnel.cert, lab.base_dir / "stunnel-ca.pem")))
        wrapper = TimingDir.install_wrapper(lab.base_dir / "bin" / "timed", lab.give)
        say(f"lab {lab.base_dir}; moto {moto.url}; stunnel {stunnel.port if stunnel else 'not used'}")
        _run_all(Bench(args, lab, moto, reaper, stunnel, wrapper, say, ca_bundle, have_pgbr), modes, results)
    except (BenchError, PgError, TimeoutError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        lab.stop_all()
        for kind in ("walbucket-worker", "pgbackrest"):
            for pid in reaper.alive(kind):
                stop_pid(pid)
        if stunnel is not None:
            stunnel.stop()
        moto.stop()
        reaper.stop()
        lab.keep = args.keep or failure is not None
        lab.cleanup()
    return _finish(args, results, failure, cpu0, say, lab.base_dir)


def _finish(
    args: argparse.Namespace,
    results: dict[str, Any],
    failure: str | None,
    cpu0: tuple[float, float, float, float],
    say: Progress,
    lab_dir: Path,
) -> int:
    """Add the closing figures and the targets; write the JSON and the table; print the table."""
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["machine"]["cpu_during_run"] = _cpu_share(cpu0, _machine_cpu())
    results["elapsed_s"] = round(time.monotonic() - say.started, 1)
    results["failure"] = failure
    results["targets"] = targets(results)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (args.out / "latest.txt").write_text(table)
    print(table, flush=True)
    if failure is not None:
        print(f"bench: the harness failed: {failure} (lab kept in {lab_dir})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
