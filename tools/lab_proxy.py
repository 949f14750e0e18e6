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

Rule-based faults hit only the requests they name, a given number of times::

    proxy.add_fault("slowdown", method="PUT", path_contains="/wal/", times=2)   # the next 2 matching PUTs: 503
    proxy.add_fault("flip", method="GET", path_contains=key)                    # every GET of ``key``, forever
    proxy.add_fault("hold_after_store", method="PUT", path_contains=key, times=1)
    ...                                                                         # wait for proxy.held() == 1
    proxy.release()                                                             # held requests go on

A rule matches a request whose method equals ``method`` (any if None) and whose path as received (URL path and
query) contains ``path_contains`` (any if None). ``times`` is how many matching requests it hits before it is used up
(None: forever). The first matching rule that is not used up wins; each request meets at most one rule. A request a
rule hits is handled by that rule first; the attribute faults above then apply only where the rule goes on to forward
(``delay``, ``flip``, ``other_object``, ``hold_*``, ``stored_then_*``, ``reset_response``, ``short_body*``).
``reset()`` removes every rule and releases held requests. The kinds:

- ``slowdown``: 503 SlowDown (S3's XML); ``internal``: 500 InternalError (S3's XML). Not forwarded.
- ``reset_request``: read part of the request body (none if chunked), then reset the TCP connection (RST, by
  SO_LINGER 0). Not forwarded.
- ``reset_response``: forward, send the status line, headers and about half of the body, then RST.
- ``short_body``: forward, send the real Content-Length but about half of the body, then close (FIN).
- ``short_body_matching``: forward, answer about half of the body with a Content-Length that matches it, every other
  header (metadata, ETag) unchanged: a valid-looking shorter answer.
- ``delay``: wait ``seconds`` before forwarding.
- ``stored_then_500``: forward (the upstream stores it), then answer 500 InternalError.
- ``stored_then_reset``: forward, then RST without answering.
- ``ok_without_storing``: not forwarded; 200 with an empty body and S3-like PUT headers, but no checksum header and an
  ETag that is a random hex string, not the body's MD5.
- ``flip``: forward; in the body of a successful (2xx) GET, invert a few bytes.
- ``foreign_404_text`` (``404 page not found``, text/plain, as a Go server or an ingress's default backend),
  ``foreign_404_html`` (a small HTML page), ``foreign_404_empty`` (no body, no Content-Type), and the same three for
  403. No S3 XML, no ``x-amz-request-id``. Not forwarded.
- ``other_object``: forward with the path's object key replaced by ``other_key`` (path-style when the Host is an IP
  address or ``localhost``, else virtual-hosted), so the client receives that object's body, metadata and headers.
- ``hold_before_forward``: block until ``release()``, then go on normally; ``hold_after_store``: forward (the
  upstream stores it), block until ``release()``, then answer normally. ``held()`` counts the requests blocked now.

``proxy.requests`` records each request with the status sent on the wire: 0 for a connection closed without any
answer (``reset_request``, ``stored_then_reset``, ``drop_connections``), the status line's code when an answer was cut
short (``reset_response``, ``short_body``).

Emulations of stores that cannot run here (``proxy.emulation = EMULATIONS["r2"]``): the proxy refuses or ignores
the headers that store's documentation says it refuses or ignores, in front of moto. They are emulations of the
documentation (docs/providers.md gives each source), not of the stores themselves:

- ``r2`` (Cloudflare R2): refuses ``x-amz-tagging`` (501 NotImplemented).
- ``b2`` (Backblaze B2): refuses ``x-amz-tagging`` and ``x-amz-checksum-sha256`` (400 InvalidArgument).
- ``gcs`` (Google Cloud Storage, XML API): ignores ``x-amz-checksum-sha256`` and ``If-None-Match`` (its own
  precondition is ``x-goog-if-generation-match``).
- ``garage`` (Garage 2.0): drops ``x-amz-tagging`` without a word (its source keeps only ``x-amz-meta-*``), answers
  501 to the object tagging API, ignores ``If-None-Match``.
- ``rgw-pacific`` (Ceph RGW before Tentacle): ignores ``If-None-Match`` on CompleteMultipartUpload.

Standard library only. Only the threads this module started are ever stopped.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import os
import secrets
import socket
import struct
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["EMULATIONS", "FAULT_KINDS", "Emulation", "FaultProxy", "ProxiedRequest"]

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
_INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message>"
    b"<RequestId>lab-proxy</RequestId></Error>"
)
_S3_ERRORS: dict[str, tuple[int, bytes]] = {"slowdown": (503, _SLOW_DOWN), "internal": (500, _INTERNAL_ERROR)}
_FOREIGN_HTML = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_FOREIGN_REASONS = {404: ("Not Found", "404 page not found\n"), 403: ("Forbidden", "403 Forbidden\n")}
_FOREIGN: dict[str, tuple[int, str]] = {
    f"foreign_{status}_{style}": (status, style) for status in (404, 403) for style in ("text", "html", "empty")
}
_FORWARDING = {
    "reset_response", "short_body", "short_body_matching", "delay", "stored_then_500", "stored_then_reset", "flip",
    "other_object", "hold_before_forward", "hold_after_store",
}  # fmt: skip
FAULT_KINDS = frozenset({*_S3_ERRORS, *_FOREIGN, *_FORWARDING, "reset_request", "ok_without_storing"})


@dataclass(frozen=True, slots=True)
class Emulation:
    """A store's documented refusals and omissions: headers it refuses (status, S3 code) and headers it ignores."""

    name: str
    refuses: tuple[tuple[str, int, str], ...] = ()  # (lower-case header, HTTP status, S3 error code)
    ignores: tuple[tuple[str, str], ...] = ()  # (HTTP method or "*", lower-case header): dropped before forwarding
    no_tagging_api: bool = False  # GetObjectTagging and PutObjectTagging answer 501 NotImplemented

    def refusal(self, headers: Any, path: str) -> tuple[int, bytes] | None:
        if self.no_tagging_api and "?tagging" in path:
            return 501, _error_xml("NotImplemented", "Object tagging is not implemented.")
        for header, status, code in self.refuses:
            if headers.get(header) is not None:
                return status, _error_xml(code, f"Unsupported header '{header}' received for this API call.")
        return None

    def drops(self, method: str, header: str) -> bool:
        return any(m in ("*", method) and h == header for m, h in self.ignores)


def _error_xml(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            "<RequestId>emulation</RequestId></Error>").encode()  # fmt: skip


_TAGGING = "x-amz-tagging"
_SHA256 = "x-amz-checksum-sha256"
EMULATIONS = {
    "r2": Emulation("r2", refuses=((_TAGGING, 501, "NotImplemented"),)),
    "b2": Emulation("b2", refuses=((_TAGGING, 400, "InvalidArgument"), (_SHA256, 400, "InvalidArgument"))),
    "gcs": Emulation("gcs", ignores=(("*", _SHA256), ("*", "if-none-match"))),
    "garage": Emulation("garage", ignores=(("*", _TAGGING), ("*", "if-none-match")), no_tagging_api=True),
    "rgw-pacific": Emulation("rgw-pacific", ignores=(("POST", "if-none-match"),)),
}
_POLL_INTERVAL = 0.05  # seconds: how long stop() may wait for the serving loop to notice (the default 0.5 adds up)
_RESET_GRACE = 0.05  # seconds between the last bytes sent and an RST, so that they reach the client first


@dataclass(frozen=True, slots=True)
class ProxiedRequest:
    """One request as the proxy received it, and what it answered (0: the connection was dropped)."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    status: int

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass(slots=True)
class _Fault:
    kind: str
    method: str | None
    path_contains: str | None
    remaining: int | None
    seconds: float
    other_key: str | None

    def matches(self, method: str, path: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_contains is None or self.path_contains in path


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
        self.emulation: Emulation | None = None  # a store's documented refusals (EMULATIONS)
        self.received = 0  # requests that have arrived, answered or not
        self.atomic_conditional_writes = True
        self.requests: list[ProxiedRequest] = []
        self._lock = threading.Lock()
        self._conditional_lock = threading.Lock()
        self._fail_next = 0
        self._faults: list[_Fault] = []
        self._held_cond = threading.Condition()
        self._held = 0
        self._release_generation = 0
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

    def add_fault(
        self,
        kind: str,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int | None = None,
        seconds: float = 0.0,
        other_key: str | None = None,
    ) -> None:
        """Add a rule: ``kind`` (see the module docstring) for the matching requests, ``times`` of them (None: all)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind '{kind}' (one of {', '.join(sorted(FAULT_KINDS))})")
        if times is not None and times < 0:
            raise ValueError(f"times must be None or at least 0, not {times}")
        if kind == "other_object" and not other_key:
            raise ValueError("the fault 'other_object' needs other_key")
        if seconds < 0:
            raise ValueError(f"seconds must not be negative, not {seconds}")
        with self._lock:
            self._faults.append(_Fault(kind, method, path_contains, times, seconds, other_key))

    def release(self) -> None:
        """Let every request held by a ``hold_*`` fault go on (requests that arrive later are held again)."""
        with self._held_cond:
            self._release_generation += 1
            self._held_cond.notify_all()

    def held(self) -> int:
        """How many requests ``hold_*`` faults are holding right now."""
        with self._held_cond:
            return self._held

    def reset(self) -> None:
        """Switch every fault off (rules included), release held requests and forget the recorded requests."""
        with self._lock:
            self._fail_next = 0
            self._faults.clear()
            self.received = 0
            self.requests.clear()
        self.release()
        self.strip_if_none_match = self.reject_if_none_match = self.fail_all = False
        self.corrupt_get = self.drop_connections = self.emulate_checksums = False
        self.delay = 0.0
        self.emulation = None

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = _Server(("127.0.0.1", self._port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(_POLL_INTERVAL,), name="lab-proxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()  # held handler threads must not outlive the proxy blocked
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

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        """The first rule that matches and is not used up, counted as used once more; None if no rule matches."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
            return None

    def _hold(self) -> None:
        with self._held_cond:
            generation = self._release_generation
            self._held += 1
            try:
                self._held_cond.wait_for(lambda: self._release_generation != generation)
            finally:
                self._held -= 1

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

    def _refused_by_emulation(self) -> bool:
        """Answer as the emulated store does to a header it refuses; True when it did."""
        emulation = self.owner.emulation
        refusal = emulation.refusal(self.headers, self.path) if emulation is not None else None
        if refusal is None:
            return False
        self._read_body()
        with self.owner._lock:
            self.owner.received += 1
        self._answer(*refusal)
        return True

    def _condition_dropped(self) -> bool:
        """Whether If-None-Match is dropped before forwarding (strip_if_none_match, or the emulated store)."""
        emulation = self.owner.emulation
        return self.owner.strip_if_none_match or (
            emulation is not None and emulation.drops(self.command, "if-none-match")
        )

    def _proxy(self) -> None:
        owner = self.owner
        if self._refused_by_emulation():
            return
        fault = owner._take_fault(self.command, self.path)
        kind = fault.kind if fault is not None else None
        if kind == "reset_request":
            self._read_part_of_body()
            with owner._lock:
                owner.received += 1
            owner._record(self, 0)
            self._reset_connection()
            return
        body, chunked = self._read_body()
        with owner._lock:
            owner.received += 1
        if owner.delay:
            time.sleep(owner.delay)
        if fault is not None and self._answered_by_rule(fault):
            return
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
        path = self.path
        if fault is not None and fault.kind == "other_object" and fault.other_key:
            path = _replace_key(path, self.headers.get("Host", ""), fault.other_key)
        if conditional and owner.atomic_conditional_writes and not self._condition_dropped():
            with owner._conditional_lock:
                status, headers, payload = self._forward(body, chunked, path)
        else:
            status, headers, payload = self._forward(body, chunked, path)
        if kind == "hold_after_store":
            owner._hold()
        payload = self._as_s3_answers_a_get(status, headers, payload)
        self._answer_forwarded(kind, status, headers, payload)

    def _as_s3_answers_a_get(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> bytes:
        """Add S3's checksum header to an object GET (emulate_checksums) and flip its bytes (corrupt_get)."""
        owner = self.owner
        if not (self.command == "GET" and status == 200 and "?" not in self.path and payload):
            return payload
        if owner.emulate_checksums and self.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
            digest = base64.b64encode(hashlib.sha256(payload).digest()).decode("ascii")
            headers.append(("x-amz-checksum-sha256", digest))
            headers.append(("x-amz-checksum-type", "FULL_OBJECT"))
        return _flip(payload) if owner.corrupt_get else payload

    def _answered_by_rule(self, fault: _Fault) -> bool:
        """Apply what ``fault`` does before forwarding; True when it answered instead of forwarding."""
        kind = fault.kind
        if kind == "delay":
            time.sleep(fault.seconds)
        elif kind == "hold_before_forward":
            self.owner._hold()
        elif kind in _S3_ERRORS:
            self._answer(*_S3_ERRORS[kind])
        elif kind in _FOREIGN:
            self._answer_foreign(*_FOREIGN[kind])
        elif kind == "ok_without_storing":
            self._answer(200, b"", _fake_put_headers())
        else:
            return False
        return kind not in ("delay", "hold_before_forward")

    def _answer_forwarded(self, kind: str | None, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        """Answer the upstream's response, as ``kind`` (a forwarding rule, or None) makes it."""
        if kind == "stored_then_500":
            self._answer(500, _INTERNAL_ERROR)
        elif kind == "stored_then_reset":
            self.owner._record(self, 0)
            self._reset_connection()
        elif kind == "reset_response":
            self._answer_cut(status, headers, payload)
            time.sleep(_RESET_GRACE)
            self._reset_connection()
        elif kind == "short_body":
            self._answer_cut(status, headers, payload)
            self.close_connection = True  # the server closes it: the client meets EOF before Content-Length
        elif kind == "short_body_matching":
            self._answer(status, payload[: len(payload) // 2], headers)
        elif kind == "flip" and self.command == "GET" and 200 <= status < 300 and payload:
            self._answer(status, _flip(payload), headers)
        else:
            self._answer(status, payload, headers)

    def _read_part_of_body(self) -> None:
        """Read about half of a Content-Length body (nothing of a chunked one), as a connection that breaks would."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > 1:
            self.rfile.read(length // 2)

    def _reset_connection(self) -> None:
        """Close the client's connection at once with an RST (SO_LINGER 0), whatever is in flight."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            os.close(sock.detach())  # detached: the server's own shutdown and close then touch no descriptor
        except OSError:
            pass  # the client went first

    def _forward(self, body: bytes, chunked: bool, path: str | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
        owner = self.owner
        conn = http.client.HTTPConnection(owner.upstream_host, owner.upstream_port, timeout=owner.timeout)
        try:
            conn.putrequest(self.command, path or self.path, skip_host=True, skip_accept_encoding=True)
            emulation = owner.emulation
            for name, value in self.headers.items():
                lower = name.lower()
                if lower in _HOP_BY_HOP or (lower == "if-none-match" and owner.strip_if_none_match):
                    continue
                if emulation is not None and emulation.drops(self.command, lower):
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

    def _answer_cut(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        """Send the status line, the headers with the real Content-Length, and only the first half of the body."""
        self.owner._record(self, status)
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length" or self.command == "HEAD":
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload[: len(payload) // 2])
        self.wfile.flush()

    def _answer_foreign(self, status: int, style: str) -> None:
        """An answer from something that is not S3 (an ingress, a Go server): no XML, no x-amz-request-id."""
        reason, text = _FOREIGN_REASONS[status]
        if style == "text":
            self._answer(status, text.encode(), [("Content-Type", "text/plain; charset=utf-8")])
        elif style == "html":
            page = _FOREIGN_HTML.format(status=status, reason=reason).encode()
            self._answer(status, page, [("Content-Type", "text/html")])
        else:
            self._answer(status, b"", [])


def _fake_put_headers() -> list[tuple[str, str]]:
    """Headers like S3's answer to a PUT, but with no checksum and an ETag that is no MD5 of anything sent."""
    return [
        ("x-amz-request-id", secrets.token_hex(8).upper()),
        ("x-amz-id-2", base64.b64encode(secrets.token_bytes(48)).decode("ascii")),
        ("ETag", f'"{secrets.token_hex(16)}"'),
        ("x-amz-server-side-encryption", "AES256"),
    ]


def _replace_key(path: str, host: str, key: str) -> str:
    """``path`` (URL path and query) with its object key replaced by ``key``, for path-style or virtual-hosted URLs."""
    url_path, sep, query = path.partition("?")
    hostname = urllib.parse.urlsplit(f"//{host}").hostname or ""
    try:
        ipaddress.ip_address(hostname)
        path_style = True
    except ValueError:
        path_style = hostname == "localhost"
    if path_style:
        bucket = url_path.lstrip("/").split("/", 1)[0]
        new_path = f"/{bucket}/{urllib.parse.quote(key, safe='/~')}"
    else:
        new_path = f"/{urllib.parse.quote(key, safe='/~')}"
    return new_path + sep + query


def _flip(payload: bytes) -> bytes:
    """Invert a few bytes spread over the body, as a bad disk or a broken middlebox would."""
    data = bytearray(payload)
    for position in {len(data) // 2, len(data) // 3, len(data) - 1, min(len(data) - 1, 64)}:
        data[position] ^= 0xFF
    return bytes(data)
