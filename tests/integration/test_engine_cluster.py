"""A three-node OpenSearch cluster on loopback: replicas survive a node going down."""

from __future__ import annotations

import time

import pytest
from opensearchpy import OpenSearch

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.index.ingest import Indexer
from bridge.index.setup import setup_index
from bridge.nodes import cluster

from conftest import free_port_pair

pytestmark = pytest.mark.engine


def wait_health(client: OpenSearch, index: str = "", **query: str) -> dict:
    # opensearch-py takes a "timeout" parameter as its own HTTP timeout: build the URL here.
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    return client.transport.perform_request("GET", f"/_cluster/health/{index}?{qs}")


@pytest.fixture(scope="module")
def three_nodes():
    port = free_port_pair()
    state = cluster.start("opensearch", port=port, nodes=3, heap="512m", fresh=True, progress=False)
    try:
        yield state
    finally:
        cluster.stop("opensearch", port, wipe=True)


def test_three_node_cluster_survives_a_node_loss(three_nodes):
    state = three_nodes
    client = OpenSearch(state.url, timeout=120)
    health = client.cluster.health()
    assert health["number_of_nodes"] == 3 and health["status"] == "green"
    client.indices.create(
        index="spread",
        body={"settings": {"number_of_shards": 3, "number_of_replicas": 1}},
    )
    body = []
    for i in range(300):
        body += [{"index": {"_index": "spread", "_id": str(i)}}, {"n": i}]
    assert not client.bulk(body=body, refresh=True)["errors"]
    wait_health(client, "spread", wait_for_status="green", timeout="60s")

    cluster.stop_node(state.nodes[2])
    wait_health(client, wait_for_nodes="2", timeout="90s")
    # Every document is still searchable through the surviving nodes.
    assert client.count(index="spread")["count"] == 300
    assert client.cluster.health(index="spread")["status"] in {"yellow", "green"}

    cluster.restart_node(state, 2)
    health = wait_health(client, wait_for_nodes="3", wait_for_status="green", timeout="120s")
    assert health["number_of_nodes"] == 3
    assert client.count(index="spread")["count"] == 300


def test_status_and_second_start_refused(three_nodes):
    port = three_nodes.nodes[0].http_port
    assert cluster.status("opensearch", port) is not None
    with pytest.raises(cluster.EngineError, match="already running"):
        cluster.start("opensearch", port=port, progress=False)


def test_ingest_rides_out_a_node_restart(three_nodes, qwen3_server):
    """Documents keep coming while one of three nodes stops and rejoins: none lost."""
    from test_faults import Background, assert_exactly_once, corpus, wait_count

    state = three_nodes
    engine = EngineClient(state.url, retry_for=120)
    embedder = EmbeddingClient(qwen3_server.url)
    meta, _ = setup_index(engine, embedder, "moving", 64, "bridge", shards=3, replicas=1)
    docs = corpus(2000, "node")
    ingest = Background(
        Indexer(engine, meta, embedder, batch_size=20, progress=False, retry_for=120), docs
    )
    wait_count(engine, meta.index, 300)
    cluster.stop_node(state.nodes[2])
    time.sleep(3)
    cluster.restart_node(state, 2)
    summary = ingest.join()
    assert summary.failed == [] and summary.indexed == len(docs)
    assert_exactly_once(engine, meta.index, docs)
