"""dense_vector, kNN and BM25 on a real Elasticsearch node on loopback."""

from __future__ import annotations

import time

import elasticsearch
import pytest
from elasticsearch import Elasticsearch

from bridge.nodes.distribution import ELASTICSEARCH_VERSION

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def es(elasticsearch_url) -> Elasticsearch:
    return Elasticsearch(elasticsearch_url, request_timeout=120)


def server_version(es: Elasticsearch) -> str:
    # The integ-test-zip lacks the rest-root module, so GET / (client.info()) is 405 there.
    nodes = es.nodes.info(metric="settings")["nodes"]
    return next(iter(nodes.values()))["version"]


def test_client_major_matches_server(es):
    server_major = int(server_version(es).split(".")[0])
    assert elasticsearch.__versionstr__.split(".")[0] == str(server_major) == "9"
    # The node writes its basic licence just after it forms the cluster: wait for it.
    deadline = time.monotonic() + 60
    while True:
        try:
            license_type = es.license.get()["license"]["type"]
            break
        except elasticsearch.NotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert license_type == "basic"


@pytest.mark.parametrize("index_type", ["hnsw", "int8_hnsw", "bbq_hnsw"])
def test_dense_vector_knn_and_bm25(es, index_type):
    index = f"vectors-{index_type.replace('_', '-')}"
    dims = 64  # bbq_hnsw needs at least 64 dimensions
    es.indices.create(
        index=index,
        mappings={
            "properties": {
                "text": {"type": "text"},
                "vec": {
                    "type": "dense_vector",
                    "dims": dims,
                    "similarity": "cosine",
                    "index_options": {"type": index_type},
                },
            }
        },
    )
    texts = ["red apple pie", "green apple tree", "blue ocean waves", "red sunset sky"]
    for i, text in enumerate(texts):
        vec = [0.0] * dims
        vec[i] = 1.0
        vec[(i + 1) % dims] = 0.1
        es.index(index=index, id=str(i), document={"text": text, "vec": vec})
    es.indices.refresh(index=index)
    query = [0.0] * dims
    query[2] = 1.0
    knn = es.search(
        index=index, knn={"field": "vec", "query_vector": query, "k": 2, "num_candidates": 10}
    )
    assert knn["hits"]["hits"][0]["_id"] == "2"
    bm25 = es.search(index=index, query={"match": {"text": "apple"}})
    assert {h["_id"] for h in bm25["hits"]["hits"]} == {"0", "1"}
    both = es.search(
        index=index,
        query={"match": {"text": {"query": "red", "boost": 0.3}}},
        knn={"field": "vec", "query_vector": query, "k": 2, "num_candidates": 10, "boost": 0.7},
        size=4,
    )
    ids = [h["_id"] for h in both["hits"]["hits"]]
    assert ids[0] == "2" and {"0", "3"} <= set(ids)


def test_root_endpoint_answers_like_a_normal_node(es):
    # This distribution lacks the rest-root module (GET / answered 405, and standard clients'
    # info() failed); the bridge's ingest plugin, installed by `bridge engine start`, adds it.
    info = es.info()
    assert info["version"]["number"] == ELASTICSEARCH_VERSION
    assert info["tagline"] and info["cluster_name"]
