"""Micro-measurements for the benchmark: what a fresh walbucket process costs before any work, and the codecs.

Both explain the macro figures: every archive_command and restore_command is a new process, so its start-up is
paid once per WAL segment; and compressing, hashing and decompressing a 16 MiB segment is the worker's own work.
"""

from __future__ import annotations

import hashlib
import io
import resource
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench_procs import median

__all__ = ["FAST_PATH_IMPORTS", "codec_profile", "startup_profile"]

CHUNK = 1 << 20
FAST_PATH_IMPORTS = "import walbucket.cli.entry, walbucket.core.errors, walbucket.spooler.client"
_SNIPPETS = {
    "python_startup": ["-c", "pass"],
    "minimal_client_floor": ["-I", "-S", "-c", "import os, socket, json"],
    "async_fast_path": ["-c", FAST_PATH_IMPORTS],
    "full_cli": ["-c", "import walbucket.cli.main"],
    "sync_path_boto3_client": [
        "-c",
        "import walbucket.cli.main, walbucket.store.factory, boto3\n"
        "boto3.session.Session().client('s3', region_name='us-east-1', endpoint_url='http://127.0.0.1:9')",
    ],
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def startup_profile(python: str, runs: int) -> dict[str, Any]:
    """Wall and CPU medians of a fresh interpreter doing nothing, importing walbucket's paths, making a client.

    Run before any orphan is reaped: RUSAGE_CHILDREN must count only these processes.
    """
    out: dict[str, Any] = {}
    for name, args in _SNIPPETS.items():
        walls, cpus = [], []
        for _ in range(runs):
            cpu0, started = _children_cpu(), time.perf_counter()
            proc = subprocess.run([python, *args], check=False, capture_output=True, text=True)
            walls.append(time.perf_counter() - started)
            cpus.append(_children_cpu() - cpu0)
            if proc.returncode != 0:  # the code changed under the benchmark: say so, measure the rest
                out[name] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
                break
        else:
            out[name] = {
                "wall_ms": round(1000 * (median(walls) or 0), 1),
                "cpu_ms": round(1000 * (median(cpus) or 0), 1),
            }
    out["importtime_top"] = _importtime(python, runs)
    return out


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
