"""Real PostgreSQL servers for tests, the demo and the benchmark: throwaway clusters in a temp dir, on 127.0.0.1.

PostgreSQL refuses to run as root. When this process is root, every PostgreSQL program (and any command a test
runs "as the server would") runs as the unprivileged ``postgres`` user, and the lab directory belongs to that user;
otherwise everything runs as the current user. Servers listen on a unix socket in the lab directory and on a free
TCP port of 127.0.0.1 (replication connects over TCP). Their environment is built from scratch: the walbucket
settings passed in, plus PATH, HOME, LC_ALL and TZ, because PostgreSQL hands it down to archive_command and
restore_command. Only servers this module started are ever stopped: with pg_ctl on their own data directories,
or by the PID in their own postmaster.pid.

Typical use::

    with PgLab(env=moto.env(bucket, "prefix")) as lab:
        primary = lab.cluster("primary").init()
        primary.configure(archive_mode=True, archive_command=archive_command())
        primary.start()
        ...
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from lab_s3 import free_port

__all__ = [
    "PGBIN",
    "SUPERUSER",
    "ArchiverStats",
    "PgCluster",
    "PgError",
    "PgLab",
    "archive_command",
    "restore_command",
    "wait_for",
    "walbucket_executable",
]

PGBIN = Path(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"))
SERVER_USER = "postgres"  # the unprivileged account servers run as when this process is root
SUPERUSER = "postgres"  # the bootstrap superuser initdb creates (-U), whoever runs the server
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; PostgreSQL appends "/.s.PGSQL.<port>"
_T = TypeVar("_T")


class PgError(RuntimeError):
    """A PostgreSQL program failed; the message names the command and ends with its output or the server log."""


def walbucket_executable() -> Path:
    """Return the walbucket console script installed next to this Python (the project's venv)."""
    return Path(os.path.normpath(os.path.abspath(sys.executable))).with_name("walbucket")


def archive_command(executable: Path | None = None, *options: str) -> str:
    return shlex.join([str(executable or walbucket_executable()), *options, "push"]) + " %p"


def restore_command(executable: Path | None = None, *options: str) -> str:
    return shlex.join([str(executable or walbucket_executable()), *options, "get"]) + " %f %p"


def wait_for(predicate: Callable[[], _T | None], timeout: float, what: str, interval: float = 0.2) -> _T:
    """Call ``predicate`` until it returns something truthy and return that; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True, slots=True)
class ArchiverStats:
    """One row of pg_stat_archiver."""

    archived_count: int
    last_archived_wal: str | None
    failed_count: int
    last_failed_wal: str | None


class PgLab:
    """A directory owned by the server user, the environment servers run with, and the clusters made in it.

    ``env`` (typically MotoServer.env(bucket, prefix)) is added to the servers' environment. The directory is a
    fresh one under the system temp dir unless ``base_dir`` names one; every directory above it must be
    traversable by the server user (pytest's tmp_path, under /tmp/pytest-of-root, is not).
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
        bin_dir: Path = PGBIN,
        keep: bool = False,
    ) -> None:
        self.bin_dir = bin_dir
        self.keep = keep
        self.user = SERVER_USER if os.geteuid() == 0 else None
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix="walbucket-lab-"))
        self.make_dir(self.base_dir)
        self.home = self.make_dir(self.base_dir / "home")
        self.env: dict[str, str] = {
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "WALBUCKET_STATE_DIR": str(self.home / "walbucket-state"),
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            **(env or {}),
        }
        self.clusters: list[PgCluster] = []
        probe = self.run(["test", "-w", self.base_dir], check=False)
        if probe.returncode != 0:
            raise PgError(f"user '{self.user}' cannot write to the lab directory '{self.base_dir}'")

    # -- files and processes as the server user --------------------------------------------------------------

    def _ids(self) -> tuple[int, int] | None:
        if self.user is None:
            return None
        entry = pwd.getpwnam(self.user)
        return entry.pw_uid, entry.pw_gid

    def give(self, path: Path) -> Path:
        """Hand ``path`` to the server user (a no-op when this process is not root)."""
        ids = self._ids()
        if ids is not None:
            os.chown(path, *ids)
        return path

    def make_dir(self, path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return self.give(path)

    def write_file(self, path: Path, text: str, append: bool = False) -> Path:
        """Write (or append to) a file in a data directory, leaving it owned by the server user."""
        with path.open("a" if append else "w", encoding="utf-8") as f:
            f.write(text)
        return self.give(path)

    def run(
        self,
        args: Sequence[str | Path],
        *,
        check: bool = True,
        timeout: float = 300,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command as the server user with the lab environment; raise PgError on failure when ``check``."""
        argv = [str(a) for a in args]
        ids = self._ids()
        proc = subprocess.run(  # noqa: PLW1510 - checked below, with the output in the message
            argv,
            env={**self.env, **(env or {})},
            cwd=cwd or self.base_dir,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=None if ids is None else ids[0],
            group=None if ids is None else ids[1],
            extra_groups=None if ids is None else [],  # not root's groups
        )
        if check and proc.returncode != 0:
            output = (proc.stdout + proc.stderr).strip()
            raise PgError(f"{shlex.join(argv)} exited with {proc.returncode}:\n{output}")
        return proc

    def pg(
        self,
        program: str,
        *args: str | Path,
        check: bool = True,
        timeout: float = 300,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one of PostgreSQL's programs (initdb, pg_ctl, psql, ...) from ``bin_dir``."""
        return self.run([self.bin_dir / program, *args], check=check, timeout=timeout, env=env, input=input)

    def server_version(self) -> str:
        return self.pg("postgres", "--version").stdout.strip()

    # -- clusters ----------------------------------------------------------------------------------------------

    def cluster(self, name: str, port: int | None = None, env: Mapping[str, str] | None = None) -> PgCluster:
        """Name a new cluster in this lab (nothing runs until init() or backup_from()); ``env`` adds to the lab's."""
        node = PgCluster(self, name, port, env)
        self.clusters.append(node)
        return node

    def stop_all(self) -> None:
        """Stop every server of this lab that still runs, immediately (tests end; nothing to preserve)."""
        for node in self.clusters:
            node.kill()

    def cleanup(self) -> None:
        self.stop_all()
        if not self.keep:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PgLab:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


def _guc(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


_PGBENCH_STATE_SQL = """
SELECT (SELECT count(*) FROM pgbench_accounts),
       (SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts),
       (SELECT md5(string_agg(bid || ':' || bbalance, ',' ORDER BY bid)) FROM pgbench_branches),
       (SELECT md5(string_agg(tid || ':' || tbalance, ',' ORDER BY tid)) FROM pgbench_tellers),
       (SELECT count(*) FROM pgbench_history),
       (SELECT coalesce(sum(delta), 0) FROM pgbench_history)
"""


class PgCluster:
    """One PostgreSQL data directory of a lab, its server, and what tests ask of it.

    Files: ``<lab>/<name>`` (data), ``<lab>/<name>.log`` (server log, which also holds the stderr of
    archive_command and restore_command). The server listens on a socket in the lab directory and on
    127.0.0.1:``port``.
    """

    def __init__(self, lab: PgLab, name: str, port: int | None = None, env: Mapping[str, str] | None = None) -> None:
        self.lab = lab
        self.name = name
        self.port = port or free_port()
        self.data_dir = lab.base_dir / name
        self.log_path = lab.base_dir / f"{name}.log"
        self.socket_dir = lab.base_dir
        self.env = dict(env or {})
        if len(str(self.socket_dir)) > _SOCKET_PATH_MAX - 20:
            raise PgError(f"lab directory '{self.socket_dir}' is too long for a unix socket path")

    def __repr__(self) -> str:
        return f"PgCluster({self.name!r}, port={self.port}, data_dir='{self.data_dir}')"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "pg_wal"

    def _pg(
        self, program: str, *args: str | Path, check: bool = True, timeout: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.lab.pg(program, *args, check=check, timeout=timeout, env=self.env, input=input)

    # -- creating a data directory -----------------------------------------------------------------------------

    def init(
        self, *, data_checksums: bool = True, wal_segsize_mb: int | None = None, args: Iterable[str] = ()
    ) -> PgCluster:
        """Run initdb (trust auth, superuser 'postgres', C locale) and write the lab's base configuration."""
        options = ["-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        if data_checksums:
            options.append("--data-checksums")
        if wal_segsize_mb is not None:
            options.append(f"--wal-segsize={wal_segsize_mb}")
        self._pg("initdb", *options, *args)
        self._base_config()
        return self

    def backup_from(
        self,
        source: PgCluster,
        *,
        wal_method: str = "none",
        write_recovery_conf: bool = False,
        args: Iterable[str] = (),
    ) -> PgCluster:
        """Take a base backup of ``source`` (pg_basebackup, fast checkpoint) into this cluster's data directory.

        ``wal_method='none'`` leaves the WAL out: the server waits until the backup's last segment is archived
        before pg_basebackup returns, and a restore must fetch every segment from the archive. The copied
        postgresql.conf is the source's; the lab's settings for this cluster (port, socket) are appended.
        It connects over TCP, so ``write_recovery_conf`` (-R: standby.signal and primary_conninfo) makes a
        standby that streams from ``source`` on 127.0.0.1.
        """
        self._pg(
            "pg_basebackup", "-h", "127.0.0.1", "-p", str(source.port), "-U", SUPERUSER,
            "-D", self.data_dir, "-X", wal_method, "-c", "fast", "--no-sync",
            *(["-R"] if write_recovery_conf else []), *args,
        )  # fmt: skip
        self._base_config()
        return self

    def _base_config(self) -> None:
        self.configure(
            port=self.port,
            listen_addresses="127.0.0.1",
            unix_socket_directories=str(self.socket_dir),
            fsync=False,  # throwaway clusters; WAL content and archiving are the same without it
            log_line_prefix="%m [%p] %b ",
            cluster_name=self.name,
        )

    def configure(self, **gucs: object) -> None:
        """Append settings to postgresql.conf (a later line wins); True/False become on/off. Restart to apply."""
        lines = "".join(f"{key} = {_guc(value)}\n" for key, value in gucs.items())
        self.lab.write_file(self.data_dir / "postgresql.conf", lines, append=True)

    def setup_recovery(self, restore_command: str, *, standby: bool = False, **targets: object) -> None:
        """Make the next start a recovery: recovery.signal (or standby.signal), restore_command and any
        recovery_target_* / primary_conninfo settings given."""
        signal_file = "standby.signal" if standby else "recovery.signal"
        self.lab.write_file(self.data_dir / signal_file, "")
        self.configure(restore_command=restore_command, **targets)

    # -- the server --------------------------------------------------------------------------------------------

    def start(self, *, wait: bool = True, timeout: float = 60) -> PgCluster:
        """Start the server; with ``wait``, until it accepts connections (a hot standby: once consistent)."""
        args = ["-D", str(self.data_dir), "-l", str(self.log_path), "-t", str(int(timeout))]
        try:
            self._pg("pg_ctl", *args, "-w" if wait else "-W", "start", timeout=timeout + 30)
        except PgError as exc:
            raise PgError(f"{exc}\n--- {self.log_path} ---\n{self.log_tail()}") from None
        return self

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """Stop the server if it runs (mode: smart, fast or immediate)."""
        if self.is_running():
            self._pg("pg_ctl", "-D", self.data_dir, "-m", mode, "-w", "-t", str(int(timeout)), "stop")

    def restart(self, mode: str = "fast") -> PgCluster:
        self.stop(mode)
        return self.start()

    def promote(self, wait: bool = True) -> None:
        self._pg("pg_ctl", "-D", self.data_dir, "-w" if wait else "-W", "promote")

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        return self._pg("pg_ctl", "-D", self.data_dir, "status", check=False).returncode == 0

    def kill(self) -> None:
        """Stop the server immediately if it runs; if pg_ctl cannot, SIGKILL the postmaster of this data dir."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        try:
            self.stop("immediate", timeout=30)
        except (PgError, subprocess.TimeoutExpired):
            pid = self.postmaster_pid()
            if pid is not None:
                os.kill(pid, signal.SIGKILL)

    def postmaster_pid(self) -> int | None:
        """The PID in postmaster.pid, only when that file names this data directory."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        if len(lines) < 2 or Path(lines[1]) != self.data_dir:
            return None
        return int(lines[0])

    # -- SQL and load ------------------------------------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres", **extra: str) -> str:
        """A TCP connection string for this server (what primary_conninfo of a standby needs)."""
        parts = {"host": "127.0.0.1", "port": str(self.port), "user": SUPERUSER, "dbname": dbname, **extra}
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def _connect_args(self, dbname: str) -> list[str]:
        return ["-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER, "-d", dbname]

    def psql(self, sql: str, dbname: str = "postgres") -> list[tuple[str, ...]]:
        """Run SQL (one or more statements); return the rows of every result as tuples of text (NULL -> '')."""
        result = self._pg(
            "psql", *self._connect_args(dbname), "-X", "-q", "-A", "-t", "-F", "\x1f",
            "-v", "ON_ERROR_STOP=1", "-f", "-", input=sql,
        )  # fmt: skip
        return [tuple(line.split("\x1f")) for line in result.stdout.splitlines() if line]

    def scalar(self, sql: str, dbname: str = "postgres") -> str:
        """Return the single value that ``sql`` selects."""
        rows = self.psql(sql, dbname)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise PgError(f"expected one value from {sql!r}, got {rows!r}")
        return rows[0][0]

    def pgbench_init(self, scale: int, dbname: str = "postgres", args: Iterable[str] = ()) -> None:
        self._pg("pgbench", *self._connect_args(dbname)[:-2], "-i", "-q", "-s", str(scale), *args, dbname)

    def pgbench(
        self,
        *,
        transactions: int | None = None,
        seconds: int | None = None,
        clients: int = 2,
        dbname: str = "postgres",
        args: Iterable[str] = (),
    ) -> str:
        """Run the TPC-B-like load for a number of transactions per client or of seconds; return its report."""
        amount = ["-t", str(transactions)] if transactions is not None else ["-T", str(seconds or 5)]
        result = self._pg(
            "pgbench", *self._connect_args(dbname)[:-2], "-n", "-c", str(clients), "-j", str(clients),
            *amount, *args, dbname,
        )  # fmt: skip
        return result.stdout

    def pgbench_state(self, dbname: str = "postgres") -> tuple[str, ...]:
        """Fingerprint the pgbench tables (row counts and digests of every balance): equal means equal data."""
        rows = self.psql(_PGBENCH_STATE_SQL, dbname)
        return rows[0]

    # -- WAL and archiving -------------------------------------------------------------------------------------

    def current_lsn(self) -> str:
        return self.scalar("SELECT pg_current_wal_lsn()")

    def current_wal_file(self) -> str:
        return self.scalar("SELECT pg_walfile_name(pg_current_wal_lsn())")

    def in_recovery(self) -> bool:
        return self.scalar("SELECT pg_is_in_recovery()") == "t"

    def replay_lsn(self) -> str:
        """The last WAL position a server in recovery replayed."""
        return self.scalar("SELECT pg_last_wal_replay_lsn()")

    def wait_replayed(self, lsn: str, timeout: float = 60) -> None:
        """Wait until this server in recovery (a standby) has replayed WAL up to ``lsn``."""
        sql = f"SELECT coalesce(pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn, false)"
        wait_for(lambda: self.scalar(sql) == "t", timeout, f"{self.name} to replay up to {lsn}")

    def timeline(self) -> int:
        """The timeline a primary writes (from the name of its current WAL file)."""
        return int(self.current_wal_file()[:8], 16)

    def switch_wal(self) -> str:
        """Finish the current segment (pg_switch_wal) and return the name of the last complete segment.

        When nothing was written since the previous switch, that previous segment is the answer.
        """
        return self.scalar("SELECT pg_walfile_name(pg_switch_wal())")

    def archiver(self) -> ArchiverStats:
        row = self.psql(
            "SELECT archived_count, coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') "
            "FROM pg_stat_archiver"
        )[0]
        return ArchiverStats(int(row[0]), row[1] or None, int(row[2]), row[3] or None)

    def wait_archived(self, wal_name: str, timeout: float = 60, allow_failures: bool = False) -> ArchiverStats:
        """Wait until pg_stat_archiver's last_archived_wal reaches ``wal_name`` (names compare in WAL order
        within one timeline). Unless ``allow_failures``, a failed archive_command ends the wait with PgError."""

        def check() -> ArchiverStats | None:
            stats = self.archiver()
            if stats.failed_count and not allow_failures:
                raise PgError(
                    f"archive_command failed {stats.failed_count} time(s), last on '{stats.last_failed_wal}' "
                    f"while waiting for '{wal_name}'\n--- {self.log_path} ---\n{self.log_tail()}"
                )
            done = stats.last_archived_wal is not None and stats.last_archived_wal >= wal_name
            return stats if done else None

        try:
            return wait_for(check, timeout, f"'{wal_name}' to be archived by {self.name}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}: {self.archiver()}\n--- {self.log_path} ---\n{self.log_tail()}") from None

    def controldata(self) -> dict[str, str]:
        """pg_controldata's report as a mapping ('Database system identifier' -> '7301...')."""
        out = self._pg("pg_controldata", "-D", self.data_dir).stdout
        pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in pairs}

    def system_id(self) -> int:
        return int(self.controldata()["Database system identifier"])

    # -- the log -----------------------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """Wait until the server log matches the regular expression ``pattern``; return the match."""
        regex = re.compile(pattern, re.MULTILINE)
        try:
            return wait_for(lambda: regex.search(self.log_text()), timeout, f"/{pattern}/ in {self.log_path}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n--- {self.log_path} ---\n{self.log_tail()}") from None
