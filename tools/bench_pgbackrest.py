"""pgBackRest on the benchmark's local S3 endpoint: stunnel for TLS in front of moto, and pgBackRest's configuration.

pgBackRest speaks S3 only over TLS, and moto's server only plain HTTP: stunnel (a child process, stopped by its
PID) terminates TLS on 127.0.0.1 with a throwaway self-signed certificate made with openssl and forwards to moto.
pgBackRest is told not to verify the certificate (repo1-storage-verify-tls=n), path-style URIs.

Every pgBackRest run goes through GNU time (``/usr/bin/time``), never as a direct child of the benchmark: the
benchmark reaps orphaned pgbackrest processes itself (bench_procs.Reaper) and must never reap one that
subprocess is waiting for.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

from lab_pg import SUPERUSER, PgCluster, PgLab
from lab_s3 import ACCESS_KEY, REGION, SECRET_KEY, free_port

__all__ = ["PgBackRest", "Stunnel", "pgbackrest_path"]


def pgbackrest_path() -> str | None:
    return shutil.which("pgbackrest")


class Stunnel:
    """TLS on 127.0.0.1:<port>, forwarding to ``upstream_port`` on 127.0.0.1."""

    def __init__(self, directory: Path, upstream_port: int) -> None:
        self.dir = directory
        self.upstream_port = upstream_port
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def cert(self) -> Path:
        """The self-signed certificate (CN and subjectAltName 127.0.0.1): a CA bundle for clients that verify."""
        return self.dir / "cert.pem"

    def start(self) -> Stunnel:
        self.dir.mkdir(parents=True, exist_ok=True)
        cert, key = self.cert, self.dir / "key.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                key,
                "-out",
                cert,
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
        conf = self.dir / "stunnel.conf"
        conf.write_text(
            "foreground = yes\npid =\ndebug = 3\n"
            f"[s3]\naccept = 127.0.0.1:{self.port}\nconnect = 127.0.0.1:{self.upstream_port}\n"
            f"cert = {cert}\nkey = {key}\n"
        )
        with open(self.dir / "stunnel.log", "ab") as log:
            self.proc = subprocess.Popen(["stunnel", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stunnel exited with {self.proc.returncode}; see {self.dir / 'stunnel.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("stunnel did not listen within 15 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class PgBackRest:
    """One pgBackRest configuration file (one stanza, one cluster) in the lab, and commands run with it."""

    def __init__(
        self,
        lab: PgLab,
        stunnel: Stunnel,
        bucket: str,
        stanza: str,
        cluster: PgCluster,
        name: str,
        *,
        process_max: int = 4,
        archive_timeout: int = 60,
    ) -> None:
        self.lab = lab
        self.stanza = stanza
        self.cluster = cluster
        base = lab.make_dir(lab.base_dir / "pgbackrest" / name)
        for sub in ("spool", "lock", "log"):
            lab.make_dir(base / sub)
        self.config = base / "pgbackrest.conf"
        lab.write_file(
            self.config,
            "[global]\n"
            "repo1-type=s3\nrepo1-path=/pgbackrest\n"
            f"repo1-s3-bucket={bucket}\nrepo1-s3-endpoint=127.0.0.1\nrepo1-storage-port={stunnel.port}\n"
            f"repo1-s3-region={REGION}\nrepo1-s3-key={ACCESS_KEY}\nrepo1-s3-key-secret={SECRET_KEY}\n"
            "repo1-s3-uri-style=path\nrepo1-storage-verify-tls=n\n"
            "compress-type=zst\ncompress-level=3\n"
            f"archive-async=y\nprocess-max={process_max}\narchive-timeout={archive_timeout}\n"
            f"spool-path={base / 'spool'}\nlock-path={base / 'lock'}\nlog-path={base / 'log'}\n"
            "log-level-console=warn\nlog-level-file=info\n"
            f"\n[{stanza}]\n"
            f"pg1-path={cluster.data_dir}\npg1-port={cluster.port}\npg1-socket-path={cluster.socket_dir}\n"
            f"pg1-user={SUPERUSER}\n",
        )

    def argv(self, *args: str) -> list[str]:
        return ["pgbackrest", f"--config={self.config}", f"--stanza={self.stanza}", *args]

    def archive_command(self, wrapper: list[str]) -> str:
        return shlex.join([*wrapper, *self.argv("archive-push")]) + " %p"

    def restore_command(self, wrapper: list[str]) -> str:
        return shlex.join([*wrapper, *self.argv("archive-get")]) + ' %f "%p"'

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run pgbackrest as the server user, under GNU time (see the module docstring)."""
        return self.lab.run(["/usr/bin/time", "-f", "", *self.argv(*args)], check=check, timeout=timeout)
