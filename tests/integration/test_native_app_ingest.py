"""An application indexing straight into OpenSearch through the native pipeline (no bridge
on its path) while the embedding service is killed and restarted: the connector's own
retries (``client_config``) ride it out; anything still failing is reported to the app."""

from __future__ import annotations

import threading
import time

import pytest
from opensearchpy import OpenSearch
from opensearchpy.helpers import streaming_bulk

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.index.setup import setup_index

from conftest import ServiceProcess, assert_exactly_once, corpus, wait_count

pytestmark = pytest.mark.engine


def _bulk(client: OpenSearch, index: str, docs: list[dict]) -> list[str]:
    """An app's bulk load with the client's own retries; returns the ids reported failed."""
    actions = ({"_index": index, "_id": d["_id"], "text": d["text"]} for d in docs)
    failed = []
    for ok, item in streaming_bulk(
        client, actions, chunk_size=50, max_retries=5, initial_backoff=1,
        raise_on_error=False, raise_on_exception=False,
    ):  # fmt: skip
        if not ok:
            failed.append(next(iter(item.values()))["_id"])
    return failed


def test_app_bulk_through_the_pipeline_while_the_service_restarts(opensearch_url):
    service = ServiceProcess("--model", "minilm", "--device", "cpu").start()
    engine = EngineClient(opensearch_url)
    embedder = EmbeddingClient(service.url, retry_for=120)
    client = OpenSearch(opensearch_url, timeout=300)
    try:
        meta, _ = setup_index(
            engine, embedder, "app-native", 384, "native", bridge_url=service.url, replicas=0
        )
        docs = corpus(3000, "app")

        def restart() -> None:
            wait_count(engine, meta.index, 300, timeout=300)
            service.kill()
            time.sleep(2)
            service.start()

        restarter = threading.Thread(target=restart)
        restarter.start()
        failed = _bulk(client, meta.alias, docs)
        restarter.join(300)
        assert service.proc is not None, "the service was never restarted"
        # What the app was told failed, it sends again (as any app with a retry loop does).
        again = _bulk(client, meta.alias, [d for d in docs if d["_id"] in set(failed)])
    finally:
        service.stop()
        client.close()
    assert again == []
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
    print(f"reported failed on the first pass: {len(failed)} of {len(docs)}")
