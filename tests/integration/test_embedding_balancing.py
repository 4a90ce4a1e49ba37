"""Least-outstanding-requests balancing of EmbeddingClient over several real local HTTP
servers (small stand-ins for `bridge serve` replicas that answer after a set delay)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from bridge.clients.embedding import EmbeddingClient, UrlBalancer


class Replica(ThreadingHTTPServer):
    """Answers /v1/embeddings after ``delay`` seconds; counts requests and concurrency."""

    daemon_threads = True

    def __init__(self, delay: float, status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.delay, self.status = delay, status
        self.served = self.active = self.peak = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Replica

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        replica = self.server
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with replica.lock:
            replica.active += 1
            replica.peak = max(replica.peak, replica.active)
        time.sleep(replica.delay)
        with replica.lock:
            replica.active -= 1
            replica.served += 1
        vector = base64.b64encode(np.ones(4, dtype="<f4").tobytes()).decode()
        data = [{"index": i, "embedding": vector} for i in range(len(body["input"]))]
        payload = json.dumps({"data": data} if replica.status == 200 else {"error": {}})
        self.send_response(replica.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload.encode())


@contextmanager
def replicas(*specs: tuple[float, int]) -> Iterator[list[Replica]]:
    servers = [Replica(delay, status) for delay, status in specs]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield servers
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def send_many(client: EmbeddingClient, requests: int, threads: int) -> None:
    with ThreadPoolExecutor(threads) as pool:
        shapes = list(pool.map(lambda i: client.embed([f"text {i}"]).shape, range(requests)))
    assert shapes == [(1, 4)] * requests


def test_sequential_requests_take_the_urls_in_turn():
    with replicas((0, 200), (0, 200), (0, 200)) as servers:
        with EmbeddingClient([s.url for s in servers], retry_for=0) as client:
            send_many(client, 30, threads=1)
        assert [s.served for s in servers] == [10, 10, 10]


def test_concurrent_requests_go_where_fewest_are_in_flight():
    with replicas((0.05, 200), (0.05, 200), (0.05, 200)) as servers:
        with EmbeddingClient([s.url for s in servers], retry_for=0) as client:
            send_many(client, 60, threads=6)
            assert client.balancer.outstanding == [0, 0, 0]
        # fail-over alone would have sent everything to the first URL
        assert all(s.served >= 15 for s in servers), [s.served for s in servers]
        assert max(s.peak for s in servers) <= 3


def test_a_slow_replica_gets_fewer_requests():
    with replicas((0.3, 200), (0.02, 200), (0.02, 200)) as servers:
        with EmbeddingClient([s.url for s in servers], retry_for=0) as client:
            send_many(client, 60, threads=4)
        slow, fast = servers[0].served, min(s.served for s in servers[1:])
        assert slow < fast / 2, [s.served for s in servers]


def test_failing_replica_is_skipped_and_its_requests_answered_elsewhere():
    with replicas((0, 503), (0, 200)) as servers:
        with EmbeddingClient([s.url for s in servers], retry_for=0) as client:
            send_many(client, 20, threads=2)
            assert client.balancer.outstanding == [0, 0]
        assert servers[1].served == 20
        assert servers[0].served <= 2  # tried first once, then set aside for the cooldown


def test_balancer_orders_by_load_then_failure_then_turn():
    balancer = UrlBalancer(3, cooldown=60)
    assert [balancer.order()[0] for _ in range(3)] == [0, 1, 2]
    with balancer.in_flight(0), balancer.in_flight(0), balancer.in_flight(1):
        assert balancer.order()[0] == 2
        balancer.failed(2)
        assert balancer.order() == [1, 0, 2]
    assert balancer.outstanding == [0, 0, 0]


def test_no_urls_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        EmbeddingClient([])
