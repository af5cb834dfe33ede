"""A fault-injecting HTTP proxy in front of the S3 test server (moto), on 127.0.0.1.

Clients (boto3, Lance's object_store) are pointed at :attr:`FaultProxy.endpoint`; every
request is forwarded unchanged to the upstream S3 server (method, path, query, headers with
the client's own ``Host``, body), so SigV4 signatures computed by the client stay valid.
Rules added with :meth:`FaultProxy.add_fault` make the first N matching requests fail the
way real S3 does under stress, and every request is recorded so tests can assert that a
fault was hit and then retried.

Fault kinds:

- ``"slowdown"``: HTTP 503 with S3's ``SlowDown`` XML error body (throttling).
- ``"internal"``: HTTP 500 with S3's ``InternalError`` XML error body.
- ``"delay"``: accept the request, answer nothing for ``delay_s`` seconds, then close the
  connection (set ``delay_s`` above the client's read timeout to produce a timeout).
- ``"drop"``: close the connection without any response.
- ``"truncate"``: forward the request but send only the first half of the response body
  (with the full ``Content-Length``), then close: a connection lost mid-download.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULT_KINDS = ("slowdown", "internal", "delay", "drop", "truncate")

#: Headers that describe one hop, never forwarded as they are.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
}

_ERROR_BODIES = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal": (500, "InternalError", "We encountered an internal error. Please try again."),
}


@dataclass
class FaultRule:
    """Fail the first ``times`` requests that match ``method``, ``path`` and ``query``.

    Attributes:
        kind: One of :data:`FAULT_KINDS`.
        method: HTTP method to match (``GET``, ``PUT`` ...), or None for any.
        path: Regular expression searched in the request path (without the query).
        query: A substring the raw query string must contain, or None for any.
        times: How many matching requests fail; later ones pass through.
        delay_s: Seconds a ``delay`` fault holds the request before closing it.
        hits: How many requests this rule has failed so far.
    """

    kind: str
    method: str | None
    path: str
    query: str | None
    times: int
    delay_s: float
    hits: int = 0
    _regex: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._regex = re.compile(self.path)

    def matches(self, method: str, path: str, query: str) -> bool:
        """Whether a request is one this rule targets (ignoring how many it has failed)."""
        if self.method is not None and method != self.method:
            return False
        if self.query is not None and self.query not in query:
            return False
        return self._regex.search(path) is not None


@dataclass
class RequestRecord:
    """One request the proxy saw.

    Attributes:
        method: HTTP method.
        path: Path without the query, as sent (``/bucket/key``).
        query: Raw query string ('' if none).
        host: The ``Host`` header the client sent (and the proxy forwarded).
        fault: The injected fault kind, or None if the request was forwarded.
        status: HTTP status sent back, or None when no response was sent (delay, drop).
    """

    method: str
    path: str
    query: str
    host: str
    fault: str | None = None
    status: int | None = None

    @property
    def line(self) -> str:
        """``METHOD /path?query -> status [fault]`` for assertion messages."""
        q = f"?{self.query}" if self.query else ""
        f = f" [{self.fault}]" if self.fault else ""
        return f"{self.method} {self.path}{q} -> {self.status}{f}"


class FaultProxy:
    """A threaded HTTP proxy to an S3 endpoint that injects faults by rule.

    Args:
        upstream: The S3 server's endpoint, ``http://127.0.0.1:PORT``.
    """

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream={upstream!r} must be http://host:port")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self._rules: list[FaultRule] = []
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="s3-fault-proxy",
            daemon=True,
        )

    @property
    def endpoint(self) -> str:
        """The proxy's endpoint URL, to use instead of the upstream one."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        """Start serving in a background thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests held by ``delay`` faults are released at once."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_fault(
        self,
        kind: str,
        *,
        method: str | None = None,
        path: str = ".*",
        query: str | None = None,
        times: int = 1,
        delay_s: float = 5.0,
    ) -> FaultRule:
        """Make the first ``times`` matching requests fail with ``kind``.

        Rules are checked in the order they were added; the first one that matches and
        still has failures left applies.

        Args:
            kind: One of :data:`FAULT_KINDS`.
            method: HTTP method to match, or None for any.
            path: Regular expression searched in the request path (``/bucket/key``).
            query: Substring the query string must contain, or None for any.
            times: Number of matching requests to fail (at least 1).
            delay_s: For ``delay``: seconds to hold the request before closing it.

        Returns:
            The rule, whose ``hits`` counts the requests it failed.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind={kind!r} is not a fault kind; allowed: {FAULT_KINDS}")
        if times < 1:
            raise ValueError(f"times={times!r} must be at least 1")
        rule = FaultRule(kind, method.upper() if method else None, path, query, times, delay_s)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_faults(self) -> None:
        """Remove every rule (requests already held by a delay stay held)."""
        with self._lock:
            self._rules.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request seen so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._records)

    def lines(self) -> list[str]:
        """Every request as a ``METHOD /path -> status [fault]`` line."""
        return [r.line for r in self.requests]

    def wait_for(
        self, predicate: Callable[[list[RequestRecord]], bool], timeout_s: float = 30.0
    ) -> list[RequestRecord]:
        """Poll the recorded requests until ``predicate`` holds.

        Raises:
            TimeoutError: If it does not hold within ``timeout_s`` (with the request log).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            seen = self.requests
            if predicate(seen):
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"condition not met within {timeout_s}s; requests:\n"
                    + "\n".join(r.line for r in seen)
                )
            time.sleep(0.02)

    # -- used by the handler -------------------------------------------------------------

    def _arrive(
        self, method: str, path: str, query: str, host: str
    ) -> tuple[RequestRecord, FaultRule | None]:
        record = RequestRecord(method, path, query, host)
        with self._lock:
            self._records.append(record)
            for rule in self._rules:
                if rule.hits < rule.times and rule.matches(method, path, query):
                    rule.hits += 1
                    record.fault = rule.kind
                    return record, rule
        return record, None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Silence the per-request stderr log; requests are recorded instead."""

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self.server.proxy
        path, _, query = self.path.partition("?")
        host = self.headers.get("Host", "")
        body = self._body()
        record, rule = proxy._arrive(self.command, path, query, host)
        kind = rule.kind if rule else None
        if kind in _ERROR_BODIES:
            status, code, message = _ERROR_BODIES[kind]  # type: ignore[index]
            self._send_error(record, status, code, message, path)
            return
        if kind == "drop":
            self._abort()
            return
        if kind == "delay":
            assert rule is not None
            proxy._stopping.wait(rule.delay_s)
            self._abort()
            return
        status, headers, data = self._forward(body)
        record.status = status
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if self.command == "HEAD" or status in (204, 304):
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if kind == "truncate" and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._abort()
            return
        self.wfile.write(data)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        proxy = self.server.proxy
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():  # Host included, exactly as signed
                if name.lower() not in _HOP_BY_HOP:
                    conn.putheader(name, value)
            if body or self.command in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            keep = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            if self.command == "HEAD":
                keep += [(k, v) for k, v in resp.getheaders() if k.lower() == "content-length"]
            return resp.status, keep, data
        finally:
            conn.close()

    def _send_error(
        self, record: RequestRecord, status: int, code: str, message: str, path: str
    ) -> None:
        record.status = status
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<Resource>{path}</Resource><RequestId>fault-{id(record):x}</RequestId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        if self.command == "HEAD":
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        self.wfile.write(xml)

    def _abort(self) -> None:
        """Close the connection at once, without (the rest of) a response."""
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client may have gone already (timed out)
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815
