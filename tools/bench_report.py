"""The benchmark's table and its targets, from the results dictionary tools/bench.py builds (and writes as JSON)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["render", "startup_lines", "targets"]

_LATENCY_ROWS = [
    ("push, cold process (sync)", "wb.sync.push", "pgbr.sync.push"),
    ("get, cold process (sync)", "wb.sync.get", "pgbr.sync.get"),
    ("get of a missing file, cold (sync)", "wb.sync.missing", "pgbr.sync.missing"),
    ("async push, starting the worker/daemon", "wb.async.push_start", "pgbr.async.push_start"),
    ("async push through the running worker", "wb.async.push_worker", None),
    ("async push answered from the spool", "wb.async.push_spool", "pgbr.async.push_spool"),
    ("async get, starting the daemon", None, "pgbr.async.get_start"),
    ("async get through the running worker", "wb.async.get_worker", None),
    ("async get answered from the spool", "wb.async.get_spool", "pgbr.async.get_spool"),
    ("async get of a missing file", "wb.async.missing", "pgbr.async.missing"),
]
_MODE_ORDER = ["wb-sync", "wb-async", "pgbr-async"]


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _lat_cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return ""
    if "error" in entry:
        return "error"
    return f"{entry['median_ms']:.0f} ms [{entry['cpu_median_ms']:.0f} cpu, {entry['max_rss_mib']:.0f} MiB]"


def _combined_cpu(mode: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """Archive CPU per segment over the live and drain phases: (tool total, commands, worker or daemons) in ms."""
    phases = [_get(mode, p, "cpu") for p in ("live", "drain")]
    if any(p is None for p in phases):
        return None, None, None
    segments = sum(p["segments"] for p in phases) or 1
    commands = sum(p["command_cpu_s"] for p in phases)
    background = sum(p["worker_cpu_s"] + p["daemon_cpu_s"] for p in phases)
    return 1000 * (commands + background) / segments, 1000 * commands / segments, 1000 * background / segments


def _peak(mode: dict[str, Any], key: str) -> float | None:
    values = [_get(mode, p, "cpu", key) for p in ("live", "drain", "pitr")]
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _throughput_rows(modes: dict[str, Any]) -> list[tuple[str, Callable[[dict[str, Any]], Any]]]:
    def cpu(i: int) -> Callable[[dict[str, Any]], Any]:
        return lambda m: _fmt(_combined_cpu(m)[i])

    def moto(m: dict[str, Any]) -> str:
        phases = [_get(m, p, "cpu") for p in ("live", "drain")]
        if any(p is None for p in phases):
            return "-"
        return _fmt(1000 * sum(p["moto_cpu_s"] for p in phases) / (sum(p["segments"] for p in phases) or 1))

    return [
        (
            "live: WAL written, MiB in s",
            lambda m: f"{_fmt(_get(m, 'live', 'wal_mib'), 0)} in {_fmt(_get(m, 'live', 'load_s'))}",
        ),
        ("live: segments archived", lambda m: _fmt(_get(m, "live", "segments_archived"))),
        ("live: archive rate, segments/s", lambda m: _fmt(_get(m, "live", "archive_rate_seg_s"))),
        ("live: last segment archived after load end, s", lambda m: _fmt(_get(m, "live", "lag_s"), 2)),
        ("live: largest backlog, .ready files", lambda m: _fmt(_get(m, "live", "max_backlog"))),
        ("drain: backlog, segments", lambda m: _fmt(_get(m, "drain", "segments"))),
        ("drain: first segment archived after, s", lambda m: _fmt(_get(m, "drain", "first_archived_s"), 2)),
        ("drain: time, s", lambda m: _fmt(_get(m, "drain", "drain_s"), 2)),
        ("drain: rate, segments/s", lambda m: _fmt(_get(m, "drain", "rate_seg_s"))),
        ("PITR: segments restored and replayed", lambda m: _fmt(_get(m, "pitr", "segments"))),
        ("PITR: time to promotion, s", lambda m: _fmt(_get(m, "pitr", "recovery_s"))),
        ("PITR: rate, segments/s", lambda m: _fmt(_get(m, "pitr", "rate_seg_s"))),
        ("archive CPU per segment, ms", cpu(0)),
        ("  in the commands", cpu(1)),
        ("  in the worker / async daemons", cpu(2)),
        ("restore CPU per segment, ms", lambda m: _fmt(_get(m, "pitr", "cpu", "tool_cpu_per_segment_ms"))),
        ("moto CPU per archived segment, ms", moto),
        ("S3 requests per archived segment", lambda m: _requests(m, ("live", "drain"))),
        ("S3 requests per restored segment", lambda m: _requests(m, ("pitr",))),
        ("peak RSS of a command, MiB", lambda m: _fmt(_peak(m, "command_max_rss_mib"))),
        ("peak RSS of the worker, MiB", lambda m: _fmt(_peak(m, "worker_peak_rss_mib"))),
        ("peak RSS of an async daemon, MiB", lambda m: _fmt(_peak(m, "daemon_max_rss_mib"))),
        ("failed archive commands", lambda m: _fmt(_get(m, "live", "failed") or 0)),
        ("WAL compression: stored segments", lambda m: _fmt(_get(m, "stored", "segments"))),
        ("WAL compression: ratio, x", lambda m: _fmt(_get(m, "stored", "ratio"))),
    ]


def _requests(mode: dict[str, Any], phases: tuple[str, ...]) -> str:
    cpus = [_get(mode, p, "cpu") for p in phases]
    if any(c is None or "s3_requests" not in c for c in cpus):
        return "-"
    segments = sum(c["segments"] for c in cpus) or 1
    total = sum(sum(v for k, v in c["s3_requests"].items() if k != "404") for c in cpus)
    return f"{total / segments:.2f}"


def _series(samples: list[int]) -> str:
    """Compress runs: '0 0 0 5 5' -> '0x3 5x2'."""
    out: list[str] = []
    i = 0
    while i < len(samples):
        j = i
        while j < len(samples) and samples[j] == samples[i]:
            j += 1
        out.append(f"{samples[i]}x{j - i}" if j - i > 2 else " ".join([str(samples[i])] * (j - i)))
        i = j
    return " ".join(out)


def _machine(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    load_end = m.get("load_average_at_end", ["?"])
    return [
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}",
        f"         {m['postgresql']}; walbucket {m['walbucket']}, boto3 {m['boto3']}, botocore {m['botocore']}, "
        f"moto {m['moto']}, zstandard {m['zstandard']}",
        f"         {m['pgbackrest']}, {m['stunnel']}; load average (1 min) {m['load_average_at_start'][0]} at start, "
        f"{load_end[0]} at end",
        *(
            [
                f"         other tenants used {share['other_processes_core_s']} core-seconds during the run "
                f"({100 * share['other_processes_share_of_machine']:.0f}% of the machine; this benchmark "
                f"{share['benchmark_core_s']}), steal {share['steal_core_s']}"
            ]
            if (share := m.get("cpu_during_run"))
            else []
        ),
    ]


def startup_lines(results: dict[str, Any]) -> list[str]:
    """The start-up and codec lines of the report (tools/bench_micro.py's figures)."""
    lines = []
    st = results.get("startup") or {}
    if st:
        cells = [
            ("python -c pass", "python_startup"),
            ("minimal client (-I -S, os+socket+json)", "minimal_client_floor"),
            ("async fast path, imports only (python -c)", "async_fast_path"),
            ("bin/walbucket push, answered from the spool", "script_push"),
            ("bin/walbucket get, answered from the spool", "script_get"),
            ("full command line (walbucket.cli.main)", "full_cli"),
            ("sync path (+ botocore and an S3 client)", "sync_path_s3_client"),
        ]
        lines += ["", "Start-up of a fresh process (median wall ms / CPU ms)"]
        for label, k in cells:
            if k in st:
                cell = st[k].get("error") or f"{st[k]['wall_ms']:>8.0f} / {st[k]['cpu_ms']:.0f}"
                lines.append(f"  {label:48}{cell}")
        imports = st.get("script_imports")
        if imports:
            unwanted = ", ".join(imports["unwanted"]) or "none"
            lines.append(
                f"  bin/walbucket exec'd as archive_command runs it; its push imported {imports['modules']} modules, "
                f"of re, json, argparse, tomllib, boto3, botocore: {unwanted}"
            )
        top = st.get("importtime_top", [])
        if top:
            lines.append(
                "  import self-times (min of runs): "
                + ", ".join(f"{t['module']} {t['self_ms']}" for t in top[:8])
                + " ms"
            )
    codecs = results.get("codecs") or {}
    if codecs:
        parts = [f"sha256 {codecs['sha256_ms']}"]
        for k, v in codecs.items():
            if isinstance(v, dict):
                parts.append(f"{k} {v['compress_ms']} (x{v['ratio']}, decompress {v['decompress_ms']})")
        lines += ["", f"Codecs on real WAL, CPU ms per 16 MiB segment: {'; '.join(parts)}"]
        if "proof_md5_ms" in codecs:
            lines.append(
                f"Proof of storage, CPU ms per segment: {codecs['proof_md5_ms']} (MD5 of the zstd-1 body against the "
                "ETag, where the store echoes no SHA-256; 0 extra requests; included in the archive CPU figures)"
            )
    return lines


def _load_label(load: str, settings: dict[str, Any]) -> str:
    if load == "oltp":
        return (
            f"load oltp: pgbench -c 4 -t {settings.get('oltp_transactions', '?')} (TPC-B-like) on pgbench scale "
            f"{settings.get('oltp_scale', '?')}, shared_buffers 128MB, checkpoints each 30 s or 64 MB (page images)"
        )
    return f"load init: pgbench -i -s {settings['scale']}"


def _transport_label(transport: str) -> str:
    if transport == "http":
        return "transport http: walbucket to moto over plain HTTP (pgBackRest needs TLS: not run)"
    if transport == "mixed":
        return "walbucket to moto over plain HTTP, pgBackRest through stunnel's TLS (the harness before 2026-12-03)"
    return "transport tls: walbucket and pgBackRest through the same stunnel TLS endpoint in front of moto"


def _runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each (load, transport) run; results from before runs existed count as one init run on unequal terms."""
    if "runs" in results:
        return list(results["runs"])
    return [{"load": "init", "transport": "mixed", "modes": results.get("modes", {})}] if results.get("modes") else []


def render(results: dict[str, Any]) -> str:
    lines = [f"walbucket benchmark, {results['started']} (took {results.get('elapsed_s', '?')} s)"]
    lines += _machine(results)
    s = results["settings"]
    lines.append(
        f"walbucket {s.get('walbucket_codec', '?')}; pgBackRest compress-type=zst level 3, archive-async=y, "
        f"process-max=4; pgBackRest {s['pgbackrest']}; latency over {s.get('transports', ['http'])[0]}"
    )
    lines += startup_lines(results)
    latency = results.get("latency") or {}
    if latency:
        lines += ["", f"Latency: median wall time of {s['runs']} runs [median CPU ms, max RSS]", ""]
        lines.append(f"  {'':44}{'walbucket':34}{'pgBackRest'}")
        for label, wb, pgbr in _LATENCY_ROWS:
            lines.append(
                f"  {label:44}{_lat_cell(latency.get(wb) if wb else None):34}"
                f"{_lat_cell(latency.get(pgbr) if pgbr else None)}"
            )
    for run in _runs(results):
        modes = [run["modes"][name] for name in _MODE_ORDER if name in run["modes"]]
        if not modes:
            continue
        lines += ["", f"Throughput, CPU and memory (one run): {_load_label(run['load'], s)}",
                  f"  {_transport_label(run['transport'])}", ""]  # fmt: skip
        lines.append(f"  {'':48}" + "".join(f"{m['title']:>18}" for m in modes))
        for label, cell in _throughput_rows(run["modes"]):
            values = ["error" if "error" in m else cell(m) for m in modes]
            lines.append(f"  {label:48}" + "".join(f"{v:>18}" for v in values))
        lines += ["", "  Backlog of .ready files, sampled each second (NxK: N for K seconds)"]
        for m in modes:
            for phase in ("live", "drain"):
                samples = _get(m, phase, "backlog")
                if samples:
                    lines.append(f"    {m['title']:17} {phase:6} {_series(samples)}")
        errors = [f"  {m['title']}: {m['error']}" for m in modes if "error" in m]
        if errors:
            lines += ["", "Errors", *errors]
    lines += ["", "Targets (walbucket async; figures measured in this run)"]
    for t in results.get("targets", []):
        lines.append(f"  {t['status']:5} {t['target']}: {t['detail']}")
    if results.get("failure"):
        lines += ["", f"HARNESS FAILURE: {results['failure']}"]
    return "\n".join(lines) + "\n"


# -- targets -------------------------------------------------------------------------------------------------------


def _status(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def targets(results: dict[str, Any]) -> list[dict[str, str]]:
    latency = results.get("latency", {})
    out: list[dict[str, str]] = []

    def add(target: str, ok: bool | None, detail: str) -> None:
        out.append({"target": target, "status": _status(ok), "detail": detail})

    for run in _runs(results):
        out += _run_targets(run)
    for op, keys in (
        ("push", ("wb.async.push_worker", "wb.async.push_spool")),
        ("get", ("wb.async.get_worker", "wb.async.get_spool")),
    ):
        values = [_get(latency, k, "median_ms") for k in keys]
        ok = None if any(v is None for v in values) else max(values) <= 100
        add(
            f"one {op} through the worker / from the spool <= 100 ms",
            ok,
            f"{_fmt(values[0], 0)} ms through the worker, {_fmt(values[1], 0)} ms from the spool",
        )
    missing = _get(latency, "wb.async.missing", "median_ms")
    add(
        "not-available answer <= 30 ms with a worker running",
        None if missing is None else missing <= 30,
        f"{_fmt(missing, 0)} ms",
    )
    peaks = [
        _peak(m, k)
        for run in _runs(results)
        for name in ("wb-async", "wb-sync")
        if (m := run["modes"].get(name)) and "error" not in m
        for k in ("command_max_rss_mib", "worker_peak_rss_mib")
    ]
    peaks += [v.get("max_rss_mib") for k, v in latency.items() if k.startswith("wb.") and "max_rss_mib" in v]
    present = [p for p in peaks if p is not None]
    peak = max(present) if present else None
    add(
        "peak memory of any walbucket process <= 100 MiB",
        None if peak is None else peak <= 100,
        f"{_fmt(peak)} MiB (largest of every command and worker measured)",
    )
    return out


def _run_targets(run: dict[str, Any]) -> list[dict[str, str]]:
    """One run's targets, walbucket async against pgBackRest async where it ran (TLS), else absolute figures."""
    wb = run["modes"].get("wb-async", {})
    pgbr = run["modes"].get("pgbr-async", {})
    wb = {} if "error" in wb else wb
    pgbr = {} if "error" in pgbr else pgbr
    where = f" [{run['load']}, {run['transport']}]"
    out: list[dict[str, str]] = []

    def add(target: str, ok: bool | None, detail: str) -> None:
        out.append({"target": target + where, "status": _status(ok), "detail": detail})

    drain, pgbr_drain = _get(wb, "drain", "rate_seg_s"), _get(pgbr, "drain", "rate_seg_s")
    if pgbr_drain is not None:
        need = 1.5 * pgbr_drain
        add("backlog drain >= 1.5x pgBackRest async", None if drain is None else drain >= need,
            f"{_fmt(drain)} vs 1.5 x {pgbr_drain:.1f} = {need:.1f} segments/s")  # fmt: skip
    else:
        add("backlog drain >= 28 segments/s (no pgBackRest in this run)", None if drain is None else drain >= 28,
            f"{_fmt(drain)} segments/s")  # fmt: skip
    lag = _get(wb, "live", "lag_s")
    add("live load: last segment archived within 1 s of the load's end", None if lag is None else lag <= 1.0,
        f"{_fmt(lag, 2)} s")  # fmt: skip
    cpu = _combined_cpu(wb)[0] if wb else None
    pgbr_cpu = _combined_cpu(pgbr)[0] if pgbr else None
    if pgbr_cpu is not None:
        add("CPU per archived segment <= pgBackRest async's", None if cpu is None else cpu <= pgbr_cpu,
            f"{_fmt(cpu)} vs {_fmt(pgbr_cpu)} ms (live load and drain together)")  # fmt: skip
    else:
        add("CPU per archived segment <= 60 ms with zstd", None if cpu is None else cpu <= 60,
            f"{_fmt(cpu)} ms (live load and drain together)")  # fmt: skip
    pitr, pgbr_pitr = _get(wb, "pitr", "rate_seg_s"), _get(pgbr, "pitr", "rate_seg_s")
    pitr_cpu = _get(wb, "pitr", "cpu", "tool_cpu_per_segment_ms")
    pgbr_pitr_cpu = _get(pgbr, "pitr", "cpu", "tool_cpu_per_segment_ms")
    if pgbr_pitr is not None and pgbr_pitr_cpu is not None:
        ok = None if pitr is None or pitr_cpu is None else pitr >= pgbr_pitr and pitr_cpu <= pgbr_pitr_cpu
        detail = f"{_fmt(pitr)} vs {_fmt(pgbr_pitr)} segments/s; {_fmt(pitr_cpu)} vs {_fmt(pgbr_pitr_cpu)} ms CPU"
        add("PITR replay >= pgBackRest's rate at <= its CPU per restored segment", ok, detail)
    else:
        ok = None if pitr_cpu is None else pitr_cpu <= 50
        add("PITR replay with <= 50 ms walbucket CPU per segment (no pgBackRest in this run)", ok,
            f"{_fmt(pitr)} segments/s; {_fmt(pitr_cpu)} ms CPU per segment")  # fmt: skip
    return out
