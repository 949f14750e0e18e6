"""`make demo`: archive a real PostgreSQL 15 to a local S3 endpoint with walbucket, then restore it to a point in time.

Starts moto's S3 server on 127.0.0.1 and a throwaway PostgreSQL archiving into it (as the 'postgres' user when run as
root), takes a base backup without WAL, runs pgbench, sets a restore point, runs more load, restores the backup
from the archive to the restore point in a second data directory, and checks the restored data against what the
primary had at the target. Exits 0 when every check passes. Every server it started is stopped on the way out.

Run: .venv/bin/python tools/demo.py [--scale N] [--keep]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from lab_pg import PGBIN, PgCluster, PgError, PgLab, archive_command, restore_command, walbucket_executable
from lab_s3 import MotoServer

BUCKET = "walbucket-demo"
PREFIX = "demo/main"
RESTORE_POINT = "walbucket-demo-target"


class DemoFailed(Exception):
    pass


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed():5.1f}s] {message}", flush=True)


@dataclass(frozen=True)
class ArchiveSize:
    segments: int
    original: int
    stored: int


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _archive_size(moto: MotoServer) -> ArchiveSize:
    """Count the archived segments and add up their sizes before (object metadata) and after compression."""
    client = moto.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/wal/")  # type: ignore[attr-defined]
    segments = original = stored = 0
    for page in pages:
        for obj in page.get("Contents", []):
            head = client.head_object(Bucket=BUCKET, Key=obj["Key"])  # type: ignore[attr-defined]
            segments += 1
            original += int(head["Metadata"]["walbucket-size"])
            stored += int(obj["Size"])
    return ArchiveSize(segments, original, stored)


def _check_prerequisites() -> None:
    missing = [p for p in (walbucket_executable(), PGBIN / "postgres", PGBIN / "pgbench") if not p.exists()]
    if missing:
        raise DemoFailed(f"missing {', '.join(map(str, missing))}\nHINT: run scripts/bootstrap (make demo does)")


def _load_and_target(primary: PgCluster, scale: int, say: Progress) -> tuple[tuple[str, ...], str]:
    """Run load, set the restore point, run more load; return the pgbench state at the target and its LSN."""
    say(f"load: pgbench -i -s {scale} (about {scale * 100_000:,} accounts)")
    primary.pgbench_init(scale)
    say("load: pgbench, 4 clients x 250 transactions")
    primary.pgbench(transactions=250, clients=4)
    primary.psql("INSERT INTO marker (note) VALUES ('before the target')")
    state = primary.pgbench_state()
    lsn = primary.scalar(f"SELECT pg_create_restore_point('{RESTORE_POINT}')")
    say(f"restore point '{RESTORE_POINT}' at {lsn}; pgbench_accounts digest {state[1][:12]}...")
    say("load after the target: pgbench, 4 clients x 250 transactions, and a row that must not come back")
    primary.pgbench(transactions=250, clients=4)
    primary.psql("INSERT INTO marker (note) VALUES ('after the target')")
    if primary.pgbench_state() == state:
        raise DemoFailed("the load after the restore point did not change the data")
    return state, lsn


def _check_restored(restored: PgCluster, state_at_target: tuple[str, ...]) -> None:
    log = restored.log_text()
    if f'recovery stopping at restore point "{RESTORE_POINT}"' not in log:
        raise DemoFailed(f"recovery did not stop at the restore point; see {restored.log_path}")
    if restored.in_recovery():
        raise DemoFailed(f"the restored server was not promoted; see {restored.log_path}")
    markers = [row[0] for row in restored.psql("SELECT note FROM marker ORDER BY note")]
    if markers != ["before the target"]:
        raise DemoFailed(f"restored marker rows are {markers}, expected only 'before the target'")
    if restored.pgbench_state() != state_at_target:
        raise DemoFailed("the restored pgbench tables differ from the primary's at the restore point")


def run_demo(lab: PgLab, moto: MotoServer, scale: int, say: Progress) -> None:
    primary = lab.cluster("primary").init()
    primary.configure(archive_mode=True, archive_command=archive_command())
    primary.start()
    say(f"primary: {primary.data_dir} on 127.0.0.1:{primary.port}, archive_command = '{archive_command()}'")
    primary.psql("CREATE TABLE marker (note text PRIMARY KEY, at timestamptz DEFAULT now())")
    first = primary.wait_archived(primary.switch_wal())  # fail here, fast, rather than in a backup that waits
    say(f"archiving works: {first.last_archived_wal} is in the bucket")

    say("base backup: pg_basebackup -X none (the restore must take every WAL segment from the archive)")
    restored = lab.cluster("restored").backup_from(primary, wal_method="none")
    state_at_target, _lsn = _load_and_target(primary, scale, say)

    last = primary.switch_wal()
    stats = primary.wait_archived(last, timeout=120)
    say(f"archiver: {stats.archived_count} files archived, last {stats.last_archived_wal}, {stats.failed_count} failed")
    primary.stop()

    say(f"restore: {restored.data_dir} to '{RESTORE_POINT}', restore_command = '{restore_command()}'")
    restored.configure(archive_mode=False)  # the copy must not write into the primary's archive
    restored.setup_recovery(restore_command(), recovery_target_name=RESTORE_POINT, recovery_target_action="promote")
    restored.start(timeout=120)
    restored.wait_for_log(r"database system is ready to accept connections", timeout=120)
    fetched = restored.log_text().count(": restored 16.0 MiB from ")
    say(f"restore: {fetched} segments fetched with walbucket get; promoted on timeline {restored.timeline()}")
    _check_restored(restored, state_at_target)
    say("check: marker row before the target present, row after it absent, pgbench tables equal at the target")

    size = _archive_size(moto)
    print(
        "\nwalbucket demo passed\n"
        f"  segments archived    {size.segments}\n"
        f"  WAL size             {_mib(size.original)} original, {_mib(size.stored)} stored "
        f"({size.stored / max(size.original, 1):.1%})\n"
        f"  recovery target      restore point '{RESTORE_POINT}' reached, promoted\n"
        f"  check                passed: restored data equals the primary's at the target\n"
        f"  time                 {say.elapsed():.1f} s",
        flush=True,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (data dirs, logs) on success")
    args = parser.parse_args(argv)
    say = Progress()
    lab: PgLab | None = None
    failure: str | None = "did not finish"
    try:
        _check_prerequisites()
        lab = PgLab()
        say(f"{lab.server_version()}; walbucket at {walbucket_executable()}; working in {lab.base_dir}")
        with MotoServer(log_path=lab.base_dir / "moto.log") as moto:
            moto.client().create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
            say(f"S3: moto at {moto.url}, bucket '{BUCKET}', prefix '{PREFIX}'")
            lab.env.update(moto.env(BUCKET, PREFIX))
            try:
                run_demo(lab, moto, args.scale, say)
                failure = None
            finally:
                lab.stop_all()
    except (DemoFailed, PgError, TimeoutError, RuntimeError, OSError) as exc:
        failure = str(exc)
    except KeyboardInterrupt:
        failure = "interrupted"
    finally:
        if lab is not None:
            lab.keep = args.keep or failure is not None
            lab.cleanup()
            print(f"{'kept' if lab.keep else 'removed'} {lab.base_dir} (data directories, server and moto logs)")
    if failure is not None:
        print(f"\nwalbucket demo FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
