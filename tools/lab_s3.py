"""A local S3 endpoint for tests, the demo and the benchmark: moto's server on 127.0.0.1, as a child process.

Only the process this module started is ever stopped, by its PID.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["MotoServer", "free_port"]

ACCESS_KEY = "walbucket-test"
SECRET_KEY = "walbucket-test-secret"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """moto's S3 server on 127.0.0.1:<port>, started with the given Python (default: this one)."""

    def __init__(self, log_path: Path | None = None, python: str = sys.executable, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = log_path
        self._python = python
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        log = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL  # noqa: SIM115 - child owns it
        self.proc = subprocess.Popen(
            [self._python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        if not isinstance(log, int):
            log.close()  # the child has its own descriptor; an unclosed one is a ResourceWarning, an error in pytest
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """Environment for a walbucket process that talks to this server."""
        return {
            "WALBUCKET_BUCKET": bucket,
            "WALBUCKET_PREFIX": prefix,
            "WALBUCKET_ENDPOINT_URL": self.url,
            "WALBUCKET_REGION": REGION,
            "WALBUCKET_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def client(self) -> object:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
