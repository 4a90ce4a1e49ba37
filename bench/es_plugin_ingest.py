"""Elasticsearch ingest plugin benchmark with `minilm` on CPU and a local Elasticsearch node.

On the same node and service, in alternating rounds: bridge-side ingest (``bridge ingest``'s
Indexer embeds, then bulks) and native ingest (an application's plain ``_bulk`` into the
alias; the index's default pipeline, the plugin's processor, calls the bridge). For each,
docs/s and the number of ``/v1/embeddings`` calls per 1,000 documents (the service's
``/metrics`` counter read before and after). Native items refused with 429 (the processor's
in-flight bound) are sent again by the app, as a bulk client with retries does. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_service import free_port, passages, start_server  # noqa: E402

from bridge.clients.embedding import EmbeddingClient  # noqa: E402
from bridge.clients.engine import EngineClient  # noqa: E402
from bridge.index.ingest import Indexer, as_docs  # noqa: E402
from bridge.index.meta import IndexMeta  # noqa: E402
from bridge.index.setup import setup_index  # noqa: E402
from bridge.nodes import cluster  # noqa: E402
from bridge.nodes.distribution import ELASTICSEARCH_VERSION  # noqa: E402
from bridge.plugin.pipeline import PROCESSOR, pipeline_body  # noqa: E402

EMBEDDINGS_ROUTE = 'route="/v1/embeddings"'
RETRIED = (429, 503)  # what a bulk client with retries sends again


def embedding_calls(bridge_url: str) -> int:
    """``/v1/embeddings`` requests the service has answered (any status)."""
    text = httpx.get(f"{bridge_url}/metrics", timeout=10).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("bridge_requests_total{") and EMBEDDINGS_ROUTE in line
    )


def bridge_side(engine: EngineClient, meta: IndexMeta, embedder, docs, batch_size) -> dict:
    indexer = Indexer(engine, meta, embedder, batch_size=batch_size, progress=False)
    summary = indexer.ingest(as_docs(docs))
    assert not summary.failed, summary.failed[:3]
    return {"docs": summary.indexed, "seconds": summary.seconds}


def native(es_url: str, meta: IndexMeta, docs: list[dict], bulk_docs: int, clients: int) -> dict:
    """Plain ``_bulk`` requests of ``bulk_docs`` documents from ``clients`` threads; items
    answered 429 (in-flight bound) or 503 (no vector within timeout_ms) go again after a
    backoff. Returns docs, seconds and the items retried by status."""
    retried = dict.fromkeys(RETRIED, 0)
    lock = threading.Lock()

    def send(chunk: list[dict]) -> None:
        pause = 0.05
        while chunk:
            lines = []
            for doc in chunk:
                lines.append(json.dumps({"index": {"_id": doc["_id"]}}))
                lines.append(json.dumps({"text": doc["text"]}))
            r = http.post(
                f"{es_url}/{meta.alias}/_bulk",
                content="\n".join(lines) + "\n",
                headers={"Content-Type": "application/x-ndjson"},
            )
            r.raise_for_status()
            items = [next(iter(i.values())) for i in r.json()["items"]]
            failed = [i for i in items if i["status"] >= 300]
            assert all(i["status"] in RETRIED for i in failed), failed[:3]
            with lock:
                for item in failed:
                    retried[item["status"]] += 1
            again = {i["_id"] for i in failed}
            chunk = [d for d in chunk if d["_id"] in again]
            if chunk:
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    chunks = [docs[i : i + bulk_docs] for i in range(0, len(docs), bulk_docs)]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(timeout=600, limits=limits) as http:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, chunks))
        seconds = time.perf_counter() - started
    return {"docs": len(docs), "seconds": seconds, "items_retried": retried}


def measure(
    run: Callable[[], dict], bridge_url: str, engine: EngineClient, meta: IndexMeta
) -> dict:
    before = embedding_calls(bridge_url)
    result = run()
    result["embedding_calls"] = embedding_calls(bridge_url) - before
    engine.request("POST", f"/{meta.alias}/_refresh")
    count = engine.request("GET", f"/{meta.alias}/_count")["count"]
    with_vector = engine.request(
        "POST", f"/{meta.alias}/_count", {"query": {"exists": {"field": meta.vector_field}}}
    )["count"]
    assert count == with_vector == result["docs"], (count, with_vector, result["docs"])
    result["docs_per_s"] = result["docs"] / result["seconds"]
    result["calls_per_1000_docs"] = 1000 * result["embedding_calls"] / result["docs"]
    return result


def limit_in_flight(
    engine: EngineClient, meta: IndexMeta, bridge_url: str, args: argparse.Namespace
) -> None:
    """The same pipeline again, with ``max_in_flight`` set (the wiring leaves it out)."""
    body = pipeline_body(meta, [bridge_url], batch_size=args.pipeline_batch)
    body["processors"][0][PROCESSOR]["max_in_flight"] = args.max_in_flight
    engine.request("PUT", f"/_ingest/pipeline/{meta.pipeline}", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--version", default=ELASTICSEARCH_VERSION)
    parser.add_argument("--batch-size", type=int, default=64, help="Indexer batch (bridge-side)")
    parser.add_argument(
        "--pipeline-batch", type=int, default=32, help="processor batch_size (bridge setup's)"
    )
    parser.add_argument(
        "--max-in-flight", type=int, help="processor max_in_flight [default: the plugin's]"
    )
    parser.add_argument("--bulk-docs", type=int, default=500, help="documents per app _bulk")
    parser.add_argument("--clients", type=int, default=2, help="concurrent app _bulk requests")
    parser.add_argument("--out", type=Path, default=Path("bench/results/es_plugin_ingest.json"))
    args = parser.parse_args()

    texts = passages(args.docs, seed=11)
    engine_port = free_port()
    state = cluster.start(
        "elasticsearch", args.version, port=engine_port, heap="1g", fresh=True, progress=False
    )
    bridge_port = free_port()
    proc = start_server(bridge_port, 1024)
    bridge_url = f"http://127.0.0.1:{bridge_port}"
    rounds: list[dict] = []
    try:
        with EngineClient(state.url) as engine, EmbeddingClient(bridge_url) as embedder:
            for n in range(args.rounds):
                runs = {}
                for mode in ("bridge", "native"):
                    docs = [{"_id": f"{mode}{i}", "text": t} for i, t in enumerate(texts)]
                    meta, _ = setup_index(
                        engine, embedder, f"bench-{mode}-{n}", 384, mode,
                        bridge_url=bridge_url, replicas=0, batch_size=args.pipeline_batch,
                    )  # fmt: skip
                    assert meta.mode == mode, meta.mode
                    if mode == "native" and args.max_in_flight:
                        limit_in_flight(engine, meta, bridge_url, args)
                    if mode == "bridge":
                        run = partial(bridge_side, engine, meta, embedder, docs, args.batch_size)
                    else:
                        run = partial(native, state.url, meta, docs, args.bulk_docs, args.clients)
                    runs[mode] = measure(run, bridge_url, engine, meta)
                    print(f"round {n} {mode}: {json.dumps(runs[mode])}", flush=True)
                    engine.request("DELETE", f"/{meta.index}")
                rounds.append(runs)
    finally:
        proc.terminate()
        proc.wait(30)
        cluster.stop("elasticsearch", engine_port, wipe=True)

    def median(mode: str, key: str) -> float:
        return statistics.median(r[mode][key] for r in rounds)

    result = {
        "benchmark": "es_plugin_ingest",
        "elasticsearch": args.version,
        "docs": args.docs,
        "cpus": os.cpu_count(),
        "settings": {
            "indexer_batch_size": args.batch_size,
            "pipeline_batch_size": args.pipeline_batch,
            "max_in_flight": args.max_in_flight,
            "bulk_docs": args.bulk_docs,
            "clients": args.clients,
        },
        "rounds": rounds,
        "bridge_docs_per_s": median("bridge", "docs_per_s"),
        "native_docs_per_s": median("native", "docs_per_s"),
        "bridge_calls_per_1000_docs": median("bridge", "calls_per_1000_docs"),
        "native_calls_per_1000_docs": median("native", "calls_per_1000_docs"),
        "goal_ratio": 0.9,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    result["ratio_native_vs_bridge"] = result["native_docs_per_s"] / result["bridge_docs_per_s"]
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=2))


if __name__ == "__main__":
    main()
