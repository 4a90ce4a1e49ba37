"""A wrong engine URL fails at once with a hint; retries start only once it has answered,
and are announced as they start (real HTTP on loopback, no engine)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bridge.clients.engine import EngineClient
from bridge.clients.errors import ClientError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_url_that_never_answered_fails_at_once():
    client = EngineClient(f"http://127.0.0.1:{closed_port()}", retry_for=60)
    started = time.monotonic()
    with pytest.raises(ClientError, match="is it running, and is this its URL"):
        client.request("GET", "/")
    assert time.monotonic() - started < 5


class Flaky(BaseHTTPRequestHandler):
    answers = [503, 200]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        status = self.answers.pop(0) if self.answers else 200
        body = b'{"ok": true}'
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_retries_are_announced_when_they_start(caplog):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = EngineClient(f"http://127.0.0.1:{server.server_port}", retry_for=30)
        with caplog.at_level(logging.WARNING, logger="bridge.clients.engine"):
            assert client.request("GET", "/") == {"ok": True}
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 1 and "(HTTP 503)" in said[0] and "retrying http://127.0.0.1" in said[0]
    finally:
        server.shutdown()


class BulkRecorder(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.bodies.append(self.rfile.read(int(self.headers["content-length"])))
        body = b'{"errors": false, "items": []}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_bulk_writes_float32_vectors_with_their_own_shortest_digits():
    """Vectors go out as float32 arrays: each value in float32's shortest digits (about
    half the bytes of the same values as Python floats), parsing back to the same float32."""
    import json

    import numpy as np

    vector = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BulkRecorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = EngineClient(f"http://127.0.0.1:{server.server_port}")
        doc = {"v": vector, "passages": [{"start": 0, "end": 3, "embedding": vector}]}
        client.bulk([{"index": {"_id": "a"}}, doc])
    finally:
        server.shutdown()
    sent = json.loads(BulkRecorder.bodies[-1].splitlines()[1])
    assert np.array_equal(np.asarray(sent["v"], dtype=np.float32), vector)
    assert sent["passages"][0]["embedding"] == sent["v"]
    as_doubles = len(json.dumps(vector.tolist()))
    assert len(json.dumps(sent["v"])) < 0.7 * as_doubles
