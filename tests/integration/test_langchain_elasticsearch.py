"""README's langchain-elasticsearch snippet, run as written against the local Elasticsearch
node and a live bridge server: ``ElasticsearchStore(es_url=...)`` stores the service's own
vectors and finds by them.

langchain-elasticsearch 1.x needs the 8.x ``elasticsearch`` client while the dev extra
holds 9.x (for the engine tests), so the snippet runs in its own venv: the shared venv's
packages through a ``.pth`` path, with langchain-elasticsearch (and its client) installed
over them from PyPI once, then kept under $BRIDGE_HOME.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import numpy as np
import pytest

from bridge.clients.embedding import EmbeddingClient
from bridge.nodes.cluster import bridge_home

pytestmark = pytest.mark.engine

REQUIREMENTS = ["langchain-elasticsearch>=1,<2", "langchain-openai>=1,<2"]
TEXTS = {
    "coffee": "Espresso forces hot water through finely ground coffee.",
    "shards": "Replicas keep shards available when a node fails.",
    "bread": "Sourdough bread rises with wild yeast.",
}

SNIPPET = """
import json, sys
from langchain_elasticsearch import ElasticsearchStore
from langchain_openai import OpenAIEmbeddings

es_url, bridge_url, model, texts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
embeddings = OpenAIEmbeddings(model=model, base_url=bridge_url + "/v1", api_key="unused",
                              check_embedding_ctx_length=False)
store = ElasticsearchStore(es_url=es_url, index_name="lc-docs", embedding=embeddings)
store.add_texts(list(texts.values()), ids=list(texts))
store.client.indices.refresh(index="lc-docs")
hits = store.similarity_search("what keeps data available when a server dies", k=1)
print(json.dumps([hit.page_content for hit in hits]))
"""


@pytest.fixture(scope="module")
def langchain_python() -> Path:
    """A venv with langchain-elasticsearch over the shared venv's packages (built once, per
    shared venv: the path it points to is part of its name)."""
    shared = sysconfig.get_paths()["purelib"]
    key = hashlib.sha256(json.dumps([REQUIREMENTS, sys.version, shared]).encode()).hexdigest()
    venv = bridge_home() / "venvs" / f"langchain-es-{key[:12]}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        site = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        Path(site, "shared-deps.pth").write_text(shared + "\n")
        subprocess.run(
            [python, "-m", "pip", "install", "-q", *REQUIREMENTS], check=True, timeout=600
        )
        (venv / ".complete").touch()
    return python


def test_elasticsearch_store_holds_the_service_vectors(
    langchain_python, elasticsearch_url, minilm_server
):
    with EmbeddingClient(minilm_server.url) as own:
        model = own.model_info().name
        run = subprocess.run(
            [langchain_python, "-c", SNIPPET, elasticsearch_url, minilm_server.url, model,
             json.dumps(TEXTS)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr[-3000:]
        assert json.loads(run.stdout.splitlines()[-1]) == [TEXTS["shards"]]
        expected = dict(zip(TEXTS, own.embed(list(TEXTS.values())), strict=True))
    found = httpx.post(
        f"{elasticsearch_url}/lc-docs/_search",
        json={"size": 10, "_source": {"exclude_vectors": False}},
    ).json()["hits"]["hits"]
    assert sorted(hit["_id"] for hit in found) == sorted(TEXTS)
    for hit in found:
        stored = hit["_source"]["vector"]
        np.testing.assert_allclose(stored, expected[hit["_id"]], atol=1e-5)
        assert hit["_source"]["text"] == TEXTS[hit["_id"]]
