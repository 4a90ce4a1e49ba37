"""``bridge reindex`` benchmark: truncation (engine-side and bridge-side) against re-embedding.

One OpenSearch index of ``--docs`` minilm documents at 384 dimensions (the service runs
with ``--allow-truncation`` so that smaller dimensions are legal), reindexed to 128 three
times from the same source: a scripted ``_reindex`` on the engine, the bridge's paged
read + truncate + bulk, and re-embedding through the service. CPU only; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_service import free_port, passages, start_server  # noqa: E402

from bridge.clients.embedding import EmbeddingClient  # noqa: E402
from bridge.clients.engine import EngineClient  # noqa: E402
from bridge.index.ingest import Indexer, as_docs  # noqa: E402
from bridge.index.reindex import Reindexer, plan_reindex  # noqa: E402
from bridge.index.setup import setup_index  # noqa: E402
from bridge.nodes import cluster  # noqa: E402

METHODS = ("engine", "scroll", "re-embed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("bench/results/reindex.json"))
    args = parser.parse_args()

    engine_port, bridge_port = free_port(), free_port()
    state = cluster.start("opensearch", port=engine_port, heap="1g", fresh=True, progress=False)
    proc = start_server(bridge_port, 1024, "--allow-truncation")
    bridge_url = f"http://127.0.0.1:{bridge_port}"
    runs: dict = {}
    try:
        with EngineClient(state.url) as engine, EmbeddingClient(bridge_url) as embedder:
            texts = passages(args.docs, seed=21)
            for method in METHODS:  # the same documents behind three aliases
                alias = f"bench-{method}"
                meta, _ = setup_index(engine, embedder, alias, 384, "bridge", replicas=0)
                docs = [{"_id": f"d{i}", "text": t} for i, t in enumerate(texts)]
                Indexer(engine, meta, embedder, batch_size=64, progress=False).ingest(as_docs(docs))
                engine.request("POST", f"/{alias}/_refresh")
            for method in METHODS:
                plan = plan_reindex(engine, embedder, f"bench-{method}", args.dim)
                assert plan.method == "engine", plan.reason
                plan = replace(plan, method=method)
                started = time.perf_counter()
                summary = Reindexer(
                    engine, embedder, plan, batch_size=args.batch, progress=False
                ).run()
                seconds = time.perf_counter() - started
                runs[method] = {
                    "docs": summary.target_count,
                    "seconds": round(seconds, 2),
                    "docs_per_s": round(summary.target_count / seconds, 1),
                    "sample_min_cosine": summary.sample_min_cosine,
                }
                print(method, runs[method], flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
        cluster.stop("opensearch", engine_port, wipe=True)
    result = {
        "benchmark": "reindex",
        "engine": "opensearch 3.6.0",
        "model": f"minilm (cpu), 384 -> {args.dim}",
        "docs": args.docs,
        "cpus": os.cpu_count(),
        "runs": runs,
        "speedup_engine_vs_re_embed": runs["engine"]["docs_per_s"] / runs["re-embed"]["docs_per_s"],
        "speedup_scroll_vs_re_embed": runs["scroll"]["docs_per_s"] / runs["re-embed"]["docs_per_s"],
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.startswith("speedup")}))


if __name__ == "__main__":
    main()
