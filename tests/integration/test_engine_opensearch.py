"""Each capability the bridge needs, proven on a real OpenSearch node on loopback."""

from __future__ import annotations

import pytest
from opensearchpy import OpenSearch

from bridge.server.app import ServerSettings

from conftest import live_server, make_service

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def client(opensearch_url) -> OpenSearch:
    return OpenSearch(opensearch_url, timeout=120)


@pytest.fixture(scope="module")
def bridge_url():
    service = make_service("minilm")
    with live_server(service, ServerSettings(api_keys=["os-key"])) as server:
        yield server.url


def test_plugins_present(client):
    names = {p["component"] for p in client.cat.plugins(format="json")}
    assert {
        "opensearch-knn",
        "opensearch-ml",
        "opensearch-neural-search",
        "opensearch-job-scheduler",
    } <= names
    assert client.info()["version"]["number"].startswith("3.")


def test_knn_vector_lucene(client):
    client.indices.create(
        index="knn-lucene",
        body={
            "settings": {"index.knn": True},
            "mappings": {
                "properties": {
                    "v": {
                        "type": "knn_vector",
                        "dimension": 3,
                        "method": {"name": "hnsw", "engine": "lucene", "space_type": "l2"},
                    }
                }
            },
        },
    )
    for i, vec in enumerate([[1, 0, 0], [0, 1, 0], [0, 0, 1]]):
        client.index(index="knn-lucene", body={"v": vec}, id=str(i), refresh=True)
    hits = client.search(
        index="knn-lucene", body={"query": {"knn": {"v": {"vector": [0, 0.9, 0.1], "k": 2}}}}
    )["hits"]["hits"]
    assert hits[0]["_id"] == "1"


def register_bridge_model(client: OpenSearch, bridge_url: str) -> str:
    """An ml-commons HTTP connector to the bridge, registered and deployed as a model."""
    client.cluster.put_settings(
        body={
            "persistent": {
                "plugins.ml_commons.connector.private_ip_enabled": True,
                "plugins.ml_commons.trusted_connector_endpoints_regex": [
                    r"^http://127\.0\.0\.1:[0-9]+/.*$"
                ],
            }
        }
    )
    connector = client.transport.perform_request(
        "POST",
        "/_plugins/_ml/connectors/_create",
        body={
            "name": "bridge",
            "description": "embedding bridge",
            "version": 1,
            "protocol": "http",
            "parameters": {"model": "minilm"},
            "credential": {"api_key": "os-key"},
            "actions": [
                {
                    "action_type": "predict",
                    "method": "POST",
                    "url": f"{bridge_url}/v1/embeddings",
                    "headers": {"Authorization": "Bearer ${credential.api_key}"},
                    "request_body": '{"input": ${parameters.input}, '
                    '"model": "${parameters.model}"}',
                    "pre_process_function": "connector.pre_process.openai.embedding",
                    "post_process_function": "connector.post_process.openai.embedding",
                }
            ],
        },
    )
    model = client.transport.perform_request(
        "POST",
        "/_plugins/_ml/models/_register",
        params={"deploy": "true"},
        body={
            "name": "bridge-minilm",
            "function_name": "remote",
            "connector_id": connector["connector_id"],
        },
    )
    return model["model_id"]


@pytest.fixture(scope="module")
def model_id(client, bridge_url) -> str:
    return register_bridge_model(client, bridge_url)


def test_connector_predicts(client, model_id):
    out = client.transport.perform_request(
        "POST",
        f"/_plugins/_ml/models/{model_id}/_predict",
        body={"parameters": {"input": ["hello world", "second text"]}},
    )
    outputs = out["inference_results"][0]["output"]
    assert len(outputs) == 2 and outputs[0]["shape"] == [384]


@pytest.fixture(scope="module")
def neural_index(client, model_id) -> str:
    client.ingest.put_pipeline(
        id="bridge-embed",
        body={
            "processors": [
                {
                    "text_embedding": {
                        "model_id": model_id,
                        "field_map": {"text": "vec"},
                        "batch_size": 8,
                    }
                }
            ]
        },
    )
    client.indices.create(
        index="docs",
        body={
            "settings": {"index.knn": True, "default_pipeline": "bridge-embed"},
            "mappings": {
                "properties": {
                    "text": {"type": "text"},
                    "vec": {
                        "type": "knn_vector",
                        "dimension": 384,
                        "method": {
                            "name": "hnsw",
                            "engine": "lucene",
                            "space_type": "innerproduct",
                        },
                    },
                }
            },
        },
    )
    docs = {
        "cat": "cats are small furry animals that purr",
        "engine": "opensearch is a distributed search engine",
        "pasta": "fresh pasta recipes from italy",
    }
    body = []
    for doc_id, text in docs.items():
        body += [{"index": {"_index": "docs", "_id": doc_id}}, {"text": text}]
    result = client.bulk(body=body, refresh=True)
    assert not result["errors"], result
    return "docs"


def test_text_embedding_processor_fills_vectors(client, neural_index):
    doc = client.get(index=neural_index, id="cat")["_source"]
    assert len(doc["vec"]) == 384
    assert abs(sum(x * x for x in doc["vec"]) - 1.0) < 1e-3


def test_hybrid_query_with_normalization_pipeline(client, neural_index, model_id):
    client.transport.perform_request(
        "PUT",
        "/_search/pipeline/hybrid-minmax",
        body={
            "phase_results_processors": [
                {
                    "normalization-processor": {
                        "normalization": {"technique": "min_max"},
                        "combination": {
                            "technique": "arithmetic_mean",
                            "parameters": {"weights": [0.3, 0.7]},
                        },
                    }
                }
            ]
        },
    )
    body = {
        "query": {
            "hybrid": {
                "queries": [
                    {"match": {"text": "search engine"}},
                    {"neural": {"vec": {"query_text": "kittens", "model_id": model_id, "k": 3}}},
                ]
            }
        }
    }
    hits = client.search(index=neural_index, body=body, params={"search_pipeline": "hybrid-minmax"})
    ids = [h["_id"] for h in hits["hits"]["hits"]]
    # kNN half brings the cat page first (weight 0.7), BM25 half the engine page.
    assert ids[0] == "cat" and "engine" in ids
