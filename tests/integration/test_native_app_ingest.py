"""An application indexing straight into the engine through the native pipeline (no bridge
on its path) while the embedding service is killed and restarted. The Elasticsearch plugin
retries on its own; OpenSearch's connector does not (ml-commons retries only AWS-style
throttling answers, never a refused or dropped connection), so every document in flight or
sent during the outage is reported failed to the app. Its client retries 429s; the app sends
again every document it was not told was indexed (reported failed, answered 2xx without
a write, or given no answer)."""

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
from bridge.index.bulk import WRITTEN
from bridge.index.meta import IndexMeta
from bridge.index.setup import setup_index
from bridge.nodes.distribution import ELASTICSEARCH_8_VERSION, ELASTICSEARCH_VERSION

from conftest import (
    ServiceProcess,
    assert_exactly_once,
    corpus,
    indexed_ids,
    local_engine,
    wait_count,
)

pytestmark = pytest.mark.engine

CLIENT_MAJOR = int(elasticsearch.__versionstr__.partition(".")[0])


@pytest.fixture(scope="module")
def es_url() -> Iterator[str]:
    """A node of the major the installed elasticsearch-py speaks (a 9.x client refuses 8.x
    servers), with the bridge plugin (``bridge engine start`` installs it)."""
    version = ELASTICSEARCH_VERSION if CLIENT_MAJOR >= 9 else ELASTICSEARCH_8_VERSION
    with local_engine("elasticsearch", "BRIDGE_TEST_ES_APP_URL", heap="1g", version=version) as url:
        yield url


def _bulk(
    helper: Callable, client, index: str, docs: list[dict], told: dict[str, list] | None = None
) -> list[str]:
    """An app's bulk load with the client's own retries of 429; returns the ids not confirmed
    indexed (a 2xx with result created or updated): those reported failed, answered 2xx
    without a write, or given no answer (the helper pairs a chunk's answer items with its
    actions by position and stops at the shorter). What the app was told about each id is
    appended to ``told[id]``."""
    actions = ({"_index": index, "_id": d["_id"], "text": d["text"]} for d in docs)
    confirmed: set[str] = set()
    answered: set[str] = set()
    for ok, item in helper(
        client, actions, chunk_size=50, max_retries=5, initial_backoff=1,
        raise_on_error=False, raise_on_exception=False,
    ):  # fmt: skip
        info = next(iter(item.values()))
        answered.add(info["_id"])
        # OpenSearch 3.6 answers 200 without a created/updated result for a document its
        # batched ml_inference lost to a dropped connection (seen as a "drop"): not indexed.
        if ok and info.get("result") in WRITTEN:
            confirmed.add(info["_id"])
        if told is not None:
            error = None if ok else str(info.get("error"))[:200]
            told.setdefault(info["_id"], []).append(
                (ok, info.get("status"), info.get("result"), error)
            )
    unanswered = [d["_id"] for d in docs if d["_id"] not in answered]
    assert not unanswered, f"the client yielded nothing for {len(unanswered)}: {unanswered[:5]}"
    return [d["_id"] for d in docs if d["_id"] not in confirmed]


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

    told: dict[str, list] = {}
    restarter = threading.Thread(target=restart)
    restarter.start()
    failed = send(docs, told)
    restarter.join(300)
    assert service.proc is not None, "the service was never restarted"
    assert at_kill[0] < len(docs), "the service was killed after the ingest, not during it"
    # What the app was not told was indexed, it sends again (as any app with a retry loop does).
    again = send([d for d in docs if d["_id"] in set(failed)], told)
    # Reported failed twice is not silent loss: say so before counting what is there.
    assert again == [], {i: told[i] for i in again[:5]}
    # Told indexed (a 2xx) and not there: silent loss. Say what the app was told.
    present = set(indexed_ids(engine, meta.index))
    lost = [d["_id"] for d in docs if d["_id"] not in present]
    assert not lost, f"{len(lost)} lost: {[(i, told.get(i)) for i in lost[:5]]}"
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
            service,
            engine,
            meta,
            lambda docs, told: _bulk(os_streaming_bulk, client, meta.alias, docs, told),
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
            service,
            engine,
            meta,
            lambda docs, told: _bulk(es_streaming_bulk, client, meta.alias, docs, told),
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
