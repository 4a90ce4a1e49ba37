"""The bundled all-MiniLM-L6-v2 through our server equals sentence-transformers ``encode``."""

from __future__ import annotations

import httpx
import numpy as np
from sentence_transformers import SentenceTransformer

from bridge.model.families import load_profile

TEXTS = [
    "A man is eating food.",
    "A man is riding a horse.",
    "The new movie is awesome",
    "x",
    "Elasticsearch and OpenSearch both support approximate kNN search over dense vectors. " * 40,
    "Ünïcödé, emoji 🚀 and CJK 漢字 survive tokenization",
]


def test_alias_profile():
    profile = load_profile("minilm")
    assert profile.kind == "sentence-transformers"
    assert (profile.pooling, profile.normalize, profile.native_dim) == ("mean", True, 384)
    assert profile.model_max_tokens == 256


def test_server_equals_sentence_transformers(minilm_server):
    reference = SentenceTransformer(str(load_profile("minilm").path), device="cpu")
    expected = reference.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False)
    r = httpx.post(minilm_server.url + "/v1/embeddings", json={"input": TEXTS}, timeout=60)
    assert r.status_code == 200, r.text
    ours = np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
    cos = (ours * expected).sum(1) / np.linalg.norm(expected, axis=1) / np.linalg.norm(ours, axis=1)
    assert cos.min() >= 0.9999, cos
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_tei_route_matches(minilm_server):
    a = httpx.post(minilm_server.url + "/embed", json={"inputs": TEXTS[:3]}, timeout=60).json()
    b = httpx.post(minilm_server.url + "/v1/embeddings", json={"input": TEXTS[:3]}).json()
    np.testing.assert_allclose(np.array(a), [d["embedding"] for d in b["data"]], atol=1e-6)
