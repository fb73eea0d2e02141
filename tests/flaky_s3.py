"""A loopback HTTP proxy in front of an S3-compatible (or any HTTP) server that fails some
requests on demand.

Real transient faults for tests: readers talk to the proxy's URL (``S3Config(endpoint_url=
proxy.url)``) and every request is forwarded to the real server, except the next ``n`` GETs
whose path matches a pattern, which get an S3 error answer (by default ``503 SlowDown``, as
AWS throttles). Every request is recorded, so a test can count how often an object was read.
"""

from __future__ import annotations

import http.client
import random
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Headers that belong to one connection, not to the message (never forwarded as they are).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
                         "upgrade", "content-length"})


@dataclass(frozen=True)
class Seen:
    """One request the proxy received, and what it answered."""

    method: str
    path: str
    range: str | None
    status: int


@dataclass
class _Fault:
    pattern: re.Pattern[str]
    remaining: int
    status: int
    code: str
    drop: bool = False  # close the connection without an answer
    method: str = "GET"


@dataclass
class _Weather:
    """Faults on a share of every request (any method) whose target matches ``pattern``."""

    pattern: re.Pattern[str]
    fraction: float
    drop_share: float
    rng: random.Random


class FlakyS3Proxy:
    """Forward HTTP to ``upstream``; answer the next armed GETs with an S3 error instead.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._weather: _Weather | None = None
        self.injected = 0
        self.seen: list[Seen] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as curl and botocore expect

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._take_fault(self.command, f"{self.path} {self.headers.get('Range') or ''}")
                if fault is not None and fault.drop:  # a connection dropped mid-request: no answer at all
                    proxy._record(Seen(self.command, self.path, self.headers.get("Range"), 0))
                    self.close_connection = True
                    return
                if fault is not None:
                    status, headers, payload = _error_answer(fault, self.path)
                else:
                    status, headers, payload = proxy._forward(self.command, self.path, dict(self.headers), body)
                proxy._record(Seen(self.command, self.path, self.headers.get("Range"), status))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if not any(name.lower() == "content-length" for name, _ in headers):
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="flaky-s3-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the endpoint to give readers."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(self, n: int, path_regex: str, *, status: int = 503, code: str = "SlowDown",
                  method: str = "GET") -> None:
        """Answer the next ``n`` requests of ``method`` (GETs by default) matching ``path_regex``
        with ``status`` and an S3 ``<Error><Code>code</Code>`` body (replaces any fault still armed).

        The pattern is searched in ``"<path> <Range header>"`` (``"/bkt/x.tif bytes=16384-32767"``),
        so that a fault can spare an object's header (``bytes=0-...``) and hit its data only.
        """
        with self._lock:
            self._faults = [_Fault(re.compile(path_regex), n, status, code, method=method)]

    def fail_fraction(self, fraction: float, path_regex: str = "", *, drop_share: float = 0.25,
                      seed: int = 0) -> None:
        """From now on answer a ``fraction`` of the requests (any method) matching ``path_regex``
        with a fault: a dropped connection for ``drop_share`` of them, else ``500
        InternalError`` or ``503 SlowDown`` (half each); seeded, so a run is repeatable as far as
        the order of requests is. ``fraction=1`` is an endpoint that is down for good.
        ``injected`` counts the faults."""
        with self._lock:
            self._weather = _Weather(re.compile(path_regex), fraction, drop_share, random.Random(seed))

    def stop_failing(self) -> None:
        """Forward every request again (faults still armed are dropped)."""
        with self._lock:
            self._faults = []
            self._weather = None

    def clear(self) -> None:
        """Forget armed faults and recorded requests."""
        with self._lock:
            self._faults = []
            self.seen = []

    def gets(self, path_regex: str) -> list[Seen]:
        """The GETs received so far matching ``path_regex`` (as in :meth:`fail_next`), failed or
        forwarded."""
        pattern = re.compile(path_regex)
        with self._lock:
            return [s for s in self.seen if s.method == "GET" and pattern.search(f"{s.path} {s.range or ''}")]

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FlakyS3Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take_fault(self, method: str, target: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if method == fault.method and fault.remaining > 0 and fault.pattern.search(target):
                    fault.remaining -= 1
                    self.injected += 1
                    return fault
            w = self._weather
            if w is not None and w.pattern.search(target) and w.rng.random() < w.fraction:
                self.injected += 1
                if w.rng.random() < w.drop_share:
                    return _Fault(w.pattern, 0, 0, "", drop=True)
                status, code = (500, "InternalError") if w.rng.random() < 0.5 else (503, "SlowDown")
                return _Fault(w.pattern, 0, status, code)
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _forward(self, method: str, path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self._upstream, timeout=30)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
            conn.request(method, path, body=body if body or method in ("PUT", "POST") else None, headers=sent)
            resp = conn.getresponse()
            payload = resp.read()
            kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            if method == "HEAD":  # no body, but the size of the one a GET would get
                kept += [(k, v) for k, v in resp.getheaders() if k.lower() == "content-length"]
                payload = b""
            return resp.status, kept, payload
        finally:
            conn.close()


def _error_answer(fault: _Fault, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{fault.code}</Code><Message>injected by the test proxy</Message>"
        f"<Resource>{path}</Resource><RequestId>flaky-0001</RequestId></Error>"
    ).encode()
    return fault.status, [("Content-Type", "application/xml"), ("x-amz-request-id", "flaky-0001")], body
