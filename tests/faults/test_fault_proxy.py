"""The fault proxy itself: forwards requests unchanged, fails exactly the requests it is told."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from helpers import put
from s3_faults import FaultProxy

from vlm_lake.store.object_store import ObjectStore


class _Recorder(BaseHTTPRequestHandler):
    """An upstream that records each request and answers 207 with a fixed body."""

    protocol_version = "HTTP/1.1"
    received: list[dict[str, Any]] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep test output quiet."""

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.received.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": list(self.headers.items()),
                "body": self.rfile.read(length) if length else b"",
            }
        )
        payload = b"upstream body"
        self.send_response(207)
        self.send_header("X-Upstream", "yes")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any  # noqa: N815


@pytest.fixture()
def recording_upstream() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Recorder", (_Recorder,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def _connect(proxy: FaultProxy, timeout: float = 10.0) -> http.client.HTTPConnection:
    parts = urlsplit(proxy.endpoint)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def test_forwards_method_path_query_host_headers_and_body_unchanged(
    recording_upstream: tuple[str, list[dict[str, Any]]],
) -> None:
    upstream, received = recording_upstream
    with FaultProxy(upstream) as proxy:
        assert proxy.endpoint.startswith("http://127.0.0.1:")
        proxy_netloc = urlsplit(proxy.endpoint).netloc
        conn = _connect(proxy)
        signed = {
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request",
            "X-Amz-Date": "20260101T000000Z",
            "X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD",
        }
        path = "/bkt/dir/a%20b+c.jpg?partNumber=2&uploadId=xyz%2F1"
        conn.request("PUT", path, body=b"\x00\xffpayload", headers=signed)
        resp = conn.getresponse()
        assert (resp.status, resp.read(), resp.getheader("X-Upstream")) == (
            207,
            b"upstream body",
            "yes",
        )
        conn.request("HEAD", "/bkt/dir/x.bin")
        head = conn.getresponse()
        head.read()
        assert head.status == 207
        assert head.getheader("Content-Length") == str(len(b"upstream body"))
        conn.close()

    put_req, head_req = received
    assert put_req["method"] == "PUT"
    assert put_req["path"] == path  # percent-encoding and query kept byte for byte
    assert put_req["body"] == b"\x00\xffpayload"
    headers = {k.lower(): v for k, v in put_req["headers"]}
    # The Host the client signed (the proxy's address) reaches the server unchanged.
    assert headers["host"] == proxy_netloc
    for name, value in signed.items():
        assert headers[name.lower()] == value
    assert head_req["method"] == "HEAD"
    assert [(r.method, r.path, r.host, r.status) for r in proxy.requests] == [
        ("PUT", "/bkt/dir/a%20b+c.jpg", proxy_netloc, 207),
        ("HEAD", "/bkt/dir/x.bin", proxy_netloc, 207),
    ]
    assert proxy.requests[0].query == "partNumber=2&uploadId=xyz%2F1"


def _presigned(store: ObjectStore, operation: str, **params: str) -> str:
    """A signed path+query for ``operation``, addressed to the store's endpoint (the proxy)."""
    url = urlsplit(store.client.generate_presigned_url(operation, Params=params, ExpiresIn=600))
    return f"{url.path}?{url.query}"


def test_faults_hit_only_the_first_n_matching_requests(
    faulty_s3: FaultProxy, proxy_store: ObjectStore, s3_store: ObjectStore, bucket: str
) -> None:
    put(s3_store.client, bucket, "a.bin", b"AAAA")
    put(s3_store.client, bucket, "b.bin", b"BBBB")
    slow = faulty_s3.add_fault("slowdown", method="GET", path=r"/a\.bin$", times=2)
    internal = faulty_s3.add_fault("internal", method="GET", query="list-type=2", times=1)
    get_a = _presigned(proxy_store, "get_object", Bucket=bucket, Key="a.bin")
    get_b = _presigned(proxy_store, "get_object", Bucket=bucket, Key="b.bin")
    listing = _presigned(proxy_store, "list_objects_v2", Bucket=bucket)
    conn = _connect(faulty_s3)

    def get(path: str) -> tuple[int, bytes]:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()

    status, body = get(get_a)
    assert status == 503
    assert b"<Code>SlowDown</Code>" in body
    assert get(get_b) == (200, b"BBBB")  # another key: not matched
    assert get(get_a)[0] == 503
    assert get(get_a) == (200, b"AAAA")  # the rule is used up
    status, body = get(listing)
    assert (status, b"<Code>InternalError</Code>" in body) == (500, True)
    status, body = get(listing)
    assert (status, b"<Key>a.bin</Key>" in body) == (200, True)
    conn.close()
    assert (slow.hits, internal.hits) == (2, 1)
    assert [(r.method, r.path, r.status, r.fault) for r in faulty_s3.requests] == [
        ("GET", f"/{bucket}/a.bin", 503, "slowdown"),
        ("GET", f"/{bucket}/b.bin", 200, None),
        ("GET", f"/{bucket}/a.bin", 503, "slowdown"),
        ("GET", f"/{bucket}/a.bin", 200, None),
        ("GET", f"/{bucket}", 500, "internal"),
        ("GET", f"/{bucket}", 200, None),
    ]
    assert "list-type=2" in faulty_s3.requests[-1].query


def test_drop_delay_and_truncate_break_the_connection(
    faulty_s3: FaultProxy, proxy_store: ObjectStore, s3_store: ObjectStore, bucket: str
) -> None:
    put(s3_store.client, bucket, "c.bin", b"0123456789")
    faulty_s3.add_fault("drop", method="GET", path=r"/c\.bin$", times=1)
    faulty_s3.add_fault("delay", method="GET", path=r"/c\.bin$", times=1, delay_s=5)
    faulty_s3.add_fault("truncate", method="GET", path=r"/c\.bin$", times=1)
    get_c = _presigned(proxy_store, "get_object", Bucket=bucket, Key="c.bin")

    conn = _connect(faulty_s3)
    conn.request("GET", get_c)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    conn.close()

    conn = _connect(faulty_s3, timeout=0.5)
    conn.request("GET", get_c)
    with pytest.raises(socket.timeout):
        conn.getresponse()  # nothing comes back within the client's timeout
    conn.close()

    conn = _connect(faulty_s3)
    conn.request("GET", get_c)
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as cut:
        resp.read()
    assert cut.value.partial == b"01234"
    conn.close()

    assert [(r.fault, r.status) for r in faulty_s3.requests] == [
        ("drop", None),
        ("delay", None),
        ("truncate", 200),
    ]


def test_add_fault_rejects_unknown_kinds_and_counts(faulty_s3: FaultProxy) -> None:
    with pytest.raises(ValueError, match=r"kind='teapot' is not a fault kind; allowed: "):
        faulty_s3.add_fault("teapot")
    with pytest.raises(ValueError, match=r"times=0 must be at least 1"):
        faulty_s3.add_fault("drop", times=0)
