"""Passage vectors: the service's splitting API, and the same passages in every ingest mode."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.index.ingest import Indexer, as_docs
from bridge.index.search import HybridSearch, SearchOptions
from bridge.index.setup import setup_index
from bridge.model.passages import PassageSpec

from conftest import live_server, make_service

TOPICS = [
    ("lighthouse", "The lighthouse keeper climbs the spiral stairs to trim the lamp wick."),
    ("glacier", "Glaciers carve U-shaped valleys as compacted snow slowly flows downhill."),
    ("sourdough", "Sourdough starter is a culture of wild yeast and lactic acid bacteria."),
    ("violin", "A violin bow is strung with horsehair rubbed with rosin for grip."),
    ("comet", "A comet's tail always points away from the sun, pushed by solar wind."),
    ("beehive", "Worker bees fan their wings to cool the hive and evaporate nectar."),
]


def long_body(repeat: int = 5) -> str:
    """Paragraphs on distinct topics, each long enough to fill its own passages."""
    return "\n\n".join(" ".join([sentence] * repeat) for _, sentence in TOPICS)


@pytest.fixture(scope="module")
def server():
    with live_server(make_service("minilm")) as live:
        yield live


def post(server, **body) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=60)


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_passages_cover_the_body_and_equal_plain_embeddings(server):
    body, title = long_body(), "Six topics"
    spec = {"max_tokens": 64, "overlap": 8}
    r = post(server, input=[body, "short one"], titles=[title, None], passages=spec)
    assert r.status_code == 200, r.text
    long, short = r.json()["data"]
    assert long["object"] == "passages" and long["index"] == 0
    spans = [(p["start"], p["end"]) for p in long["passages"]]
    assert len(spans) > 6
    assert spans[0][0] == 0 and spans[-1][1] == len(body)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        # consecutive passages overlap, or meet at a paragraph break: no text between them
        assert start < end or body[end:start].strip() == "", body[end:start]
    texts = [f"{title}\n{body[s:e]}" for s, e in spans]
    plain = post(server, input=texts).json()["data"]
    tokenizer = server.service.embedder.tokenizer
    for passage, want, text in zip(long["passages"], plain, texts, strict=True):
        assert len(tokenizer(text)["input_ids"]) <= 64 + 16  # the window plus the title
        assert float(unit(passage["embedding"]) @ unit(want["embedding"])) >= 0.9999
    # A body that fits one window is one passage: the document's own vector.
    assert [(p["start"], p["end"]) for p in short["passages"]] == [(0, 9)]
    one = post(server, input=["short one"]).json()["data"][0]["embedding"]
    assert float(unit(short["passages"][0]["embedding"]) @ unit(one)) >= 0.9999


def test_titles_are_embedded_in_front_of_the_text(server):
    with_titles = post(server, input=["body text", "same"], titles=["Head", "same"]).json()
    joined = post(server, input=["Head\nbody text", "same"]).json()
    for a, b in zip(with_titles["data"], joined["data"], strict=True):
        assert float(unit(a["embedding"]) @ unit(b["embedding"])) >= 0.9999


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"titles": ["a", "b"]}, 400, "invalid_titles"),
        ({"passages": {"max_tokens": 64, "overlap": 40}}, 400, None),
        ({"passages": {"max_tokens": 4, "overlap": 0}}, 400, None),
        ({"passages": {"max_tokens": 64}, "input_type": "query"}, 400, "invalid_input_type"),
        ({"passages": {"max_tokens": 64}, "titles": ["word " * 400]}, 413, "title_too_long"),
        ({"passages": {"max_tokens": 64, "size": 3}}, 400, None),
    ],
)
def test_bad_passage_requests_are_refused_clearly(server, body, status, code):
    r = post(server, input=[long_body(1)], **body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code


def test_too_many_passages_in_one_request_is_413(tiny_qwen3_dir):
    from bridge.server.settings import ServerSettings

    settings = ServerSettings(max_inputs_per_request=4)
    with live_server(make_service(tiny_qwen3_dir), settings) as live:
        r = post(live, input=[long_body()], passages={"max_tokens": 16, "overlap": 0})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_passages"


@pytest.mark.engine
@pytest.mark.parametrize("engine_name", ["opensearch", "elasticsearch"])
def test_native_and_bridge_side_ingest_store_the_same_passages(request, server, engine_name):
    engine = EngineClient(request.getfixturevalue(f"{engine_name}_url"))
    embedder = EmbeddingClient(server.url)
    docs = [
        {"_id": "long", "title": "Six topics", "text": long_body()},
        {"_id": "short", "text": "Only a short body without a title."},
    ]
    spec = PassageSpec(64, 8)
    stored = {}
    for mode in ("bridge", "native"):
        alias = f"passages-{engine_name}-{mode}"
        meta, notes = setup_index(
            engine, embedder, alias, 384, mode, bridge_url=server.url, replicas=0, passages=spec
        )
        assert meta.mode == mode, notes
        summary = Indexer(engine, meta, embedder, progress=False).ingest(as_docs(docs))
        assert summary.indexed == 2 and not summary.failed, summary.failed
        engine.request("POST", f"/{alias}/_refresh")
        params = {"_source_exclude_vectors": "false"} if engine_name == "elasticsearch" else None
        stored[mode] = {
            d["_id"]: engine.request("GET", f"/{alias}/_doc/{d['_id']}", params=params)["_source"][
                meta.vector_field
            ]
            for d in docs
        }
        # BM25 searches the title too: "Six topics" is only in the long one's title.
        [hit] = HybridSearch(engine, embedder, meta).search("six", SearchOptions(mode="bm25"))
        assert hit.id == "long"
        # kNN scores a document by its best passage, and names it.
        search = HybridSearch(engine, embedder, meta)
        for mode_name in ("knn", "hybrid"):
            hits = search.search("why does a comet tail point away from the sun", SearchOptions(
                mode=mode_name, k=2))  # fmt: skip
            assert hits[0].id == "long"
            assert hits[0].passage is not None and "comet" in hits[0].passage.text
    for doc_id in ("long", "short"):
        bridge_side, native = stored["bridge"][doc_id], stored["native"][doc_id]
        assert [(p["start"], p["end"]) for p in bridge_side] == [
            (p["start"], p["end"]) for p in native
        ]
        for a, b in zip(bridge_side, native, strict=True):
            assert float(unit(a["embedding"]) @ unit(b["embedding"])) >= 0.9999
    assert len(stored["bridge"]["long"]) > 6 and len(stored["bridge"]["short"]) == 1
    engine.close()
    embedder.close()
