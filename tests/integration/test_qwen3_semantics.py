"""Qwen3-Embedding rules, checked over HTTP against a reference written from the model card."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from bridge.model.inputs import InputError

from conftest import make_service
from tiny_qwen3 import END_ID

TASK = "Given a web search query, retrieve relevant passages that answer the query"
DOCS = [
    "the quick brown fox jumps over the lazy dog",
    "cats",
    "how to cook pasta and bake bread in the sun with dogs and birds",
    "vector search engine index",
]
QUERIES = ["what is a vector search engine", "how to cook pasta"]


def reference(model_dir, texts: list[str]) -> np.ndarray:
    """The model card recipe: left padding, last token, L2 normalisation."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=8192, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    return F.normalize(hidden[:, -1], p=2, dim=1).numpy()


def post(server, **body) -> np.ndarray:
    r = httpx.post(server.url + "/v1/embeddings", json=body, timeout=60)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return np.array([d["embedding"] for d in data], dtype=np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def test_documents_match_model_card_reference(qwen3_server, tiny_qwen3_dir):
    ours = post(qwen3_server, input=DOCS)
    ref = reference(tiny_qwen3_dir, DOCS)
    assert ours.shape == (len(DOCS), 64)
    assert cosines(ours, ref).min() >= 0.9999


def test_queries_get_the_instruction(qwen3_server, tiny_qwen3_dir):
    ours = post(qwen3_server, input=QUERIES, input_type="query")
    ref = reference(tiny_qwen3_dir, [f"Instruct: {TASK}\nQuery:{q}" for q in QUERIES])
    assert cosines(ours, ref).min() >= 0.9999
    plain = post(qwen3_server, input=QUERIES)
    assert cosines(ours, plain).max() < 0.999, "query mode must differ from document mode"


def test_custom_instruction(qwen3_server, tiny_qwen3_dir):
    task = "find legal documents about cats"
    ours = post(qwen3_server, input=QUERIES, input_type="query", instruction=task)
    ref = reference(tiny_qwen3_dir, [f"Instruct: {task}\nQuery:{q}" for q in QUERIES])
    assert cosines(ours, ref).min() >= 0.9999


def test_batch_equals_singles(qwen3_server):
    batch = post(qwen3_server, input=DOCS)
    singles = np.concatenate([post(qwen3_server, input=d) for d in DOCS])
    assert cosines(batch, singles).min() >= 0.9999


@pytest.mark.parametrize("dim", [32, 48, 64])
def test_mrl_slice_then_normalise(qwen3_server, tiny_qwen3_dir, dim):
    ours = post(qwen3_server, input=DOCS, dimensions=dim)
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_dir, padding_side="left")
    model = AutoModel.from_pretrained(tiny_qwen3_dir, dtype=torch.float32).eval()
    batch = tokenizer(DOCS, padding=True, return_tensors="pt")
    with torch.no_grad():
        last = model(**batch).last_hidden_state[:, -1]
    ref = F.normalize(last[:, :dim], p=2, dim=1).numpy()
    assert ours.shape == (len(DOCS), dim)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert cosines(ours, ref).min() >= 0.9999


def test_end_token_survives_truncation(tiny_qwen3_dir):
    service = make_service(tiny_qwen3_dir, max_input_tokens=8)
    try:
        long_text = " ".join(["cats dogs fish birds"] * 10)
        (ids,) = service.prepare([long_text])
        assert len(ids) == 8 and ids[-1] == END_ID
        (qids,) = service.prepare([long_text], input_type="query")
        assert len(qids) == 8 and qids[-1] == END_ID
        instruct = service.embedder.tokenizer("Instruct", add_special_tokens=False)["input_ids"]
        assert qids[0] == instruct[0], "truncation must keep the instruction at the front"
        with pytest.raises(InputError, match="more than the limit of 8"):
            service.prepare([long_text], truncate=False)
    finally:
        service.close()


def test_end_token_appended_when_tokenizer_does_not(tiny_qwen3_dir, tiny_qwen3_no_end_dir):
    plain = make_service(tiny_qwen3_no_end_dir)
    short = make_service(tiny_qwen3_no_end_dir, max_input_tokens=6)
    with_end = make_service(tiny_qwen3_dir)
    try:
        assert plain.embedder.tokenizer("cats dogs")["input_ids"][-1] != END_ID
        (ids,) = plain.prepare(["cats dogs"])
        assert ids[-1] == END_ID
        assert ids == with_end.prepare(["cats dogs"])[0]
        (cut,) = short.prepare(["cats dogs fish birds rain sun snow wind"])
        assert len(cut) == 6 and cut[-1] == END_ID
        # Same weights (same seed): the vectors agree once the end token is appended.
        a = plain.embed_sync(DOCS).vectors
        b = with_end.embed_sync(DOCS).vectors
        assert cosines(a, b).min() >= 0.9999
    finally:
        for service in (plain, short, with_end):
            service.close()


def test_token_id_inputs(qwen3_server, tiny_qwen3_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_dir)
    ids = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in DOCS]
    from_ids = post(qwen3_server, input=ids)
    from_text = post(qwen3_server, input=DOCS)
    assert cosines(from_ids, from_text).min() >= 0.9999
