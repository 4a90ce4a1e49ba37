"""Faults with real processes: each run ends with every document indexed exactly once.

The embedding service is killed mid-ingest and restarted; the engine answers 429 (a
write queue of one); the engine restarts mid-ingest; a request too large for the service
is refused while the others are served; keys never reach logs or metrics.
"""

from __future__ import annotations

import os
import threading
import time

import httpx
import pytest

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.index.ingest import Indexer, as_docs
from bridge.index.setup import setup_index
from bridge.nodes import cluster
from bridge.server.app import ServerSettings

from conftest import (
    Background,
    ServiceProcess,
    assert_exactly_once,
    corpus,
    free_port_pair,
    live_server,
    make_service,
    wait_count,
)

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("mode", ["bridge", "native"])
def test_service_killed_mid_ingest(opensearch_url, mode):
    service = ServiceProcess("--model", "minilm", "--device", "cpu").start()
    engine = EngineClient(opensearch_url)
    embedder = EmbeddingClient(service.url, retry_for=120)
    try:
        meta, _ = setup_index(
            engine, embedder, f"fault-service-{mode}", 384, mode,
            bridge_url=service.url, replicas=0,
        )  # fmt: skip
        docs = corpus(600, mode)
        indexer = Indexer(engine, meta, embedder, batch_size=16, progress=False, retry_for=120)
        ingest = Background(indexer, docs)
        wait_count(engine, meta.index, 100)
        service.kill()
        time.sleep(2)
        service.start()
        summary = ingest.join()
    finally:
        service.stop()
    assert summary.failed == [] and summary.indexed == len(docs)
    assert_exactly_once(engine, meta.index, docs)


@pytest.fixture(scope="module")
def busy_elasticsearch():
    """A single Elasticsearch node with a write pool of one thread and a queue of one."""
    port = free_port_pair()
    settings = {"thread_pool.write.size": 1, "thread_pool.write.queue_size": 1}
    state = cluster.start("elasticsearch", port=port, fresh=True, progress=False, settings=settings)
    try:
        yield state
    finally:
        cluster.stop("elasticsearch", port, wipe=True)


def rejected_writes(engine: EngineClient) -> int:
    stats = engine.request("GET", "/_nodes/stats/thread_pool")
    return sum(n["thread_pool"]["write"]["rejected"] for n in stats["nodes"].values())


def test_engine_429_then_restart_mid_ingest(busy_elasticsearch, qwen3_server):
    state = busy_elasticsearch
    engine = EngineClient(state.url, retry_for=120)
    embedder = EmbeddingClient(qwen3_server.url)
    meta, _ = setup_index(engine, embedder, "busy", 64, "bridge", shards=4, replicas=0)

    # Four bulks in flight, each split over four shards: the queue of one overflows.
    first = corpus(1500, "busy")
    indexer = Indexer(
        engine, meta, embedder, batch_size=50, concurrency=4, progress=False, retry_for=120
    )
    summary = indexer.ingest(as_docs(first))
    assert rejected_writes(engine) > 0, "the engine never answered 429: the test tests nothing"
    assert summary.failed == [] and summary.indexed == len(first)
    assert_exactly_once(engine, meta.index, first)

    # Now the node goes down and comes back while documents keep coming.
    second = corpus(1500, "restart")
    indexer = Indexer(engine, meta, embedder, batch_size=20, progress=False, retry_for=120)
    ingest = Background(indexer, second)
    wait_count(engine, meta.index, len(first) + 200)
    cluster.stop_node(state.nodes[0])
    cluster.restart_node(state, 0)
    summary = ingest.join()
    assert summary.failed == [] and summary.indexed == len(second)
    assert_exactly_once(engine, meta.index, first + second)


def test_too_large_request_refused_others_served(tiny_qwen3_dir):
    """A request that can never fit is 413 at once; concurrent normal requests all pass."""
    service = make_service(tiny_qwen3_dir, max_batch_tokens=256, max_queue_tokens=2048)
    with live_server(service) as server:
        statuses: list[int] = []
        stop = threading.Event()

        def normal():
            with httpx.Client(timeout=60) as http:
                while not stop.is_set():
                    body = {"input": ["cats and dogs"] * 4}
                    statuses.append(http.post(server.url + "/v1/embeddings", json=body).status_code)

        threads = [threading.Thread(target=normal) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            huge = {"input": ["cats dogs fish birds " * 100] * 40}  # ~16k tokens > the queue
            refused = httpx.post(server.url + "/v1/embeddings", json=huge, timeout=60)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"]["code"] == "too_large"
        assert statuses and set(statuses) == {200}


def test_keys_never_in_logs_or_metrics():
    good, wrong = "sk-live-GOODKEY-0123456789", "sk-live-WRONGKEY-9876543210"
    service = ServiceProcess(
        "--model", "minilm", "--device", "cpu", "--api-key", good, "--log-level", "debug"
    ).start()
    try:
        body = {"input": "hello"}
        ok = httpx.post(
            service.url + "/v1/embeddings", json=body, headers={"authorization": f"Bearer {good}"}
        )
        assert ok.status_code == 200
        bad = httpx.post(
            service.url + "/v1/embeddings", json=body, headers={"authorization": f"Bearer {wrong}"}
        )
        assert bad.status_code == 401 and wrong not in bad.text and good not in bad.text
        metrics = httpx.get(service.url + "/metrics").text
    finally:
        service.stop()
    for secret in (good, wrong):
        assert secret not in metrics
        assert secret.encode() not in service.log
    assert b"unknown API key (401)" in service.log  # logged, without the key


def test_key_file_rotates_without_restart(tiny_qwen3_dir, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("sk-old-one\n# comment lines are ignored\nsk-other\n")
    service = make_service(tiny_qwen3_dir)
    settings = ServerSettings(api_key_file=str(keys))
    with live_server(service, settings) as server:

        def status(key: str) -> int:
            headers = {"authorization": f"Bearer {key}"}
            body = {"input": "cats"}
            return httpx.post(server.url + "/v1/embeddings", json=body, headers=headers).status_code

        assert status("sk-old-one") == 200 and status("sk-other") == 200
        assert status("sk-new-one") == 401
        keys.write_text("sk-new-one\n")
        os.utime(keys, (time.time() + 5, time.time() + 5))  # a visible change of mtime
        assert status("sk-new-one") == 200
        assert status("sk-old-one") == 401 and status("sk-other") == 401
