"""``bridge reindex`` on real engines with a 2560-wide tiny Qwen3 behind a real server."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import httpx
import numpy as np
import pytest

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.index.ingest import Indexer, as_docs
from bridge.index.meta import read_meta
from bridge.index.reindex import Reindexer, ReindexError, plan_reindex, truncate
from bridge.index.search import HybridSearch, SearchOptions
from bridge.index.setup import setup_index

from conftest import live_server, make_service
from tiny_qwen3 import WORDS, build_tiny_qwen3

pytestmark = pytest.mark.engine


def corpus(n: int, prefix: str = "d", seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"_id": f"{prefix}{i:05d}", "text": " ".join(rng.choices(WORDS, k=rng.randint(4, 24)))}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def wide_bridge(tmp_path_factory):
    """Qwen3-Embedding-4B's width (2560) and MRL range, tiny everywhere else."""
    path = build_tiny_qwen3(tmp_path_factory.mktemp("models") / "wide-qwen3", hidden_size=2560)
    service = make_service(path, max_batch_tokens=2048)
    with live_server(service) as server, EmbeddingClient(server.url) as client:
        yield server.url, client


def fill(engine, embedder, alias, dim, docs, mode="bridge", bridge_url=None):
    meta, _ = setup_index(engine, embedder, alias, dim, mode, bridge_url=bridge_url, replicas=0)
    summary = Indexer(engine, meta, embedder, batch_size=64, progress=False).ingest(as_docs(docs))
    assert summary.indexed == len(docs) and not summary.failed
    engine.request("POST", f"/{alias}/_refresh")
    return meta


def vectors(engine, index, field="passages") -> dict[str, np.ndarray]:
    """Every document's vector in ``index``, by id (asserting each id appears once); the
    documents here are short: one passage each."""
    engine.request("POST", f"/{index}/_refresh")
    params = {"_source_exclude_vectors": "false"} if engine.info().kind == "elasticsearch" else {}
    answer = engine.request(
        "POST", f"/{index}/_search", {"size": 10000, "_source": [field]}, params=params
    )
    hits = answer["hits"]["hits"]
    ids = [h["_id"] for h in hits]
    assert len(ids) == len(set(ids))
    out = {}
    for hit in hits:
        [passage] = hit["_source"][field]
        out[hit["_id"]] = np.asarray(passage["embedding"], dtype=np.float32)
    return out


def assert_direct(embedder, docs, got: dict[str, np.ndarray], dim: int, floor=0.9999):
    """Each stored vector equals embedding the text directly at ``dim`` dimensions."""
    want = embedder.embed([d["text"] for d in docs], dimensions=dim)
    have = np.stack([got[d["_id"]] for d in docs])
    have /= np.linalg.norm(have, axis=1, keepdims=True)
    assert have.shape == (len(docs), dim)
    cosine = (have * want).sum(axis=1)
    assert cosine.min() >= floor, cosine.min()


def test_truncate_renormalises():
    v = np.array([3.0, 4.0, 12.0])
    assert np.allclose(truncate(v, 2), [0.6, 0.8])
    with pytest.raises(ReindexError):
        truncate([0.0, 0.0, 1.0], 2)


def test_truncation_path_no_downtime_no_lost_writes(opensearch_url, wide_bridge):
    """2560 -> 128 on the engine; a search loop and a writer run throughout."""
    _, embedder = wide_bridge
    engine = EngineClient(opensearch_url)
    docs = corpus(400)
    old_meta = fill(engine, embedder, "mrl", 2560, docs)

    plan = plan_reindex(engine, embedder, "mrl", 128)
    assert plan.method == "engine" and plan.documents == 400

    stop = threading.Event()
    errors: list[str] = []
    searches = [0]
    written: dict[str, dict] = {}  # new documents, and new texts of old ones

    def search_loop():
        search = HybridSearch(engine, embedder, read_meta(engine, "mrl"))
        while not stop.is_set():
            try:
                hits = search.search("vector search engine", SearchOptions(mode="hybrid", k=5))
                assert hits, "no hits"
                searches[0] += 1
            except Exception as exc:  # noqa: BLE001 - any failure is what we count
                errors.append(repr(exc))

    def writer():
        rng = random.Random(7)
        i = 0
        while not stop.is_set():
            meta = read_meta(engine, "mrl")  # a writer that follows the alias's dimension
            doc_id = f"d{i:05d}" if i % 3 == 0 else f"w{i:04d}"  # every third an update
            doc = {"_id": doc_id, "text": " ".join(rng.choices(WORDS, k=8))}
            Indexer(engine, meta, embedder, progress=False).ingest(as_docs([doc]))
            written[doc_id] = doc
            i += 1
            time.sleep(0.02)

    threads = [threading.Thread(target=f, daemon=True) for f in (search_loop, writer)]
    for t in threads:
        t.start()

    def wait_for_search_after(count: int) -> None:
        """Until a search beyond ``count`` finished (bounded: a loaded machine is slow)."""
        deadline = time.monotonic() + 60
        while searches[0] <= count and not errors and time.monotonic() < deadline:
            time.sleep(0.05)

    try:
        wait_for_search_after(0)
        before = searches[0]
        summary = Reindexer(engine, embedder, plan, batch_size=50, progress=False).run()
        wait_for_search_after(before)
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    assert errors == []
    assert before > 0 and searches[0] > before
    meta = read_meta(engine, "mrl")
    assert meta.index == "mrl-d128" and meta.dim == 128 and meta.reindex is None
    assert set(engine.request("GET", "/_alias/mrl")) == {"mrl-d128"}
    assert summary.sample_min_cosine >= 0.9999
    got = vectors(engine, "mrl-d128")
    everything = list(({d["_id"]: d for d in docs} | written).values())
    assert set(got) == {d["_id"] for d in everything}, "a write during the reindex was lost"
    assert any(k.startswith("d") for k in written), "no update happened during the run"
    assert_direct(embedder, everything, got, 128)  # updated texts: their new vectors
    assert engine.exists("/mrl-d2560")  # kept without --delete-old

    # An ingest that began before the move (its metadata says 2560) follows the alias.
    late = {"_id": "late", "text": "vector search after the move"}
    summary = Indexer(engine, old_meta, embedder, progress=False).ingest(as_docs([late]))
    assert summary.indexed == 1 and summary.failed == []
    assert_direct(embedder, [late], vectors(engine, "mrl-d128"), 128)
    everything.append(late)

    # Growing again needs new vectors: the plan re-embeds, and --delete-old drops the old.
    plan = plan_reindex(engine, embedder, "mrl", 256, delete_old=True)
    assert plan.method == "re-embed"
    Reindexer(engine, embedder, plan, batch_size=100, progress=False).run()
    assert not engine.exists("/mrl-d128")
    assert_direct(embedder, everything, vectors(engine, "mrl-d256"), 256, floor=0.999)


def run_cli(url, bridge_url, *args, **kw):
    env = {**os.environ, "BRIDGE_ENGINE_URL": url, "BRIDGE_URL": bridge_url}
    cmd = [sys.executable, "-m", "bridge.cli", "reindex", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_kill_and_resume_gives_the_same_index(elasticsearch_url, wide_bridge):
    """The bridge-side (scroll) path, killed mid-way with SIGKILL, then run again."""
    bridge_url, embedder = wide_bridge
    engine = EngineClient(elasticsearch_url)
    docs = corpus(1200, seed=3)
    fill(engine, embedder, "resume", 2560, docs)
    source = vectors(engine, "resume-d2560")

    dry = run_cli(elasticsearch_url, bridge_url, "--index", "resume", "--dim", "64", "--dry-run")
    out, err = dry.communicate(timeout=120)
    assert dry.returncode == 0, err
    assert b"scroll" in out and b"resume-d64" in out
    assert not engine.exists("/resume-d64")

    proc = run_cli(
        elasticsearch_url, bridge_url, "--index", "resume", "--dim", "64", "--batch", "10"
    )
    deadline = time.monotonic() + 120
    copied = 0
    while time.monotonic() < deadline and proc.poll() is None:
        meta = read_meta(engine, "resume-d64")
        copied = (meta.reindex or {}).get("copied", 0) if meta else 0
        if copied >= 200:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    meta = read_meta(engine, "resume-d64")
    assert meta.reindex["phase"] == "fill" and 200 <= meta.reindex["copied"] < len(docs)
    assert read_meta(engine, "resume").index == "resume-d2560"  # alias not moved yet

    again = run_cli(elasticsearch_url, bridge_url, "--index", "resume", "--dim", "64", "--json")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert b"resuming" in err
    got = vectors(engine, "resume-d64")
    assert set(got) == set(source)
    for doc_id, wide in source.items():
        assert np.dot(got[doc_id], truncate(wide, 64)) >= 0.9999
    assert_direct(embedder, docs[:100], got, 64)
    assert read_meta(engine, "resume").index == "resume-d64"


def test_native_index_keeps_native_ingest(opensearch_url, wide_bridge):
    """A native-mode index: truncation bypasses its pipeline; the new index gets its own."""
    bridge_url, embedder = wide_bridge
    engine = EngineClient(opensearch_url)
    docs = corpus(60, seed=5)
    fill(engine, embedder, "nat", 256, docs, mode="native", bridge_url=bridge_url)

    plan = plan_reindex(engine, embedder, "nat", 64)
    assert plan.method == "engine"
    Reindexer(engine, embedder, plan, bridge_url=bridge_url, progress=False).run()
    meta = read_meta(engine, "nat")
    assert meta.mode == "native" and meta.dim == 64 and meta.pipeline
    assert_direct(embedder, docs, vectors(engine, "nat-d64"), 64)

    late = corpus(5, prefix="late", seed=9)  # ingested after the move: the new pipeline
    Indexer(engine, meta, progress=False).ingest(as_docs(late))
    engine.request("POST", "/nat/_refresh")
    assert_direct(embedder, late, vectors(engine, "nat-d64"), 64)


def test_native_elasticsearch_index_keeps_the_plugin_pipeline(elasticsearch_url, wide_bridge):
    """``bridge reindex --dim`` of an index wired to the Elasticsearch plugin: the new index
    gets the plugin's pipeline at the new dim, so an app's plain _bulk keeps getting vectors."""
    bridge_url, embedder = wide_bridge
    engine = EngineClient(elasticsearch_url)
    docs = corpus(60, prefix="es", seed=6)
    old = fill(engine, embedder, "esnat", 256, docs, mode="native", bridge_url=bridge_url)
    assert old.mode == "native" and old.pipeline

    done = run_cli(elasticsearch_url, bridge_url, "--index", "esnat", "--dim", "64", "--json")
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err
    meta = read_meta(engine, "esnat")
    assert meta.index == "esnat-d64" and meta.mode == "native" and meta.dim == 64
    settings = engine.request("GET", "/esnat-d64/_settings")["esnat-d64"]["settings"]["index"]
    assert settings["default_pipeline"] == meta.pipeline != old.pipeline

    def processor(pipeline: str) -> dict:
        body = engine.request("GET", f"/_ingest/pipeline/{pipeline}")[pipeline]
        return body["processors"][0]["bridge_embedding"]

    before, after = processor(old.pipeline), processor(meta.pipeline)
    assert after["dimensions"] == 64 and before["dimensions"] == 256
    assert after["batch_size"] == before["batch_size"]  # not the copy's page size
    assert_direct(embedder, docs, vectors(engine, "esnat-d64"), 64)

    late = corpus(5, prefix="late", seed=10)  # an app's plain _bulk into the alias
    lines = [
        line
        for d in late
        for line in (json.dumps({"index": {"_id": d["_id"]}}), json.dumps({"text": d["text"]}))
    ]
    answer = httpx.post(
        f"{elasticsearch_url}/esnat/_bulk?refresh=true",
        content="\n".join(lines) + "\n",
        headers={"Content-Type": "application/x-ndjson"},
        timeout=60,
    ).json()
    assert not answer["errors"], answer
    assert_direct(embedder, late, vectors(engine, "esnat-d64"), 64)


def test_refusals_are_clear(opensearch_url, wide_bridge):
    _, embedder = wide_bridge
    engine = EngineClient(opensearch_url)
    fill(engine, embedder, "refuse", 128, corpus(3))
    with pytest.raises(ReindexError, match="already serves 128"):
        plan_reindex(engine, embedder, "refuse", 128)
    with pytest.raises(ReindexError, match="not set up by the bridge"):
        plan_reindex(engine, embedder, "no-such-alias", 64)
    with pytest.raises(ReindexError, match="cannot give 256.*--re-embed"):
        plan_reindex(engine, embedder, "refuse", 256, prefer="from-vectors")
    with pytest.raises(ReindexError, match="1..2560|32..2560"):
        plan_reindex(engine, embedder, "refuse", 16)
    engine.request("PUT", "/refuse-d64", {})
    with pytest.raises(ReindexError, match="already exists"):
        plan_reindex(engine, embedder, "refuse", 64)


SMALL = {"max_tokens": 24, "overlap": 4}  # the tiny model's passages: several per document


def long_corpus(n: int, prefix: str = "long", seed: int = 0) -> list[dict]:
    """Documents of several passages each, with titles."""
    rng = random.Random(seed)
    return [
        {"_id": f"{prefix}{i:04d}", "title": rng.choice(WORDS),
         "text": " ".join(rng.choices(WORDS, k=rng.randint(40, 90)))}
        for i in range(n)
    ]  # fmt: skip


def passage_sets(engine, index, field="embedding") -> dict[str, list[tuple[int, int, np.ndarray]]]:
    """Every document's passages in ``index``: (start, end, unit vector), by id."""
    engine.request("POST", f"/{index}/_refresh")
    params = {"_source_exclude_vectors": "false"} if engine.info().kind == "elasticsearch" else {}
    answer = engine.request(
        "POST", f"/{index}/_search", {"size": 10000, "_source": [field]}, params=params
    )
    out = {}
    for hit in answer["hits"]["hits"]:
        passages = hit["_source"][field]
        assert isinstance(passages, list) and isinstance(passages[0], dict), passages
        out[hit["_id"]] = [
            (p["start"], p["end"], truncate(p["embedding"], len(p["embedding"]))) for p in passages
        ]
    return out


def assert_passages_direct(embedder, docs, got, spec=SMALL, dim=256):
    """Each document holds the passages the service makes of it (offsets and vectors)."""
    want = embedder.embed_passages(
        [d["text"] for d in docs], [d.get("title") for d in docs], **spec, dimensions=dim
    )
    for doc, passages in zip(docs, want, strict=True):
        held = got[doc["_id"]]
        assert [(s, e) for s, e, _ in held] == [(p.start, p.end) for p in passages]
        for (_, _, vector), passage in zip(held, passages, strict=True):
            assert float(vector @ passage.vector) >= 0.999


def test_native_single_vector_index_converts_to_passages(opensearch_url, wide_bridge):
    """One vector per document (native, ml_inference) -> passages, at the same dimension:
    NAME-d256-p24o4 is filled through its own pipeline beside NAME-d256, then the alias
    moves; kNN then scores documents by their best passage."""
    bridge_url, embedder = wide_bridge
    engine = EngineClient(opensearch_url)
    docs = long_corpus(40)
    meta, _ = setup_index(engine, embedder, "conv", 256, "native", bridge_url=bridge_url,
                          replicas=0, passages=None)  # fmt: skip
    Indexer(engine, meta, progress=False).ingest(as_docs(docs))
    engine.request("POST", "/conv/_refresh")
    assert meta.index == "conv-d256" and meta.passages is None

    plan = plan_reindex(engine, embedder, "conv", passages=SMALL)
    assert plan.method == "re-embed" and plan.target.index == "conv-d256-p24o4"
    assert any("one vector per document -> passages of 24 tokens" in x for x in plan.lines())
    summary = Reindexer(engine, embedder, plan, bridge_url=bridge_url, progress=False).run()
    assert summary.copied == len(docs) and summary.sample_min_cosine >= 0.99

    now = read_meta(engine, "conv")
    assert now.index == "conv-d256-p24o4" and now.passages == SMALL and now.mode == "native"
    assert now.pipeline and now.pipeline != meta.pipeline and now.reindex is None
    assert engine.exists("/conv-d256")  # the old layout is kept beside it
    got = passage_sets(engine, "conv-d256-p24o4")
    assert set(got) == {d["_id"] for d in docs} and min(len(p) for p in got.values()) >= 2
    assert_passages_direct(embedder, docs, got)

    # A writer that still holds the old (one vector) metadata follows the alias.
    late = long_corpus(2, prefix="late", seed=4)
    stale = replace(meta, mode="bridge")  # embeds one vector itself, as before the move
    done = Indexer(engine, stale, embedder, progress=False).ingest(as_docs(late))
    assert done.indexed == 2 and done.failed == []
    assert_passages_direct(embedder, late, passage_sets(engine, "conv-d256-p24o4"))

    hits = HybridSearch(engine, embedder, now).search(docs[3]["text"], SearchOptions("knn"))
    assert hits and all(hit.passage is not None for hit in hits)
    listed = run_indexes(opensearch_url, bridge_url, "conv")
    assert "conv-d256-p24o4" in listed and "passages of 24 tokens, 4 shared" in listed
    with pytest.raises(ReindexError, match="already serves 256-dimensional vectors, passages"):
        plan_reindex(engine, embedder, "conv", passages=SMALL)


def run_indexes(url, bridge_url, alias) -> str:
    env = {**os.environ, "BRIDGE_ENGINE_URL": url, "BRIDGE_URL": bridge_url}
    cmd = [sys.executable, "-m", "bridge.cli", "indexes", alias]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_conversion_killed_and_resumed_elasticsearch(elasticsearch_url, wide_bridge):
    """``bridge reindex --passage-tokens`` on a bridge-side index, killed mid-way with
    SIGKILL, then run again: every document ends with exactly its passages."""
    bridge_url, embedder = wide_bridge
    engine = EngineClient(elasticsearch_url)
    docs = long_corpus(300, prefix="es", seed=8)
    meta, _ = setup_index(engine, embedder, "esconv", 256, "bridge", replicas=0, passages=None)
    Indexer(engine, meta, embedder, batch_size=64, progress=False).ingest(as_docs(docs))
    engine.request("POST", "/esconv/_refresh")
    args = ["--index", "esconv", "--passage-tokens", "24", "--passage-overlap", "4"]

    dry = run_cli(elasticsearch_url, bridge_url, *args, "--dry-run", "--json")
    out, err = dry.communicate(timeout=120)
    assert dry.returncode == 0, err
    shown = json.loads(out)
    assert shown["target"] == "esconv-d256-p24o4" and shown["method"] == "re-embed"
    assert shown["passages"] == {"from": None, "to": SMALL}

    proc = run_cli(elasticsearch_url, bridge_url, *args, "--batch", "10")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        target = read_meta(engine, "esconv-d256-p24o4")
        if target and (target.reindex or {}).get("copied", 0) >= 50:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
    target = read_meta(engine, "esconv-d256-p24o4")
    assert target.reindex["phase"] == "fill" and 50 <= target.reindex["copied"] < len(docs)
    assert read_meta(engine, "esconv").index == "esconv-d256"

    again = run_cli(elasticsearch_url, bridge_url, *args, "--json")
    out, err = again.communicate(timeout=400)
    assert again.returncode == 0, err
    assert b"resuming" in err and b"passages of 24 tokens" in err
    now = read_meta(engine, "esconv")
    assert now.index == "esconv-d256-p24o4" and now.passages == SMALL and now.mode == "bridge"
    got = passage_sets(engine, "esconv-d256-p24o4")
    assert set(got) == {d["_id"] for d in docs}
    assert_passages_direct(embedder, docs[:60], got)
