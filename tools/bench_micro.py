"""Micro-measurements for the benchmark: what a fresh walbucket process costs before any work, and the codecs.

Both explain the macro figures: every archive_command and restore_command is a new process, so its start-up is
paid once per WAL segment; and compressing, hashing and decompressing a 16 MiB segment is the worker's own work.

The start-up figures are of two kinds: ``python -c 'import ...'`` (what the modules cost), and the installed console
script ``$VENV/bin/walbucket`` exec'd by its path as PostgreSQL's archive_command and restore_command run it, answering
``push`` and ``get`` from a spool prepared for it (:class:`SpooledCluster`): the interpreter, site, the script's own
imports and the fast path, with no worker and no S3. Run alone: ``.venv/bin/python tools/bench_micro.py [--runs 7]``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench_procs import median

__all__ = [
    "FAST_PATH_IMPORTS",
    "UNWANTED_ON_FAST_PATH",
    "SpooledCluster",
    "codec_profile",
    "imported_modules",
    "startup_profile",
]

CHUNK = 1 << 20
FAST_PATH_IMPORTS = "import walbucket.cli.entry, walbucket.core.errors, walbucket.spooler.client"
# Modules the fast path must answer without: re (about 9 ms: a console-script wrapper of pip before 25.2 imports it;
# json imports it), argparse and tomllib (the full command line), boto3 and botocore (the synchronous path).
UNWANTED_ON_FAST_PATH = ("re", "json", "argparse", "tomllib", "boto3", "botocore")
_SNIPPETS = {
    "python_startup": ["-c", "pass"],
    "minimal_client_floor": ["-I", "-S", "-c", "import os, socket, json"],
    "async_fast_path": ["-c", FAST_PATH_IMPORTS],
    "full_cli": ["-c", "import walbucket.cli.main"],
    "sync_path_s3_client": [
        "-c",
        "import walbucket.cli.main, walbucket.store.factory, botocore.session\n"
        "botocore.session.Session().create_client('s3', region_name='us-east-1', endpoint_url='http://127.0.0.1:9')",
    ],
}


class SpooledCluster:
    """A fake data directory whose spool answers the console script's fast path: ``push pg_wal/NAME`` from an
    acknowledgement, ``get NAME pg_wal/RECOVERYXLOG`` from a prefetched file. Call :meth:`arm` before each command.

    No worker runs and no S3 is reachable: should the fast path decline, the full command fails (the endpoint is a
    closed port) and a worker it starts exits after a second of idling.
    """

    NAME = "000000010000000000000001"
    PUSH = ("push", f"pg_wal/{NAME}")
    GET = ("get", NAME, "pg_wal/RECOVERYXLOG")

    def __init__(self, base: Path) -> None:
        from walbucket.core.fingerprint import settings_fingerprint
        from walbucket.spooler import files

        self.data_dir = base / "pgdata"
        (self.data_dir / "pg_wal").mkdir(parents=True)
        self.wal = self.data_dir / "pg_wal" / self.NAME
        self.wal.write_bytes(b"WAL" * 1000)  # the fast path only looks at the file's identity (stat)
        self.restored = self.data_dir / "pg_wal" / "RECOVERYXLOG"
        spool_dir = base / "spool"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(base),
            "WALBUCKET_ASYNC": "on",
            "WALBUCKET_SPOOL_DIR": str(spool_dir),
            "WALBUCKET_STATE_DIR": str(base / "state"),
            "WALBUCKET_BUCKET": "walbucket-startup",
            "WALBUCKET_ENDPOINT_URL": "http://127.0.0.1:9",
            "WALBUCKET_RETRY_BUDGET": "1",
            "WALBUCKET_ASYNC_WAIT": "2",
            "WALBUCKET_ASYNC_IDLE_EXIT": "1",
            "AWS_ACCESS_KEY_ID": "startup",
            "AWS_SECRET_ACCESS_KEY": "startup",
        }
        self.fingerprint = settings_fingerprint(self.env, None, None)
        self.root = files.cluster_dir(str(spool_dir), str(self.data_dir))
        for directory in (spool_dir, Path(self.root), Path(self.root, files.ARCHIVE_DIR)):
            directory.mkdir(mode=0o700)
        restore = Path(files.prefetched_path(self.root, self.fingerprint, self.NAME)).parent
        for directory in (restore.parent, restore):
            directory.mkdir(mode=0o700)

    def arm(self, argv: Sequence[str]) -> None:
        """Put in the spool what answers ``argv`` (PUSH or GET), as the worker would have."""
        from walbucket.spooler import files

        if argv[0] == "push":
            ack = files.encode_ack(files.file_stamp(str(self.wal)), "archived", self.fingerprint)
            Path(files.ack_path(self.root, self.NAME)).write_bytes(ack)
        else:
            self.restored.unlink(missing_ok=True)
            Path(files.prefetched_path(self.root, self.fingerprint, self.NAME)).write_bytes(self.wal.read_bytes())

    def run(
        self, script: Path, argv: Sequence[str], extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Exec ``script`` by its path in the data directory, as PostgreSQL runs archive_command (without sh)."""
        return subprocess.run(
            [str(script), *argv], cwd=self.data_dir, env={**self.env, **(extra_env or {})}, capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip


def imported_modules(importtime_stderr: str) -> list[str]:
    """The modules a ``-X importtime`` (or PYTHONPROFILEIMPORTTIME=1) run imported, in the order they finished."""
    modules = []
    for line in importtime_stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[0].strip().isdigit():
            modules.append(parts[2].strip())
    return modules


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def startup_profile(python: str, runs: int, script: str | None = None) -> dict[str, Any]:
    """Wall and CPU medians of a fresh interpreter doing nothing, importing walbucket's paths, making a client; and of
    the installed console script (``script``, by default the ``walbucket`` next to ``python``) answering from a spool.

    Run before any orphan is reaped: RUSAGE_CHILDREN must count only these processes.
    """
    out: dict[str, Any] = {}
    for name, args in _SNIPPETS.items():
        out[name] = _timed(
            lambda args=args: subprocess.run([python, *args], check=False, capture_output=True, text=True), runs
        )
    out.update(script_profile(Path(script) if script else Path(python).with_name("walbucket"), runs))
    out["importtime_top"] = _importtime(python, runs)
    return out


def script_profile(script: Path, runs: int) -> dict[str, Any]:
    """The console script as PostgreSQL runs it, answering ``push`` and ``get`` on the fast path (SpooledCluster);
    and the modules one such ``push`` imports, named if any of UNWANTED_ON_FAST_PATH is among them."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="walbucket-startup-") as tmp:
        box = SpooledCluster(Path(tmp))
        for name, argv, answer in (
            ("script_push", box.PUSH, "(stored ahead by the async worker)"),
            ("script_get", box.GET, "from the prefetch spool"),
        ):
            out[name] = _timed(
                lambda argv=argv: box.run(script, argv), runs, answer, prepare=lambda argv=argv: box.arm(argv)
            )
        if "error" not in out["script_push"]:
            box.arm(box.PUSH)
            proc = box.run(script, box.PUSH, {"PYTHONPROFILEIMPORTTIME": "1"})
            modules = imported_modules(proc.stderr)
            out["script_imports"] = {
                "exit": proc.returncode,
                "modules": len(modules),
                "unwanted": [m for m in UNWANTED_ON_FAST_PATH if m in modules],
            }
    return out


def _timed(
    one: Callable[[], subprocess.CompletedProcess[str]],
    runs: int,
    answer: str | None = None,
    prepare: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Wall and CPU medians of ``runs`` calls of ``one`` (each runs one process, after ``prepare``, untimed); the
    error instead when one fails or its stderr lacks ``answer``."""
    walls, cpus = [], []
    for _ in range(runs):
        if prepare is not None:
            prepare()
        cpu0, started = _children_cpu(), time.perf_counter()
        proc = one()
        walls.append(time.perf_counter() - started)
        cpus.append(_children_cpu() - cpu0)
        if proc.returncode != 0 or (answer is not None and answer not in proc.stderr):
            # the code changed under the benchmark: say so, measure the rest
            lines = proc.stderr.strip().splitlines()
            return {"error": lines[-1] if lines else f"exit {proc.returncode}"}
    return {"wall_ms": round(1000 * (median(walls) or 0), 1), "cpu_ms": round(1000 * (median(cpus) or 0), 1)}


def _importtime(python: str, runs: int) -> list[dict[str, Any]]:
    """The modules with the largest self import time (minimum over ``runs`` runs) on the async fast path."""
    best: dict[str, list[int]] = {}
    for _ in range(runs):
        proc = subprocess.run(
            [python, "-X", "importtime", "-c", FAST_PATH_IMPORTS], check=False, capture_output=True, text=True
        )  # fmt: skip
        for line in proc.stderr.splitlines():
            parts = line.removeprefix("import time:").split("|")
            if len(parts) != 3 or not parts[0].strip().isdigit():
                continue
            own, cumulative, module = int(parts[0]), int(parts[1]), parts[2].strip()
            if module in best:
                best[module] = [min(best[module][0], own), min(best[module][1], cumulative)]
            else:
                best[module] = [own, cumulative]
    total = sum(v[0] for v in best.values())
    ours = sum(v[0] for k, v in best.items() if k.startswith("walbucket"))
    top = sorted(best.items(), key=lambda kv: -kv[1][0])[:10]
    return [
        {"module": "(all modules)", "self_ms": round(total / 1000, 1), "count": len(best)},
        {"module": "(walbucket's own modules)", "self_ms": round(ours / 1000, 1)},
        *({"module": k, "self_ms": round(v[0] / 1000, 2), "cumulative_ms": round(v[1] / 1000, 2)} for k, v in top),
    ]


def codec_profile(segments: Sequence[Path]) -> dict[str, Any]:
    """CPU milliseconds per 16 MiB segment to hash, compress (zstd 1, 3; lz4) and decompress real WAL."""
    from walbucket.core.codecs import CODECS

    data = [p.read_bytes() for p in segments]
    out: dict[str, Any] = {"segments": len(data)}
    started = time.process_time()
    for d in data:
        hashlib.sha256(d).hexdigest()
    out["sha256_ms"] = round(1000 * (time.process_time() - started) / len(data), 1)
    for codec, level in (("zstd", 1), ("zstd", 3), ("lz4", 0)):
        c = CODECS[codec]
        started = time.process_time()
        packed = []
        for d in data:  # as push does: one streaming compressor per file, fed in 1 MiB chunks
            stream = c.compressor(level, len(d))
            packed.append(
                b"".join([*(stream.compress(d[i : i + CHUNK]) for i in range(0, len(d), CHUNK)), stream.flush()])
            )
        compress = time.process_time() - started
        started = time.process_time()
        buffer = memoryview(bytearray(CHUNK))
        for p in packed:  # as get does: a stream reader into one reused buffer
            reader = c.reader(io.BytesIO(p))
            while reader.readinto(buffer):
                pass
        decompress = time.process_time() - started
        out[f"{codec}-{level}"] = {
            "compress_ms": round(1000 * compress / len(data), 1),
            "decompress_ms": round(1000 * decompress / len(data), 1),
            "ratio": round(sum(len(d) for d in data) / max(sum(len(p) for p in packed), 1), 2),
        }
        if (codec, level) == ("zstd", 1):  # walbucket's default: what the proof of storage hashes
            out["proof_md5_ms"] = _proof_cost(packed)
    return out


def _proof_cost(bodies: Sequence[bytes]) -> float:
    """CPU ms per segment of the proof of storage where the store echoes no checksum: the MD5 of the uploaded body
    compared with the ETag (moto, Ceph RGW, MinIO; AWS S3 echoes the SHA-256 and costs nothing)."""
    started = time.process_time()
    for body in bodies:
        hashlib.md5(body, usedforsecurity=False).hexdigest()
    return round(1000 * (time.process_time() - started) / len(bodies), 2)


def main(argv: Sequence[str]) -> int:
    """The start-up part of ``make bench`` alone: print its lines of the report, or its figures as JSON."""
    from bench_report import startup_lines

    parser = argparse.ArgumentParser(description="walbucket's start-up figures (the micro part of make bench)")
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (the median is reported)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter of the -c figures")
    parser.add_argument("--script", help="the console script (default: the walbucket next to --python)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON, not as the report's lines")
    args = parser.parse_args(argv)
    results = startup_profile(args.python, args.runs, args.script)
    if args.json:
        import json

        print(json.dumps(results, indent=2))
    else:
        print("\n".join(startup_lines({"startup": results})).strip("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
