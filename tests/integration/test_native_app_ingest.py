"""An application indexing straight into the engine through the native pipeline (no bridge
on its path) while the embedding service is killed and restarted: OpenSearch's connector
(``client_config``) and the Elasticsearch plugin retry on their own; anything still failing
is reported to the app, whose client retries 429s and sends again what it was told failed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import elasticsearch
import httpx
import numpy as np
import pytest
from elasticsearch import Elasticsearch
from elasticsearch.helpers import streaming_bulk as es_streaming_bulk
from opensearchpy import OpenSearch
from opensearchpy.helpers import streaming_bulk as os_streaming_bulk

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.index.meta import IndexMeta
from bridge.index.setup import setup_index
from bridge.nodes.distribution import ELASTICSEARCH_8_VERSION, ELASTICSEARCH_VERSION

from conftest import ServiceProcess, assert_exactly_once, corpus, local_engine, wait_count

pytestmark = pytest.mark.engine

CLIENT_MAJOR = int(elasticsearch.__versionstr__.partition(".")[0])


@pytest.fixture(scope="module")
def es_url() -> Iterator[str]:
    """A node of the major the installed elasticsearch-py speaks (a 9.x client refuses 8.x
    servers), with the bridge plugin (``bridge engine start`` installs it)."""
    version = ELASTICSEARCH_VERSION if CLIENT_MAJOR >= 9 else ELASTICSEARCH_8_VERSION
    with local_engine("elasticsearch", "BRIDGE_TEST_ES_APP_URL", heap="1g", version=version) as url:
        yield url


def _bulk(helper: Callable, client, index: str, docs: list[dict]) -> list[str]:
    """An app's bulk load with the client's own retries of 429; returns the ids reported
    failed."""
    actions = ({"_index": index, "_id": d["_id"], "text": d["text"]} for d in docs)
    failed = []
    for ok, item in helper(
        client, actions, chunk_size=50, max_retries=5, initial_backoff=1,
        raise_on_error=False, raise_on_exception=False,
    ):  # fmt: skip
        if not ok:
            failed.append(next(iter(item.values()))["_id"])
    return failed


def _ingest_while_restarting(
    service: ServiceProcess, engine: EngineClient, meta: IndexMeta, send: Callable
) -> tuple[list[str], list[str]]:
    """``send(docs)`` of 3,000 documents while the service is SIGKILLed (after 300 are in)
    and restarted on its port; then the failed ones once more. Returns both failure lists."""
    docs = corpus(3000, "app")
    at_kill: list[int] = []

    def restart() -> None:
        wait_count(engine, meta.index, 300, timeout=300)
        at_kill.append(engine.request("GET", f"/{meta.index}/_count")["count"])
        service.kill()
        time.sleep(2)
        service.start()

    restarter = threading.Thread(target=restart)
    restarter.start()
    failed = send(docs)
    restarter.join(300)
    assert service.proc is not None, "the service was never restarted"
    assert at_kill[0] < len(docs), "the service was killed after the ingest, not during it"
    # What the app was told failed, it sends again (as any app with a retry loop does).
    again = send([d for d in docs if d["_id"] in set(failed)])
    assert_exactly_once(engine, meta.index, docs)
    with_vector = engine.request(
        "POST",
        f"/{meta.index}/_count",
        {
            "query": {
                "nested": {
                    "path": meta.vector_field,
                    "query": {"exists": {"field": meta.knn_field}},
                }
            }
        },
    )
    assert with_vector["count"] == len(docs), "a document was indexed without its vector"
    print(f"killed at {at_kill[0]} documents; reported failed on the first pass: {len(failed)}")
    return failed, again


def test_app_bulk_through_the_pipeline_while_the_service_restarts(opensearch_url):
    service = ServiceProcess("--model", "minilm", "--device", "cpu").start()
    engine = EngineClient(opensearch_url)
    embedder = EmbeddingClient(service.url, retry_for=120)
    client = OpenSearch(opensearch_url, timeout=300)
    try:
        meta, _ = setup_index(
            engine, embedder, "app-native", 384, "native", bridge_url=service.url, replicas=0
        )
        _, again = _ingest_while_restarting(
            service, engine, meta, lambda docs: _bulk(os_streaming_bulk, client, meta.alias, docs)
        )
    finally:
        service.stop()
        client.close()
    assert again == []


def test_app_bulk_through_the_plugin_while_the_service_restarts(es_url):
    service = ServiceProcess("--model", "minilm", "--device", "cpu").start()
    engine = EngineClient(es_url)
    embedder = EmbeddingClient(service.url, retry_for=120)
    # A fresh client whose first call is a _bulk through the plugin: it checks that answer
    # for X-Elastic-Product (the plugin must complete documents in their bulk's context).
    client = Elasticsearch(es_url, request_timeout=300)
    try:
        meta, _ = setup_index(
            engine, embedder, "app-plugin", 384, "native", bridge_url=service.url, replicas=0
        )
        assert meta.mode == "native"
        _, again = _ingest_while_restarting(
            service, engine, meta, lambda docs: _bulk(es_streaming_bulk, client, meta.alias, docs)
        )
        sample = [f"app-{i}" for i in range(0, 3000, 150)]
        stored = _stored_vectors(engine, meta, sample)
        texts = {d["_id"]: d["text"] for d in corpus(3000, "app")}
        request = {"model": meta.model, "dimensions": 384, "input_type": "document"}
        expected = httpx.post(
            f"{service.url}/v1/embeddings",
            json={"input": [texts[i] for i in sample], **request},
            timeout=60,
        ).json()["data"]
    finally:
        service.stop()
        client.close()
    assert again == []
    for doc_id, item in zip(sample, expected, strict=True):
        got, want = np.asarray(stored[doc_id]), np.asarray(item["embedding"])
        cosine = float(got @ want / np.linalg.norm(got) / np.linalg.norm(want))
        assert cosine >= 0.9999, (doc_id, cosine)


def _stored_vectors(engine: EngineClient, meta: IndexMeta, ids: list[str]) -> dict[str, list]:
    body: dict = {"size": len(ids), "query": {"ids": {"values": ids}}}
    if engine.info().major >= 9:  # 9.x leaves vectors out of _source unless asked
        body["_source"] = {"exclude_vectors": False}
    hits = engine.request("POST", f"/{meta.index}/_search", body)["hits"]["hits"]
    # The documents are short: one passage each.
    return {h["_id"]: h["_source"][meta.vector_field][0]["embedding"] for h in hits}
