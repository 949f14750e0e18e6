"""A local Ceph RADOS Gateway for tests: a one-node Ceph 16.2 (pacific) cluster on 127.0.0.1, as child processes.

``RgwServer`` has the interface of ``lab_s3.MotoServer`` (``start()``/``stop()``/context manager, ``url``,
``env(bucket, prefix)``, ``client()``) so that tests can swap one for the other, plus an https endpoint:
``https_url``, ``ca_bundle`` (the PEM of the CA that signed its certificate), ``https_env(bucket, prefix)``, which
adds ``WALBUCKET_CA_BUNDLE``, and ``client(https=True)``. ``rgw_available()`` tells whether the commands exist.

What ``start()`` builds, all of it under one directory (``base_dir``, or a new temporary one):

- ``ceph.conf``: no cephx (``auth_{cluster,service,client}_required = none``), msgr2 only, every path (``run_dir``,
  ``admin_socket``, ``pid_file``, ``log_file``, ``mon_cluster_log_file``, ``mon_data``, ``osd_data``, ``rgw_data``,
  ``keyring``, ``crash_dir``) inside the directory, pools of size 1 with 8 placement groups and no autoscaler;
- a self-signed CA and a certificate for 127.0.0.1/localhost signed by it, made with the ``openssl`` command;
- one monitor (``monmaptool --create``, ``ceph-mon --mkfs``, then ``ceph-mon -f``);
- one OSD on the ``memstore`` object store, in memory (``ceph osd new``, ``ceph-osd --mkfs``, then ``ceph-osd -f``);
- an S3 user (``radosgw-admin user create`` with fixed keys; it also makes the gateway's first pools);
- ``radosgw -f`` with the beast frontend: http on ``127.0.0.1:port``, https on ``127.0.0.1:https_port``.

Two settings matter beyond the obvious ones. Without cephx there are no session keys, so msgr2 can only use its
``crc`` mode: every ``ms_*_mode`` must allow it, and radosgw's built-in default ``ms_mon_client_mode = secure``
makes it fail to reach the monitor ("get_initial_auth_request returned -13") unless overridden. And
``paxos_propose_interval = 0.1`` (1 s by default) brings the start from about 13 s down to about 3-4 s.

``start()`` returns once a signed S3 request (ListBuckets with the user's keys) succeeds on both endpoints, and
fails after ``start_timeout`` seconds (90) with a RuntimeError that carries the tail of every daemon's log. Daemons
run in the foreground (``-f``) as children of this process: ``stop()`` ends exactly those PIDs (SIGTERM, then
SIGKILL after 10 s), also at interpreter exit, and removes ``base_dir`` unless ``keep=True``. Idle, the three
daemons use a few milliseconds of CPU a second and about 170 MB of memory, plus the objects stored.

S3 behaviour of RGW 16.2 that differs from AWS and moto (``python tools/lab_rgw.py`` checks it, over http and
https): ``x-amz-checksum-*`` headers are ignored (a wrong ChecksumSHA256 is accepted, none is echoed; single-part
ETags are the body's MD5); ``If-None-Match: *`` is honoured by PutObject (412) but ignored by
CompleteMultipartUpload (the object is overwritten); and botocore >= 1.36's default
``request_checksum_calculation = when_supported`` makes uploads without an explicit checksum over https use
``aws-chunked`` with a trailing checksum, which RGW 16.2 refuses with 411 MissingContentLength.

Needs Debian's ``radosgw ceph-mon ceph-osd ceph-common openssl`` (``scripts/bootstrap`` installs them); only the
standard library, and boto3 for ``client()``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["ACCESS_KEY", "REGION", "SECRET_KEY", "RgwServer", "free_port", "rgw_available"]

ACCESS_KEY = "walbucket-test"
SECRET_KEY = "walbucket-test-secret"
REGION = "us-east-1"  # RGW accepts any region name in the signature; this is MotoServer's
USER_ID = "walbucket"
CLUSTER = "ceph"
MON_ID = "a"
OSD_ID = "0"
RGW_NAME = "client.rgw.a"
BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool", "openssl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rgw_available() -> bool:
    """Whether the Ceph and openssl commands that ``RgwServer`` runs are installed (for a pytest skip)."""
    return all(shutil.which(name) for name in BINARIES)


class RgwServer:
    """A Ceph RADOS Gateway (with its monitor and memstore OSD) on 127.0.0.1: http on ``port``, https on
    ``https_port``. Everything lives under ``base_dir`` (default: a new temporary directory), which ``stop()``
    removes unless ``keep``. ``log_path`` (outside ``base_dir``), if given, receives the daemons' logs when they
    stop, or the failure report with their tails when ``start()`` fails. ``extra_conf`` adds or overrides ceph.conf
    settings ([global] section).
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        log_path: Path | None = None,
        port: int | None = None,
        https_port: int | None = None,
        keep: bool = False,
        memstore_bytes: int = 2 << 30,
        start_timeout: float = 90.0,
        extra_conf: Mapping[str, str | int | float] | None = None,
    ) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="walbucket-rgw-")) if base_dir is None else Path(base_dir)
        self.port = port or free_port()
        self.https_port = https_port or free_port()
        self.mon_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.https_url = f"https://127.0.0.1:{self.https_port}"
        self.conf = self.base_dir / "ceph.conf"
        self.ca_bundle = str(self.base_dir / "tls" / "ca.pem")
        self.keep = keep
        self.memstore_bytes = memstore_bytes
        self.start_timeout = start_timeout
        self.extra_conf = dict(extra_conf or {})
        self._log_path = log_path
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # daemon name -> its process, in start order
        self.startup_seconds: float | None = None  # how long the last successful start() took
        self.fsid = ""
        self._started = False

    # --- the interface shared with MotoServer -------------------------------------------------------------------

    def start(self) -> RgwServer:
        began = time.monotonic()
        deadline = began + self.start_timeout
        atexit.register(self.stop)
        try:
            self._prepare(deadline)
            self._start_mon(deadline)
            self._start_osd(deadline)
            user = ["user", "create", f"--uid={USER_ID}", "--display-name=walbucket tests"]
            self._run(
                self._argv("radosgw-admin", *user, f"--access-key={ACCESS_KEY}", f"--secret={SECRET_KEY}"), deadline
            )
            self._spawn("radosgw", self._argv("radosgw", "-f", "-n", RGW_NAME))
            self._wait_s3(deadline)
        except Exception as exc:
            report = self._failure_report(exc, time.monotonic() - began)
            self._append_log(report)
            self.stop()
            raise RuntimeError(report) from exc
        except BaseException:  # KeyboardInterrupt and the like: clean up, and let it through unchanged
            self.stop()
            raise
        self._started = True
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """End the daemons this object started, by PID (the gateway first), then remove ``base_dir``."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        atexit.unregister(self.stop)
        if self._log_path is not None and self._started:
            self._append_log(self._log_dump())
        self._started = False
        if not self.keep:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """Environment for a walbucket process that talks to this gateway over http."""
        return {
            "WALBUCKET_BUCKET": bucket,
            "WALBUCKET_PREFIX": prefix,
            "WALBUCKET_ENDPOINT_URL": self.url,
            "WALBUCKET_REGION": REGION,
            "WALBUCKET_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def https_env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """Environment for a walbucket process that talks to this gateway over https, trusting ``ca_bundle``."""
        return {
            **self.env(bucket, prefix),
            "WALBUCKET_ENDPOINT_URL": self.https_url,
            "WALBUCKET_CA_BUNDLE": self.ca_bundle,
        }

    def client(self, https: bool = False, **config: Any) -> Any:
        """A boto3 S3 client for this gateway (path-style); ``config`` adds botocore ``Config`` options."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.https_url if https else self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            verify=self.ca_bundle if https else None,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def __enter__(self) -> RgwServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- building the cluster -----------------------------------------------------------------------------------

    def _prepare(self, deadline: float) -> None:
        missing = [name for name in BINARIES if not shutil.which(name)]
        if missing:
            raise RuntimeError(
                f"missing {', '.join(missing)}: run scripts/bootstrap (Debian's radosgw, ceph-mon, "
                "ceph-osd, ceph-common and openssl packages)"
            )
        for sub in ("run", "log", "mon", "osd", "rgw", "crash", "tls"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        self.fsid = str(uuid.uuid4())
        self.conf.write_text(self._ceph_conf())
        self._make_certificates(deadline)

    def _ceph_conf(self) -> str:
        d = self.base_dir
        tls = d / "tls"
        frontends = (
            f"beast endpoint=127.0.0.1:{self.port} ssl_endpoint=127.0.0.1:{self.https_port} "
            f"ssl_certificate={tls / 'server.pem'} ssl_private_key={tls / 'server.key'}"
        )
        settings = {
            "fsid": self.fsid,
            "mon_host": f"v2:127.0.0.1:{self.mon_port}",
            "public_addr": "127.0.0.1",
            "cluster_addr": "127.0.0.1",
            "ms_bind_msgr1": "false",
            "ms_bind_ipv6": "false",
            # No cephx. Without session keys only msgr2's crc mode is possible, so every mode list must allow it:
            # radosgw's built-in default ms_mon_client_mode is 'secure' alone, and it then fails to authenticate.
            "auth_cluster_required": "none",
            "auth_service_required": "none",
            "auth_client_required": "none",
            "ms_cluster_mode": "crc secure",
            "ms_service_mode": "crc secure",
            "ms_client_mode": "crc secure",
            "ms_mon_cluster_mode": "crc secure",
            "ms_mon_service_mode": "crc secure",
            "ms_mon_client_mode": "crc secure",
            "mon_warn_on_insecure_global_id_reclaim_allowed": "false",
            # Every path inside base_dir: nothing under /var or /etc/ceph is read or written.
            "run_dir": d / "run",
            "admin_socket": d / "run" / "$cluster-$name.asok",
            "pid_file": d / "run" / "$cluster-$name.pid",
            "log_file": d / "log" / "$cluster-$name.log",
            "mon_cluster_log_file": d / "log" / "$cluster.$channel.log",
            "crash_dir": d / "crash",
            "keyring": d / "keyring",
            "mon_data": d / "mon" / "$cluster-$id",
            "osd_data": d / "osd" / "$cluster-$id",
            "rgw_data": d / "rgw" / "$cluster-$id",
            # One OSD in memory, pools of one replica, few placement groups.
            "osd_objectstore": "memstore",
            "memstore_device_bytes": self.memstore_bytes,
            "osd_pool_default_size": 1,
            "osd_pool_default_min_size": 1,
            "mon_allow_pool_size_one": "true",
            "mon_warn_on_pool_no_redundancy": "false",
            "osd_pool_default_pg_num": 8,
            "osd_pool_default_pgp_num": 8,
            "osd_pool_default_pg_autoscale_mode": "off",
            "mon_max_pg_per_osd": 1000,
            "osd_crush_chooseleaf_type": 0,
            "mon_data_avail_crit": 1,
            "mon_data_avail_warn": 2,
            # Monitor changes (pool creations, OSD boot) proposed every 0.1 s instead of 1 s: starts in 3 s, not 13.
            "paxos_propose_interval": 0.1,
            # Modest threads: the machine has two cores.
            "ms_async_op_threads": 2,
            "osd_op_num_shards": 2,
            "osd_op_num_threads_per_shard": 1,
            "rgw_thread_pool_size": 32,
            "rgw_frontends": frontends,
            "rgw_init_timeout": int(self.start_timeout),
        }
        settings.update(self.extra_conf)
        lines = ["[global]", *(f"{key} = {value}" for key, value in settings.items())]
        return "\n".join(lines) + "\n"

    def _make_certificates(self, deadline: float) -> None:
        """A CA and a server certificate for 127.0.0.1 and localhost signed by it (strict-X.509-clean)."""
        tls = self.base_dir / "tls"
        ca_key, ca_pem = tls / "ca.key", tls / "ca.pem"
        key, csr, pem = tls / "server.key", tls / "server.csr", tls / "server.pem"
        ext = tls / "server.ext"
        ext.write_text(
            "basicConstraints = critical, CA:FALSE\n"
            "keyUsage = critical, digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid:always\n"
        )
        days, serial = "30", str(uuid.uuid4().int >> 64)
        ca_ext = ["basicConstraints = critical, CA:TRUE", "keyUsage = critical, keyCertSign, cRLSign"]
        self._run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
                   str(ca_pem), "-days", days, "-subj", "/CN=walbucket test CA", "-addext", ca_ext[0], "-addext",
                   ca_ext[1], "-addext", "subjectKeyIdentifier = hash"], deadline)  # fmt: skip
        self._run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
                   "-subj", "/CN=127.0.0.1"], deadline)  # fmt: skip
        self._run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
                   "-set_serial", serial, "-days", days, "-extfile", str(ext), "-out", str(pem)], deadline)  # fmt: skip

    def _argv(self, tool: str, *args: str) -> list[str]:
        """A Ceph command line with this cluster's name and configuration file."""
        return [tool, "--cluster", CLUSTER, "-c", str(self.conf), *args]

    def _start_mon(self, deadline: float) -> None:
        monmap = str(self.base_dir / "monmap")
        address = f"[v2:127.0.0.1:{self.mon_port}]"
        self._run(["monmaptool", "--create", "--clobber", "--enable-all-features", "--fsid", self.fsid,
                   "--addv", MON_ID, address, monmap], deadline)  # fmt: skip
        self._run(self._argv("ceph-mon", "-i", MON_ID, "--mkfs", "--monmap", monmap), deadline)
        self._spawn("ceph-mon", self._argv("ceph-mon", "-f", "-i", MON_ID))

    def _start_osd(self, deadline: float) -> None:
        osd_uuid = str(uuid.uuid4())
        (self.base_dir / "osd" / f"{CLUSTER}-{OSD_ID}").mkdir(exist_ok=True)
        connect = str(int(max(1.0, deadline - time.monotonic())))
        created = self._run(self._argv("ceph", "--connect-timeout", connect, "osd", "new", osd_uuid, OSD_ID), deadline)
        if created.strip() != OSD_ID:
            raise RuntimeError(f"'ceph osd new' made osd.{created.strip()}, not osd.{OSD_ID}")
        self._run(self._argv("ceph-osd", "-i", OSD_ID, "--mkfs", "--osd-uuid", osd_uuid), deadline)
        self._spawn("ceph-osd", self._argv("ceph-osd", "-f", "-i", OSD_ID))

    def _wait_s3(self, deadline: float) -> None:
        """Until ListBuckets, signed with the user's keys, succeeds over http and over https."""
        import botocore.exceptions

        clients = [
            self.client(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
            self.client(https=True, connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        ]
        last: Exception | None = None
        while clients:
            self._check_alive()
            try:
                clients[0].list_buckets()
                clients.pop(0)
                continue
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"no S3 answer from radosgw within {self.start_timeout:.0f} s: {last}")
            time.sleep(0.5)

    # --- processes ----------------------------------------------------------------------------------------------

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CEPH_")}
        env["CEPH_CONF"] = str(self.conf)
        return env

    def _spawn(self, name: str, argv: list[str]) -> None:
        out = open(self.base_dir / "log" / f"{name}.out", "ab")  # noqa: SIM115 - the child owns it
        try:
            self.procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self._child_env()
            )
        finally:
            out.close()

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} (pid {proc.pid}) exited with {proc.returncode}")

    def _run(self, argv: list[str], deadline: float) -> str:
        """Run a command to its end (killed at ``deadline``); its standard output, or RuntimeError."""
        self._check_alive()
        timeout = max(1.0, deadline - time.monotonic())
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=self._child_env(),
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            output = (done.stderr or done.stdout)[-2000:]
            raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}: {output}")
        return done.stdout

    # --- reporting ----------------------------------------------------------------------------------------------

    def _failure_report(self, exc: BaseException, elapsed: float) -> str:
        late = " (start_timeout)" if elapsed >= self.start_timeout else ""
        lines = [
            f"radosgw lab in {self.base_dir} failed to start after {elapsed:.1f} s{late}: {type(exc).__name__}: {exc}"
        ]
        log_dir = self.base_dir / "log"
        if log_dir.is_dir():
            for path in sorted(log_dir.iterdir()):
                with contextlib.suppress(OSError):
                    tail = path.read_text(errors="replace").splitlines()[-15:]
                    if tail:
                        lines += [f"--- tail of {path.name}", *tail]
        return "\n".join(lines)

    def _log_dump(self) -> str:
        parts = []
        log_dir = self.base_dir / "log"
        for path in sorted(log_dir.iterdir()) if log_dir.is_dir() else []:
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def _append_log(self, text: str) -> None:
        if self._log_path is not None:
            with contextlib.suppress(OSError), open(self._log_path, "a") as log:
                log.write(text + "\n")


# --- self-check: python tools/lab_rgw.py --------------------------------------------------------------------------


class _SelfCheck:
    """The S3 behaviours walbucket relies on, on one endpoint, with one setting of botocore's checksums."""

    BODY = b"walbucket self-check\n"

    def __init__(self, server: RgwServer, https: bool, checksums: str) -> None:
        self.s3 = server.client(
            https=https, request_checksum_calculation=checksums, response_checksum_validation=checksums
        )
        self.label = f"{'https' if https else 'http'}, checksums {checksums}"
        self.bucket = f"selfcheck-{'https' if https else 'http'}-{checksums.replace('_', '-')}"
        self.lines: list[str] = []
        self.sent: list[str] = []  # the checksum-related headers of each PutObject request
        self.step = ""  # the step of a multipart upload under way
        self.s3.meta.events.register("before-send.s3.PutObject", self._record)

    def _record(self, request: Any, **_: Any) -> None:
        headers = request.headers
        names = ("x-amz-content-sha256", "Content-Encoding", "x-amz-trailer", "x-amz-sdk-checksum-algorithm")
        shown = [
            f"{n}={headers[n].decode() if isinstance(headers[n], bytes) else headers[n]}" for n in names if n in headers
        ]
        shown += [k for k in headers if k.lower().startswith("x-amz-checksum-")]
        self.sent.append(", ".join(shown))

    def note(self, what: str, result: str) -> None:
        self.lines.append(f"[{self.label}] {what}: {result}")

    def attempt(self, what: str, call: Any) -> Any:
        """``call()``'s response, or None with its error code (and the multipart step that failed) noted."""
        from botocore.exceptions import ClientError

        self.step = ""
        try:
            response = call()
        except ClientError as exc:
            response = getattr(exc, "response", None) or {}
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            where = f" at {self.step}" if self.step else ""
            self.note(what, f"error {response.get('Error', {}).get('Code')} (HTTP {status}){where}")
            return None
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            self.note(what, f"failed: {type(exc).__name__}: {str(exc)[:200]}")
            return None
        self.note(what, "ok")
        return response

    def content(self, key: str) -> bytes | None:
        try:
            return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except Exception:  # noqa: BLE001 - None says it could not be read
            return None

    def run(self) -> list[str]:
        self.s3.create_bucket(Bucket=self.bucket)
        self.conditional_put()
        self.conditional_multipart()
        self.checksums()
        self.tags()
        self.attempt("get_object of a missing key", lambda: self.s3.get_object(Bucket=self.bucket, Key="missing"))
        self.attempt("head_object of a missing key", lambda: self.s3.head_object(Bucket=self.bucket, Key="missing"))
        return self.lines

    def conditional_put(self) -> None:
        s3, bucket = self.s3, self.bucket
        self.sent.clear()
        self.attempt(
            "put_object IfNoneMatch='*', new key",
            lambda: s3.put_object(Bucket=bucket, Key="c", Body=self.BODY, IfNoneMatch="*"),
        )
        self.note("  headers sent", self.sent[-1] if self.sent else "-")
        self.attempt(
            "put_object IfNoneMatch='*', existing key",
            lambda: s3.put_object(Bucket=bucket, Key="c", Body=b"2", IfNoneMatch="*"),
        )
        outcome = {self.BODY: "the first body", b"2": "the second body (OVERWRITTEN)", None: "missing"}
        self.note("  object afterwards", outcome.get(self.content("c"), "?"))

    def conditional_multipart(self) -> None:
        part = os.urandom(1024)
        for number in (1, 2):

            def multipart(data: bytes = part + bytes([number])) -> Any:
                return self.multipart("m", data, {}, IfNoneMatch="*")

            self.attempt(f"multipart upload #{number} (1 part), complete_multipart_upload IfNoneMatch='*'", multipart)
        stored = self.content("m")
        self.note("  object afterwards", f"upload #{stored[-1]}" if stored else "missing")
        # As walbucket does it: SHA-256 checksums declared on create, sent with each part, listed on complete.
        sha = self.sha256(part)
        done = self.attempt(
            "multipart upload with ChecksumAlgorithm=SHA256 and part ChecksumSHA256, IfNoneMatch='*' (new key)",
            lambda: self.multipart("ms", part, {"ChecksumSHA256": sha}, ChecksumAlgorithm="SHA256", IfNoneMatch="*"),
        )
        if done is not None:
            self.note("  checksum echoed by complete", str(done.get("ChecksumSHA256")))
        stored = self.content("ms")
        self.note("  object afterwards", "the part" if stored == part else "missing or different")

    def multipart(self, key: str, data: bytes, part_extra: dict[str, str], **extra: str) -> Any:
        """Create, upload one part, complete; an error says which step failed."""
        s3, bucket = self.s3, self.bucket
        create = {k: v for k, v in extra.items() if k == "ChecksumAlgorithm"}
        complete = {k: v for k, v in extra.items() if k != "ChecksumAlgorithm"}
        self.step = "create_multipart_upload"
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
        self.step = "upload_part"
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=data, **part_extra)["ETag"]
        self.step = "complete_multipart_upload"
        parts = [{"PartNumber": 1, "ETag": etag, **part_extra}]
        return s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}, **complete
        )

    @staticmethod
    def sha256(data: bytes) -> str:
        import base64
        import hashlib

        return base64.b64encode(hashlib.sha256(data).digest()).decode()

    def checksums(self) -> None:
        import hashlib

        s3, bucket = self.s3, self.bucket
        digest = self.sha256(self.BODY)
        self.sent.clear()
        response = self.attempt(
            "put_object ChecksumSHA256=<right>",
            lambda: s3.put_object(Bucket=bucket, Key="s", Body=self.BODY, ChecksumSHA256=digest),
        )
        self.note("  headers sent", self.sent[-1] if self.sent else "-")
        if response is not None:
            echoed = response.get("ChecksumSHA256")
            same = "same as" if echoed == digest else "NOT"
            self.note("  checksum echoed", f"{echoed} ({same} the one sent)" if echoed else "none")
            md5 = hashlib.md5(self.BODY, usedforsecurity=False).hexdigest()
            self.note("  ETag == MD5(body)", f"{response['ETag'].strip(chr(34)) == md5} (ETag {response['ETag']})")
        wrong = self.sha256(b"not the body")
        self.attempt(
            "put_object ChecksumSHA256=<wrong>",
            lambda: s3.put_object(Bucket=bucket, Key="w", Body=self.BODY, ChecksumSHA256=wrong),
        )

    def tags(self) -> None:
        s3, bucket = self.s3, self.bucket
        self.attempt(
            "put_object Tagging='kind=wal&tl=1', Metadata={'sha256': 'abc'}",
            lambda: s3.put_object(
                Bucket=bucket, Key="t", Body=self.BODY, Tagging="kind=wal&tl=1", Metadata={"sha256": "abc"}
            ),
        )
        tags = self.attempt("get_object_tagging", lambda: s3.get_object_tagging(Bucket=bucket, Key="t"))
        if tags is not None:
            self.note("  tags", str(sorted((t["Key"], t["Value"]) for t in tags["TagSet"])))
        head = self.attempt("head_object", lambda: s3.head_object(Bucket=bucket, Key="t"))
        if head is not None:
            self.note("  metadata, tag count", f"{head.get('Metadata')}, {head.get('TagCount')}")


def main() -> int:
    """Start a gateway, run the self-check over http and https with botocore's two checksum settings, stop it."""
    keep = "--keep" in sys.argv[1:]
    server = RgwServer(keep=keep)
    with server:
        print(f"radosgw up in {server.startup_seconds:.1f} s: {server.url}, {server.https_url} (CA {server.ca_bundle})")
        print("pids: " + ", ".join(f"{name}={proc.pid}" for name, proc in server.procs.items()), flush=True)
        for https in (False, True):
            for checksums in ("when_supported", "when_required"):
                for line in _SelfCheck(server, https, checksums).run():
                    print(line, flush=True)
    print(f"stopped; {server.base_dir} {'kept' if keep else 'removed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
