"""``make demo``: the main job end to end on a fresh machine.

Starts a local OpenSearch (from Maven Central) and the bridge with the bundled `minilm`
model, sets up native ingest (OpenSearch calls the bridge from its ingest pipeline),
ingests a small corpus through it, and prints hybrid search results.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from importlib import resources

import httpx

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.index.ingest import Indexer, read_jsonl
from bridge.index.search import HybridSearch, SearchOptions
from bridge.index.setup import setup_index
from bridge.nodes import cluster

QUERIES = [
    "how do I make strong coffee",
    "keep search data available when a server dies",
    "what should a client do when it is rate limited",
]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port(preferred: int) -> int:
    for port in range(preferred, preferred + 50):
        if _port_free(port) and _port_free(port + 100):
            return port
    raise RuntimeError(f"no free port near {preferred}")


def _start_bridge(port: int) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "bridge.cli", "serve", "--model", "minilm", "--device", "cpu",
        "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}/ready"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bridge serve exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("bridge serve did not become ready in 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--keep", action="store_true", help="Leave OpenSearch and the bridge running."
    )
    args = parser.parse_args()
    started = time.perf_counter()

    engine_port = _pick_port(9200)
    print(f"[1/5] starting OpenSearch on 127.0.0.1:{engine_port} (first run downloads ~550 MB)")
    state = cluster.start("opensearch", port=engine_port, heap="1g", fresh=True)
    bridge_port = _pick_port(8000)
    print(f"[2/5] starting the bridge with minilm on 127.0.0.1:{bridge_port}")
    bridge = _start_bridge(bridge_port)
    bridge_url = f"http://127.0.0.1:{bridge_port}"
    try:
        with EngineClient(state.url) as engine, EmbeddingClient(bridge_url) as embedder:
            print("[3/5] bridge setup --index demo --dim 384 --mode native")
            meta, notes = setup_index(
                engine, embedder, "demo", 384, "native", bridge_url=bridge_url, replicas=0
            )
            for note in notes:
                print(f"      - {note}")
            print("[4/5] ingesting the sample corpus through the OpenSearch ingest pipeline")
            corpus = resources.files("bridge.data").joinpath("demo_corpus.jsonl")
            with corpus.open("rb") as f:
                summary = Indexer(engine, meta, batch_size=16, progress=False).ingest(read_jsonl(f))
            engine.request("POST", "/demo/_refresh")
            print(
                f"      indexed {summary.indexed}, failed {len(summary.failed)} "
                f"in {summary.seconds:.1f}s; vectors filled by the engine's pipeline"
            )
            print("[5/5] hybrid search (BM25 + kNN, RRF), query embedded in query mode")
            searcher = HybridSearch(engine, embedder, meta)
            for query in QUERIES:
                print(f"\n  Q: {query}")
                for rank, hit in enumerate(searcher.search(query, SearchOptions(k=3)), 1):
                    print(f"   {rank}. {hit.id:<15} {hit.source['text'][:80]}")
    finally:
        if args.keep:
            print(f"\nleft running: OpenSearch {state.url}, bridge {bridge_url} (pid {bridge.pid})")
        else:
            bridge.terminate()
            bridge.wait(30)
            cluster.stop("opensearch", engine_port, wipe=True)
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
