"""A fault-injecting HTTP reverse proxy in front of a local S3 endpoint (moto's server), for tests and the lab.

Listens on 127.0.0.1:<free port> and forwards every request to ``upstream`` with the method, path, query, headers
and body unchanged (only the hop-by-hop headers are dropped), so a SigV4 signature computed for the proxy's address
still matches. Faults are attributes, switchable while the proxy runs::

    with FaultProxy(moto.url) as proxy:
        proxy.strip_if_none_match = True        # an endpoint that ignores conditional writes
        proxy.fail_next(3)                      # the next 3 requests get 503 SlowDown
        proxy.fail_all = True                   # every request gets 503 SlowDown
        proxy.reject_if_none_match = True       # 501 NotImplemented to any request carrying If-None-Match
        proxy.corrupt_get = True                # flip bytes in the body of successful object GETs
        proxy.drop_connections = True           # close the connection without answering
        proxy.emulate_checksums = True          # send x-amz-checksum-sha256 on GETs that ask, as S3 does
        proxy.delay = 3.0                       # wait this many seconds before answering each request

moto does not return an object's full SHA-256 checksum; S3 does when the client sends x-amz-checksum-mode, and
botocore then verifies the body. ``emulate_checksums`` adds the header, computed from the body before any
corruption, so a corrupted body meets the client's checksum validation as it would on S3.

moto checks If-None-Match and then writes without holding a lock, so two racing conditional creates can both
succeed there; real S3 decides atomically. ``atomic_conditional_writes`` (on by default) serializes requests
carrying If-None-Match so concurrency tests see S3's semantics, not moto's race.

Standard library only. Only the threads this module started are ever stopped.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["FaultProxy", "ProxiedRequest"]

_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect",
}  # fmt: skip
_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    b"<RequestId>lab-proxy</RequestId></Error>"
)
_NOT_IMPLEMENTED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>NotImplemented</Code>"
    b"<Message>A header you provided implies functionality that is not implemented</Message>"
    b"<Header>If-None-Match</Header><RequestId>lab-proxy</RequestId></Error>"
)


@dataclass(frozen=True, slots=True)
class ProxiedRequest:
    """One request as the proxy received it, and what it answered (0: the connection was dropped)."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    status: int

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class FaultProxy:
    """A reverse proxy from 127.0.0.1:<port> to ``upstream`` (``http://host:port``) with switchable faults."""

    def __init__(self, upstream: str, *, port: int = 0, rewrite_host: bool = False, timeout: float = 30.0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"upstream must be an http:// URL, not '{upstream}'")
        self.upstream_host = parsed.hostname
        self.upstream_port = parsed.port or 80
        self.rewrite_host = rewrite_host
        self.timeout = timeout
        self.strip_if_none_match = False
        self.reject_if_none_match = False
        self.fail_all = False
        self.corrupt_get = False
        self.drop_connections = False
        self.emulate_checksums = False
        self.delay = 0.0
        self.received = 0  # requests that have arrived, answered or not
        self.atomic_conditional_writes = True
        self.requests: list[ProxiedRequest] = []
        self._lock = threading.Lock()
        self._conditional_lock = threading.Lock()
        self._fail_next = 0
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, count: int) -> None:
        """Answer the next ``count`` requests with 503 SlowDown."""
        with self._lock:
            self._fail_next = count

    def reset(self) -> None:
        """Switch every fault off and forget the recorded requests."""
        with self._lock:
            self._fail_next = 0
            self.received = 0
            self.requests.clear()
        self.strip_if_none_match = self.reject_if_none_match = self.fail_all = False
        self.corrupt_get = self.drop_connections = self.emulate_checksums = False
        self.delay = 0.0

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", self._port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="lab-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _take_failure(self) -> bool:
        with self._lock:
            if self.fail_all:
                return True
            if self._fail_next > 0:
                self._fail_next -= 1
                return True
            return False

    def _record(self, handler: BaseHTTPRequestHandler, status: int) -> None:
        with self._lock:
            self.requests.append(ProxiedRequest(handler.command, handler.path, tuple(handler.headers.items()), status))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connections when 16 clients start at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the client gave up (a timeout, a killed process): what a faulty network looks like
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

    def log_message(self, format: str, *args: object) -> None:
        pass  # tests read proxy.requests instead of a log on stderr

    def do_GET(self) -> None:
        self._proxy()

    def do_HEAD(self) -> None:
        self._proxy()

    def do_PUT(self) -> None:
        self._proxy()

    def do_POST(self) -> None:
        self._proxy()

    def do_DELETE(self) -> None:
        self._proxy()

    def _read_body(self) -> tuple[bytes, bool]:
        """Return the request body as received on the wire, and whether it is chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            while True:
                line = self.rfile.readline()
                raw += line
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, up to the empty line
                        trailer = self.rfile.readline()
                        raw += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return bytes(raw), True
                raw += self.rfile.read(size + 2)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length), False

    def _proxy(self) -> None:
        owner = self.owner
        body, chunked = self._read_body()
        with owner._lock:
            owner.received += 1
        if owner.delay:
            time.sleep(owner.delay)
        conditional = self.headers.get("If-None-Match") is not None
        if owner.drop_connections:
            owner._record(self, 0)
            self.close_connection = True
            return
        if owner._take_failure():
            self._answer(503, _SLOW_DOWN)
            return
        if conditional and owner.reject_if_none_match:
            self._answer(501, _NOT_IMPLEMENTED)
            return
        if conditional and owner.atomic_conditional_writes and not owner.strip_if_none_match:
            with owner._conditional_lock:
                status, headers, payload = self._forward(body, chunked)
        else:
            status, headers, payload = self._forward(body, chunked)
        object_get = self.command == "GET" and status == 200 and "?" not in self.path and bool(payload)
        if object_get and owner.emulate_checksums and self.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            digest = base64.b64encode(hashlib.sha256(payload).digest()).decode("ascii")
            headers.append(("x-amz-checksum-sha256", digest))
            headers.append(("x-amz-checksum-type", "FULL_OBJECT"))
        if object_get and owner.corrupt_get:
            payload = _flip(payload)
        self._answer(status, payload, headers)

    def _forward(self, body: bytes, chunked: bool) -> tuple[int, list[tuple[str, str]], bytes]:
        owner = self.owner
        conn = http.client.HTTPConnection(owner.upstream_host, owner.upstream_port, timeout=owner.timeout)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                lower = name.lower()
                if lower in _HOP_BY_HOP or (lower == "if-none-match" and owner.strip_if_none_match):
                    continue
                if lower == "host" and owner.rewrite_host:
                    conn.putheader(name, f"{owner.upstream_host}:{owner.upstream_port}")
                else:
                    conn.putheader(name, value)
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            if body:
                conn.send(body)  # chunked bodies go on as received, chunk framing included
            response = conn.getresponse()
            payload = response.read()
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return response.status, headers, payload
        finally:
            conn.close()

    def _answer(self, status: int, payload: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.owner._record(self, status)
        self.send_response(status)
        if headers is None:
            headers = [("Content-Type", "application/xml"), ("x-amz-request-id", "lab-proxy")]
        for name, value in headers:
            if name.lower() != "content-length" or self.command == "HEAD":
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        else:
            if not any(name.lower() == "content-length" for name, _ in headers):
                self.send_header("Content-Length", "0")
            self.end_headers()
        self.wfile.flush()


def _flip(payload: bytes) -> bytes:
    """Invert a few bytes spread over the body, as a bad disk or a broken middlebox would."""
    data = bytearray(payload)
    for position in {len(data) // 2, len(data) // 3, len(data) - 1, min(len(data) - 1, 64)}:
        data[position] ^= 0xFF
    return bytes(data)
