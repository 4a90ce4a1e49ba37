"""CPU benchmark of the embedding service with `minilm` (issue: embedding service).

Measures, in one run on the same texts:
  * sentence-transformers ``encode`` in-process (the reference rate),
  * our server end to end over HTTP with N concurrent clients,
  * one short query's latency (p50/p99) over HTTP,
  * the server's resident memory.
Writes JSON (see docs/benchmarks.md for the command).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

WORDS = (
    "search engine vector index shard replica query document passage ranking relevance "
    "embedding model token batch latency throughput cluster node memory disk network "
    "the a of to in and is for on with as by at from that this it be are was were "
    "semantic hybrid keyword lexical dense sparse retrieval answer question user data "
    "python java rust cloud server client request response error retry timeout queue"
).split()


def passages(n: int, seed: int = 0) -> list[str]:
    """Deterministic passages with log-normal lengths (median ~60 words, 5..250)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = int(min(250, max(5, rng.lognormvariate(4.1, 0.6))))
        out.append(" ".join(rng.choice(WORDS) for _ in range(length)).capitalize() + ".")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference_rate(texts: list[str], batch_size: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from bridge.model.families import load_profile

    model = SentenceTransformer(str(load_profile("minilm").path), device="cpu")
    model.encode(texts[:64], batch_size=batch_size)  # warm-up
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size)
    seconds = time.perf_counter() - started
    del model
    return {"seconds": seconds, "texts_per_s": len(texts) / seconds, "batch_size": batch_size}


def start_server(port: int, max_batch_tokens: int, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "bridge.cli", "serve", "--model", "minilm", "--device", "cpu",
        "--port", str(port), "--max-batch-tokens", str(max_batch_tokens), "--log-level", "warning",
        *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
    raise RuntimeError("server did not become ready")


def http_rate(url: str, texts: list[str], clients: int, per_request: int) -> dict:
    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]

    def send(chunk: list[str]) -> int:
        # base64, as the official openai client asks by default: cheap for the client to decode
        r = http.post(url + "/v1/embeddings", json={"input": chunk, "encoding_format": "base64"})
        r.raise_for_status()
        data = r.json()["data"]
        vectors = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data]
        return len(vectors)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(timeout=300, limits=limits) as http:
        send(texts[:16])  # warm-up
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            done = sum(pool.map(send, chunks))
        seconds = time.perf_counter() - started
    assert done == len(texts)
    return {
        "seconds": seconds,
        "texts_per_s": len(texts) / seconds,
        "clients": clients,
        "texts_per_request": per_request,
    }


def query_latency(url: str, n: int) -> dict:
    times = []
    with httpx.Client(timeout=30) as http:
        for i in range(n + 10):
            started = time.perf_counter()
            r = http.post(url + "/v1/embeddings", json={"input": f"what is a vector index {i}"})
            r.raise_for_status()
            if i >= 10:
                times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "requests": n,
        "p50_ms": statistics.median(times),
        "p99_ms": times[int(0.99 * (len(times) - 1))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-request", type=int, default=32)
    parser.add_argument("--st-batch-size", type=int, default=32)
    parser.add_argument("--max-batch-tokens", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/cpu_service.json"))
    args = parser.parse_args()

    texts = passages(args.passages)
    reference = reference_rate(texts, args.st_batch_size)
    print(f"sentence-transformers encode: {reference['texts_per_s']:.1f} texts/s", flush=True)

    port = free_port()
    proc = start_server(port, args.max_batch_tokens)
    url = f"http://127.0.0.1:{port}"
    server = psutil.Process(proc.pid)
    peak = {"rss": 0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak["rss"] = max(peak["rss"], server.memory_info().rss)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        ours = http_rate(url, texts, args.clients, args.per_request)
        print(f"bridge over HTTP: {ours['texts_per_s']:.1f} texts/s", flush=True)
        latency = query_latency(url, args.queries)
        sampling.set()
        time.sleep(1)  # let the idle trim run
        rss = server.memory_info().rss
    finally:
        proc.terminate()
        proc.wait(30)

    ratio = ours["texts_per_s"] / reference["texts_per_s"]
    result = {
        "benchmark": "cpu_service",
        "model": "minilm (all-MiniLM-L6-v2)",
        "passages": len(texts),
        "words_per_passage_median": statistics.median(len(t.split()) for t in texts),
        "sentence_transformers": reference,
        "bridge_http": ours,
        "ratio_bridge_over_st": ratio,
        "goal_ratio": 0.9,
        "short_query_latency": latency,
        "server_rss_bytes": rss,
        "server_peak_rss_bytes": peak["rss"],
        "server_rss_goal_bytes": 1 << 30,
        "max_batch_tokens": args.max_batch_tokens,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"ratio {ratio:.2f} (goal >= 0.9); query p50 {latency['p50_ms']:.1f} ms, "
        f"p99 {latency['p99_ms']:.1f} ms; server RSS {rss / 2**20:.0f} MiB "
        f"(peak {peak['rss'] / 2**20:.0f} MiB) -> {args.out}"
    )


if __name__ == "__main__":
    main()
