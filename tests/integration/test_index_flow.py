"""setup -> ingest -> search against real engines and a real bridge server (minilm)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.index.dialects import dialect_for
from bridge.index.ingest import Indexer, read_jsonl
from bridge.index.meta import SetupError, read_meta
from bridge.index.search import HybridSearch, SearchOptions
from bridge.index.setup import setup_index

from conftest import live_server, make_service

pytestmark = pytest.mark.engine

DOCS = [
    {"_id": "espresso", "text": "Espresso forces hot water through finely ground coffee."},
    {"_id": "tea", "text": "Green tea leaves are steamed soon after picking."},
    {"_id": "shards", "text": "Replicas keep shards available when a node fails."},
    {
        "_id": "bm25",
        "text": "BM25 ranks documents by term frequency and inverse document frequency.",
    },
    {"_id": "zebra", "text": "The zebra xylophone quintessence is a nonsense keyword sentence."},
    {"id": 7, "text": "Sourdough bread rises with wild yeast."},
    {"text": "A document without any id gets a content hash as its id."},
]


def jsonl(docs, extra: bytes = b"") -> io.BytesIO:
    return io.BytesIO(b"\n".join(json.dumps(d).encode() for d in docs) + b"\n" + extra)


@pytest.fixture(scope="module")
def bridge():
    with live_server(make_service("minilm")) as server, EmbeddingClient(server.url) as client:
        yield server.url, client


@pytest.fixture(
    scope="module",
    params=["opensearch-native", "opensearch-bridge", "elasticsearch", "elasticsearch-bridge"],
)
def indexed(request, bridge):
    engine_name, _, mode = request.param.partition("-")
    url = request.getfixturevalue(f"{engine_name}_url")
    bridge_url, embedder = bridge
    engine = EngineClient(url)
    alias = f"flow-{request.param}"
    meta, notes = setup_index(
        engine, embedder, alias, 384, mode or "auto", bridge_url=bridge_url, replicas=0
    )
    bad = b'{"text": "ok line"}\n{not json\n{"title": "no text"}\n"a string"\n\xff\xfe\n'
    summary = Indexer(engine, meta, embedder, batch_size=3, progress=False).ingest(
        read_jsonl(jsonl(DOCS, bad))
    )
    engine.request("POST", f"/{alias}/_refresh")
    yield engine, embedder, meta, summary, notes
    engine.close()


def test_setup_picks_the_mode_the_engine_allows(indexed):
    engine, _, meta, _, notes = indexed
    kind = engine.info().kind
    assert meta.index == f"{meta.alias}-d384"
    if kind == "elasticsearch" and meta.alias.endswith("elasticsearch"):  # --mode auto
        assert meta.mode == "native", notes  # the local node has the bridge's ingest plugin
        assert any("plugin is on every ingest node" in n for n in notes)
    mapping = engine.request("GET", f"/{meta.alias}/_mapping")
    assert list(mapping) == [meta.index]  # the alias reaches the physical index
    assert read_meta(engine, meta.alias).dim == 384


def test_bad_lines_reported_rest_ingested(indexed):
    _, _, _, summary, _ = indexed
    assert summary.indexed == len(DOCS) + 1
    lines = sorted(f.line for f in summary.failed)
    assert lines == [9, 10, 11, 12]
    reasons = " ".join(f.reason for f in summary.failed)
    assert "invalid JSON" in reasons and "missing or empty 'text'" in reasons
    assert "JSON object" in reasons and "not UTF-8" in reasons


def test_vectors_have_the_right_dimension_and_docs_find_themselves(indexed):
    engine, embedder, meta, _, _ = indexed
    # Elasticsearch 9 leaves vectors out of _source unless asked.
    params = {"_source_exclude_vectors": "false"} if engine.info().kind == "elasticsearch" else None
    doc = engine.request("GET", f"/{meta.alias}/_doc/espresso", params=params)["_source"]
    # A short document is one passage, spanning its whole body.
    [passage] = doc[meta.vector_field]
    assert (passage["start"], passage["end"]) == (0, len(DOCS[0]["text"]))
    assert len(passage["embedding"]) == 384
    assert doc["bridge"]["model"] == "minilm" and doc["bridge"]["dim"] == 384
    expected = embedder.embed([DOCS[0]["text"]], dimensions=384)[0]
    assert float(np.dot(expected, np.array(passage["embedding"]))) >= 0.9999
    hits = HybridSearch(engine, embedder, meta)
    dialect = dialect_for(engine.info())
    for d in DOCS[:5]:
        # A document's own text, as a document-mode vector, is its own nearest neighbour.
        vec = embedder.embed([d["text"]], dimensions=384)[0].tolist()
        body = dialect.knn_body(meta.knn_field, vec, 1, None, meta.vector_field)
        [hit] = hits._run({"size": 1, **body})
        assert hit.id == d["_id"]
        assert hit.passage is not None and hit.passage.text == d["text"]


def test_reingest_does_not_duplicate(indexed):
    engine, embedder, meta, _, _ = indexed
    before = engine.request("GET", f"/{meta.alias}/_count")["count"]
    again = Indexer(engine, meta, embedder, progress=False).ingest(read_jsonl(jsonl(DOCS)))
    assert again.indexed == 0 and again.unchanged == len(DOCS)  # nothing embedded again
    forced = Indexer(engine, meta, embedder, progress=False, skip_unchanged=False)
    assert forced.ingest(read_jsonl(jsonl(DOCS))).indexed == len(DOCS)
    engine.request("POST", f"/{meta.alias}/_refresh")
    assert engine.request("GET", f"/{meta.alias}/_count")["count"] == before
    ids = {
        h["_id"]
        for h in engine.request("POST", f"/{meta.alias}/_search", {"size": 50})["hits"]["hits"]
    }
    assert {"espresso", "7"} <= ids


@pytest.mark.parametrize("fusion", ["rrf", "linear"])
def test_hybrid_covers_both_halves(indexed, fusion):
    engine, embedder, meta, _, _ = indexed
    search = HybridSearch(engine, embedder, meta)
    query = "zebra xylophone how is coffee brewed"
    bm25 = [h.id for h in search.search(query, SearchOptions(mode="bm25", k=1))]
    knn = [h.id for h in search.search("how is coffee brewed", SearchOptions(mode="knn", k=1))]
    assert bm25 == ["zebra"] and knn == ["espresso"]
    hybrid = [h.id for h in search.search(query, SearchOptions(k=3, fusion=fusion))]
    assert {"zebra", "espresso"} <= set(hybrid)


def test_filter_passes_to_both_halves(indexed):
    engine, embedder, meta, _, _ = indexed
    search = HybridSearch(engine, embedder, meta)
    only = {"terms": {"doc_id": ["tea", "shards"]}}
    hits = search.search("coffee espresso", SearchOptions(k=5, filter=only))
    assert hits and {h.id for h in hits} <= {"tea", "shards"}


def test_dimension_mismatch_is_refused(bridge, opensearch_url):
    _, embedder = bridge
    with EngineClient(opensearch_url) as engine, pytest.raises(SetupError, match="384..384"):
        setup_index(engine, embedder, "wrong-dim", 128, "bridge")


def test_native_ingest_sends_the_bridge_key(opensearch_url):
    from bridge.server.app import ServerSettings

    service = make_service("minilm")
    with (
        live_server(service, ServerSettings(api_keys=["s3cret"])) as server,
        EngineClient(opensearch_url) as engine,
        EmbeddingClient(server.url, "s3cret") as emb,
    ):
        meta, _ = setup_index(
            engine, emb, "keyed", 384, "native", bridge_url=server.url, api_key="s3cret",
            replicas=0,
        )  # fmt: skip
        summary = Indexer(engine, meta, progress=False).ingest(read_jsonl(jsonl(DOCS[:2])))
        assert summary.indexed == 2 and not summary.failed
        doc = engine.request("GET", "/keyed/_doc/tea")["_source"]
        [passage] = doc[meta.vector_field]
        assert len(passage["embedding"]) == 384
        connectors = engine.request(
            "POST", "/_plugins/_ml/connectors/_search", {"query": {"match_all": {}}}
        )
        assert "s3cret" not in json.dumps(connectors), "the key must be stored encrypted"


def test_dead_letter_then_replay_loses_nothing(bridge, opensearch_url, tmp_path):
    from click.testing import CliRunner

    from bridge.cli import main

    from conftest import free_port

    bridge_url, embedder = bridge
    docs_file = tmp_path / "docs.jsonl"
    docs_file.write_bytes(jsonl(DOCS).getvalue())
    dead = tmp_path / "dead.jsonl"
    with EngineClient(opensearch_url) as engine:
        meta, _ = setup_index(engine, embedder, "replay", 384, "bridge", replicas=0)
        # The embedding service is down: every document goes to the dead-letter file.
        with EmbeddingClient(f"http://127.0.0.1:{free_port()}", retry_for=0) as down:
            summary = Indexer(engine, meta, down, dead_letter=dead, progress=False).ingest(
                read_jsonl(jsonl(DOCS))
            )
        assert summary.indexed == 0 and len(summary.failed) == len(DOCS)
        entries = [json.loads(line) for line in dead.read_text().splitlines()]
        assert len(entries) == len(DOCS)
        assert all("embedding failed" in e["reason"] for e in entries)
        assert all("embedding" not in e["doc"] for e in entries)
    common = ["--engine-url", opensearch_url, "--bridge-url", bridge_url]
    same = CliRunner().invoke(
        main, ["ingest", *common, str(dead), "--index", "replay", "--retry-dead-letter",
               "--dead-letter", str(dead)],
    )  # fmt: skip
    assert same.exit_code != 0 and "must differ" in same.output
    result = CliRunner().invoke(
        main, ["ingest", *common, str(dead), "--index", "replay", "--retry-dead-letter", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{") :])["indexed"] == len(DOCS)
    with EngineClient(opensearch_url) as engine:
        assert engine.request("GET", "/replay/_count")["count"] == len(DOCS)
        ids = {
            h["_id"]
            for h in engine.request("POST", "/replay/_search", {"size": 20})["hits"]["hits"]
        }
        assert {"espresso", "7"} <= ids
        # Replaying again does not duplicate.
        CliRunner().invoke(
            main, ["ingest", *common, str(dead), "--index", "replay", "--retry-dead-letter"]
        )
        engine.request("POST", "/replay/_refresh")
        assert engine.request("GET", "/replay/_count")["count"] == len(DOCS)


def test_setup_on_one_node_picks_no_replica_and_checks_the_alias_first(bridge, opensearch_url):
    bridge_url, embedder = bridge
    engine = EngineClient(opensearch_url)
    meta, notes = setup_index(engine, embedder, "flow-replicas", 384, "bridge")
    settings = engine.request("GET", f"/{meta.index}/_settings")[meta.index]["settings"]
    assert settings["index"]["number_of_replicas"] == "0"
    assert any("0 replicas (1 data node" in n for n in notes), notes
    health = engine.request("GET", f"/_cluster/health/{meta.index}")
    assert health["status"] == "green"  # a replica on one node would keep it yellow

    engine.request("PUT", "/flow-plain", {})  # an index, not an alias, by the name asked for
    with pytest.raises(SetupError, match="an index named flow-plain exists"):
        setup_index(engine, embedder, "flow-plain", 384, "bridge")
    assert not engine.exists("/flow-plain-d384"), "a failed setup left its index behind"
