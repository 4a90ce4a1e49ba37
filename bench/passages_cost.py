"""The cost of passage vectors on a real engine, with `minilm` on CPU.

The same long documents (``--group`` consecutive techfaq passages of one source page joined
by a blank line, as ``bench/passages.py`` builds them; ``--docs`` of them, spread over the
sources) are ingested into a local engine four ways: one vector per document and passages
(``--passages``, 256/32 by default), each bridge-side and native (OpenSearch's
``ml_inference`` pipeline calls the service once per document; the Elasticsearch plugin
batches). Per run: docs/s, ``/v1/embeddings`` calls (the service's own request counter),
vectors stored, store size after a force-merge to one segment (bytes per document) and kNN
query latency on the engine (the query vectors embedded beforehand; a passage index is
searched with the nested query ``bridge search`` sends). Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_service import free_port, start_server  # noqa: E402

from bridge.clients.embedding import EmbeddingClient  # noqa: E402
from bridge.clients.engine import EngineClient  # noqa: E402
from bridge.index.dialects import dialect_for  # noqa: E402
from bridge.index.ingest import Indexer, as_docs  # noqa: E402
from bridge.index.meta import IndexMeta  # noqa: E402
from bridge.index.setup import setup_index  # noqa: E402
from bridge.model.passages import PassageSpec  # noqa: E402
from bridge.nodes import cluster  # noqa: E402


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def long_documents(data: Path, group: int, count: int) -> list[dict]:
    """``count`` documents of ``group`` consecutive passages of one source page, taken
    evenly over all pages' documents (not all from the first source)."""
    sources: dict[str, str] = {}
    with (data / "sources.tsv").open() as f:
        next(f)
        for line in f:
            pid, source = line.rstrip("\n").split("\t")
            sources[pid] = source
    by_source: dict[str, list[dict]] = defaultdict(list)
    for passage in read_jsonl(data / "corpus.jsonl"):
        by_source[sources.get(passage["_id"], "all")].append(passage)
    docs = []
    for source in sorted(by_source):
        passages = by_source[source]
        for i in range(0, len(passages) - group + 1, group):  # full groups only
            part = passages[i : i + group]
            docs.append({"title": part[0].get("title") or "",
                         "text": "\n\n".join(p["text"] for p in part)})  # fmt: skip
    step = max(1, len(docs) // count)
    chosen = docs[::step][:count]
    return [{"_id": f"long{i:05d}", **d} for i, d in enumerate(chosen)]


def embedding_calls(bridge_url: str) -> float:
    """The service's count of ``/v1/embeddings`` requests answered so far."""
    text = httpx.get(f"{bridge_url}/metrics", timeout=10).text
    pattern = r'^bridge_requests_total\{[^}]*route="/v1/embeddings"[^}]*\} ([0-9.e+]+)$'
    return sum(float(m) for m in re.findall(pattern, text, flags=re.M))


def store(engine: EngineClient, index: str) -> dict:
    """Lucene documents (parents and nested passages) and bytes after one segment."""
    engine.request("POST", f"/{index}/_forcemerge", params={"max_num_segments": "1"})
    engine.request("POST", f"/{index}/_refresh")
    stats = engine.request("GET", f"/{index}/_stats/docs,store")["indices"][index]["primaries"]
    return {"lucene_docs": stats["docs"]["count"], "bytes": stats["store"]["size_in_bytes"]}


def knn_latency(engine: EngineClient, meta: IndexMeta, vectors: list[list[float]]) -> dict:
    """Sequential kNN searches (k=10) on the engine, vectors given: client-side ms. The
    body is ``bridge search``'s: vectors left out of the hits' ``_source``."""
    dialect = dialect_for(engine.info())
    nested = meta.vector_field if meta.passages else None

    def one(vector: list[float]) -> float:
        body = dialect.knn_body(meta.knn_field, vector, 10, None, nested)
        started = time.perf_counter()
        body = {"_source": {"excludes": [meta.vector_field]}, **body, "size": 10}
        engine.request("POST", f"/{meta.alias}/_search", body)
        return (time.perf_counter() - started) * 1000

    for vector in vectors[:10]:
        one(vector)
    times = sorted(one(v) for v in vectors)
    return {
        "queries": len(times),
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[int(0.99 * (len(times) - 1))], 2),
    }


def one_run(
    engine: EngineClient,
    embedder: EmbeddingClient,
    bridge_url: str,
    alias: str,
    mode: str,
    spec: PassageSpec | None,
    docs: list[dict],
    query_vectors: list[list[float]],
    batch_size: int,
) -> dict:
    meta, _ = setup_index(engine, embedder, alias, 384, mode, bridge_url=bridge_url,
                          replicas=0, passages=spec)  # fmt: skip
    assert meta.mode == mode, f"{alias}: asked for {mode} ingest, got {meta.mode}"
    before = embedding_calls(bridge_url)
    indexer = Indexer(engine, meta, embedder, batch_size=batch_size, progress=False)
    summary = indexer.ingest(as_docs(docs))
    calls = embedding_calls(bridge_url) - before
    assert not summary.failed, summary.failed[:3]
    engine.request("POST", f"/{alias}/_refresh")
    top = engine.request("GET", f"/{alias}/_count")["count"]
    stored = store(engine, meta.index)
    vectors = stored["lucene_docs"] - top if spec else top
    run = {
        "mode": mode,
        "bulk_docs": batch_size,
        "layout": f"passages {spec.max_tokens}/{spec.overlap}" if spec else "one vector",
        "docs": top,
        "seconds": round(summary.seconds, 2),
        "docs_per_s": round(summary.docs_per_second, 2),
        "embedding_calls": int(calls),
        "vectors": vectors,
        "vectors_per_doc": round(vectors / top, 2),
        "store_bytes": stored["bytes"],
        "bytes_per_doc": round(stored["bytes"] / top),
        "knn": knn_latency(engine, meta, query_vectors),
    }
    print(json.dumps(run), flush=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("/work/data/techfaq"))
    parser.add_argument("--docs", type=int, default=80)
    parser.add_argument("--group", type=int, default=12)
    parser.add_argument("--passages", default="256:32", help="TOKENS:OVERLAP")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--engines", default="opensearch", help="opensearch,elasticsearch")
    parser.add_argument("--batch", type=int, default=64, help="documents per bulk, bridge-side")
    parser.add_argument(
        "--native-batch", type=int, default=4,
        help="documents per bulk, native: OpenSearch calls the service once per document, all "
        "of a bulk at once; 64 long documents queue more work than a CPU service takes (429)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("bench/results/passages_cost.json"))
    args = parser.parse_args()

    docs = long_documents(args.data, args.group, args.docs)
    queries = [q["text"] for q in read_jsonl(args.data / "queries.jsonl")][: args.queries]
    tokens, overlap = (int(x) for x in args.passages.split(":"))
    spec = PassageSpec(tokens, overlap)
    bridge_port = free_port()
    proc = start_server(bridge_port, 4096)
    bridge_url = f"http://127.0.0.1:{bridge_port}"
    result: dict = {
        "benchmark": "passages_cost",
        "model": "minilm",
        "device": "cpu",
        "cpus": os.cpu_count(),
        "data": f"{args.data.name}: {len(docs)} documents of {args.group} consecutive "
        "passages of one source page, joined by a blank line",
        "mean_chars_per_doc": round(sum(len(d["text"]) for d in docs) / len(docs)),
        "runs": {},
    }
    try:
        with EmbeddingClient(bridge_url) as embedder:
            query_vectors = embedder.embed(queries, input_type="query").tolist()
            for kind in args.engines.split(","):
                port = free_port()
                state = cluster.start(kind, port=port, heap="1g", fresh=True, progress=False)
                try:
                    with EngineClient(state.url) as engine:
                        runs = result["runs"][kind] = []
                        for mode in ("bridge", "native"):
                            for layout in (None, spec):
                                alias = f"cost-{mode}-{'p' if layout else 'one'}"
                                size = args.batch if mode == "bridge" else args.native_batch
                                run = one_run(engine, embedder, bridge_url, alias, mode, layout,
                                              docs, query_vectors, size)  # fmt: skip
                                runs.append(run)
                finally:
                    cluster.stop(kind, port, wipe=True)
    finally:
        proc.terminate()
        proc.wait(30)
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
