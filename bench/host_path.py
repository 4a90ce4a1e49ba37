"""The server's own share of a short request's latency, on any machine (no GPU needed).

    python bench/host_path.py --out bench/results/host_path.json

The real service (tokenizer, batcher, event loop) and HTTP server around a forward pass
that only waits, with the GIL released as a CUDA sync does, for as long as a GPU takes:
``--gpu-ms`` per shape (default: the H100 fp8 replays of session 13, 2.23 ms for one
16-token text and 11.56 ms for ten of 128 tokens). The model is the tests' tiny Qwen3
with 2,560-wide vectors (Qwen3-4B's, so the answers are as large) and a word-level
tokenizer (one token a word). For 1 × 16 and 10 × 128 tokens, as bench/gpu_latency.py
stages them: ``forward`` (the wait alone), ``prepare`` (the tokenizer), ``batcher``,
``embed_async`` (the server's path without HTTP), ``http_raw`` (a kept-alive
``http.client`` in another process) and ``http_httpx``; each stage's ``host_ms`` is its
p50 less the forward's (the tokenizer's: all of it). Run it on a GPU host (no GPU used)
to see that host's share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from gpu import host_cpu, latency, start_http  # noqa: E402
from gpu_latency import raw_latency, timed  # noqa: E402

from bridge.model.embedder import Embedder  # noqa: E402
from bridge.model.options import GPU_BATCH_TOKENS  # noqa: E402
from bridge.model.service import EmbeddingService, ServiceOptions  # noqa: E402

from tiny_qwen3 import WORDS, build_tiny_qwen3  # noqa: E402

SHAPES = {"1x16": (1, 16), "10x128": (10, 128)}
WIDTH = 2560


def texts_of(count: int, tokens: int, seed: int) -> list[str]:
    """``count`` texts of ``tokens - 1`` words (the end token makes ``tokens``)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(tokens - 1)) for _ in range(count)]


def waiting_launch(gpu_ms: dict[int, float]):
    """An ``Embedder.launch`` that waits as the GPU would for a batch of that many tokens
    (the nearest shape's time) and returns zero vectors."""
    sizes = sorted(gpu_ms)

    def launch(self, batch: list[list[int]]) -> np.ndarray:
        tokens = sum(map(len, batch))
        nearest = min(sizes, key=lambda s: abs(s - tokens))
        time.sleep(gpu_ms[nearest] / 1000)
        return np.zeros((len(batch), WIDTH), dtype=np.float32)

    return launch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-ms", default="2.23,11.56", help="1x16 and 10x128 forward ms")
    parser.add_argument("-n", type=int, default=300, help="requests a stage")
    parser.add_argument("--out", type=Path, default=Path("bench/results/host_path.json"))
    args = parser.parse_args()
    waits = [float(v) for v in args.gpu_ms.split(",")]
    gpu_ms = {count * tokens: w for (count, tokens), w in zip(SHAPES.values(), waits, strict=True)}
    model_dir = build_tiny_qwen3(Path(tempfile.mkdtemp()) / "qwen3", hidden_size=WIDTH)
    Embedder.launch = waiting_launch(gpu_ms)  # type: ignore[method-assign]
    options = ServiceOptions(  # batches as large as on a GPU: one request, one forward
        model=str(model_dir), device="cpu", max_batch_tokens=GPU_BATCH_TOKENS
    )
    service = EmbeddingService.from_options(options)
    service.warm_up()
    server, url = start_http(service)
    host, port = url.removeprefix("http://").split(":")
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    loop = asyncio.new_event_loop()
    result: dict = {"cpu": host_cpu(), "python": platform.python_version(), "gpu_ms": gpu_ms}
    for name, (count, tokens) in SHAPES.items():
        sets = [texts_of(count, tokens, seed=100 + i) for i in range(20)]
        texts = sets[0]
        batch = service.prepare(texts)
        assert sum(map(len, batch)) == count * tokens, "one token a word, and the end token"
        bodies = [json.dumps({"input": t, "encoding_format": "base64"}).encode() for t in sets]
        n = args.n
        stages = {
            "forward": timed(lambda b=batch: Embedder.launch(service.embedder, b), n),
            "prepare": timed(lambda t=texts: service.prepare(t), n),
            "batcher": timed(lambda b=batch: service.batcher.submit(b).result(), n),
            "embed_async": timed(lambda t=texts: loop.run_until_complete(service.embed(t)), n),
            "http_raw": pool.submit(raw_latency, host, int(port), bodies, n).result(),
            "http_httpx": pool.submit(latency, url, sets, n).result(),
        }
        base = stages["forward"]["p50_ms"]
        for key, stage in stages.items():  # the tokenizer is host time all of it
            stage["host_ms"] = stage["p50_ms"] - (0 if key == "prepare" else base)
        result[name] = stages
        print(name, json.dumps({k: round(v["host_ms"], 3) for k, v in stages.items()}), flush=True)
    server.should_exit = True
    pool.shutdown()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
