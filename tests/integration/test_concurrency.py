"""Many clients at once: each gets exactly its own vectors, in its own order."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from tiny_qwen3 import WORDS


def test_32_concurrent_clients_get_their_own_vectors(qwen3_server):
    rng = random.Random(7)
    requests = [
        [" ".join(rng.choices(WORDS, k=rng.randint(1, 60))) for _ in range(rng.randint(1, 12))]
        for _ in range(32)
    ]
    service = qwen3_server.service
    expected = [np.stack([service.embed_sync([t]).vectors[0] for t in texts]) for texts in requests]

    def client(i: int) -> np.ndarray:
        with httpx.Client(timeout=60) as http:
            r = http.post(qwen3_server.url + "/v1/embeddings", json={"input": requests[i]})
            assert r.status_code == 200, r.text
            data = r.json()["data"]
            assert [d["index"] for d in data] == list(range(len(requests[i])))
            return np.array([d["embedding"] for d in data], dtype=np.float32)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(client, range(32)))
    for got, want in zip(results, expected, strict=True):
        assert got.shape == want.shape
        cos = (got * want).sum(1)
        assert cos.min() >= 0.9999
