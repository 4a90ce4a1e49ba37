"""Ingest and hybrid-search benchmark with `minilm` on CPU and a local OpenSearch.

In one run: sentence-transformers ``encode`` in-process on the documents (the reference
rate); end-to-end ingest through ``bridge ingest``'s Indexer in bridge-side mode and in
native mode (OpenSearch's pipeline calls the bridge); then hybrid query latency with
concurrent clients on an index of ``--latency-docs`` documents. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_service import free_port, passages, reference_rate, start_server  # noqa: E402

from bridge.clients.embedding import EmbeddingClient  # noqa: E402
from bridge.clients.engine import EngineClient  # noqa: E402
from bridge.index.ingest import Indexer, as_docs  # noqa: E402
from bridge.index.search import HybridSearch, SearchOptions  # noqa: E402
from bridge.index.setup import setup_index  # noqa: E402
from bridge.nodes import cluster  # noqa: E402


def docs(texts: list[str], prefix: str) -> list[dict]:
    return [{"_id": f"{prefix}{i}", "text": t} for i, t in enumerate(texts)]


def ingest_rate(engine, embedder, bridge_url, alias, mode, documents, batch_size) -> dict:
    meta, _ = setup_index(
        engine, embedder, alias, 384, mode, bridge_url=bridge_url, replicas=0, batch_size=32
    )
    indexer = Indexer(engine, meta, embedder, batch_size=batch_size, progress=False)
    summary = indexer.ingest(as_docs(documents))
    engine.request("POST", f"/{alias}/_refresh")
    assert not summary.failed, summary.failed[:3]
    return {
        "mode": meta.mode,
        "docs": summary.indexed,
        "seconds": summary.seconds,
        "docs_per_s": summary.docs_per_second,
        "meta": meta,
    }


def query_latency(search: HybridSearch, queries: list[str], clients: int) -> dict:
    def one(q: str) -> float:
        started = time.perf_counter()
        search.search(q, SearchOptions(k=10))
        return (time.perf_counter() - started) * 1000

    for q in queries[:10]:
        one(q)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        times = sorted(pool.map(one, queries))
    wall = time.perf_counter() - started
    return {
        "queries": len(queries),
        "clients": clients,
        "p50_ms": statistics.median(times),
        "p99_ms": times[int(0.99 * (len(times) - 1))],
        "queries_per_s": len(queries) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--latency-docs", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench/results/ingest.json"))
    args = parser.parse_args()

    texts = passages(args.docs, seed=11)
    reference = reference_rate(texts, 32)
    print(f"sentence-transformers encode: {reference['texts_per_s']:.1f} docs/s", flush=True)

    engine_port = free_port()
    state = cluster.start("opensearch", port=engine_port, heap="1g", fresh=True, progress=False)
    bridge_port = free_port()
    proc = start_server(bridge_port, 1024)
    bridge_url = f"http://127.0.0.1:{bridge_port}"
    result: dict = {"benchmark": "ingest", "docs": args.docs, "cpus": os.cpu_count()}
    try:
        with EngineClient(state.url) as engine, EmbeddingClient(bridge_url) as embedder:
            runs = {}
            for mode in ("bridge", "native"):
                run = ingest_rate(
                    engine, embedder, bridge_url, f"bench-{mode}", mode,
                    docs(texts, mode), args.batch_size,
                )  # fmt: skip
                runs[mode] = run
                print(f"ingest {mode}: {run['docs_per_s']:.1f} docs/s", flush=True)
            meta = runs["bridge"].pop("meta")
            runs["native"].pop("meta")
            extra = args.latency_docs - args.docs
            if extra > 0:
                more = docs(passages(extra, seed=12), "extra")
                Indexer(engine, meta, embedder, batch_size=args.batch_size, progress=False).ingest(
                    as_docs(more)
                )
                engine.request("POST", f"/{meta.alias}/_refresh")
            count = engine.request("GET", f"/{meta.alias}/_count")["count"]
            queries = [" ".join(t.split()[:6]) for t in passages(args.queries, seed=13)]
            latency = query_latency(HybridSearch(engine, embedder, meta), queries, args.clients)
            latency["index_docs"] = count
            print(f"hybrid latency: {latency}", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
        cluster.stop("opensearch", engine_port, wipe=True)

    result.update(
        {
            "sentence_transformers": reference,
            "ingest": runs,
            "ratio_bridge_side_vs_st": runs["bridge"]["docs_per_s"] / reference["texts_per_s"],
            "ratio_native_vs_st": runs["native"]["docs_per_s"] / reference["texts_per_s"],
            "goal_ratio": 0.8,
            "hybrid_latency": latency,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.startswith("ratio")}))


if __name__ == "__main__":
    main()
