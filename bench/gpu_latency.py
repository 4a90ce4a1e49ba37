"""Where one small request's latency goes, stage by stage, on a GPU (issue 17).

    python bench/gpu_latency.py --quantize none --out $OUT/latency_bf16.json

For 1 x 16 and 10 x 128 tokens, each stage adds one layer around the previous one:
``replay`` (GPU time of the CUDA graph alone, CUDA events), ``forward`` (the embedder:
pack, copy in, replay, copy out), ``prepare`` (the tokenizer alone, not a layer),
``batcher`` (forward through the batcher's worker thread), ``embed_sync`` (tokenizer +
batcher), ``embed_async`` (the server's path: tokenizer pool, batcher, event loop
wake-up), ``http_raw`` (our server, a minimal ``http.client`` in another process) and
``http_httpx`` (the same with httpx, as bench/gpu.py measures). Differences between
neighbours are the cost of each layer. Also: the kernels of one eager forward of each
shape (torch profiler), and the GPU memory the loaded model holds.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu import build_model_dir, latency, start_http, texts_of_lengths  # noqa: E402

from bridge.model.graphs import SLOTS  # noqa: E402
from bridge.model.packed import pack  # noqa: E402
from bridge.model.service import EmbeddingService, ServiceOptions  # noqa: E402

SHAPES = {"1x16": (1, 16), "10x128": (10, 128)}


def summary(times_ms: list[float]) -> dict:
    times_ms = sorted(times_ms)
    return {
        "p50_ms": statistics.median(times_ms),
        "p95_ms": times_ms[int(0.95 * (len(times_ms) - 1))],
    }


def timed(fn, n: int, warm: int = 10) -> dict:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return summary(times)


def replay_gpu_ms(embedder, batch: list[list[int]], n: int) -> dict:
    """GPU time of the replay alone (inputs copied in once)."""
    graphs = embedder.graphs
    key = graphs.bucket_for(sum(map(len, batch)), max(map(len, batch)), len(batch))
    g = graphs.graphs[key]
    with torch.cuda.device(embedder.device):
        pack(batch, embedder.pad_id, key[0], SLOTS).copy_into(g.inputs, g.staging)
        times = []
        for i in range(n + 10):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            g.graph.replay()
            end.record()
            end.synchronize()
            if i >= 10:
                times.append(start.elapsed_time(end))
    return {**summary(times), "bucket": list(key)}


def raw_latency(host: str, port: int, bodies: list[bytes], n: int) -> dict:
    """Latency with the lightest client there is: one kept-alive http.client connection."""
    conn = http.client.HTTPConnection(host, port)
    times = []
    for i in range(n + 10):
        started = time.perf_counter()
        conn.request(
            "POST", "/v1/embeddings", bodies[i % len(bodies)], {"content-type": "application/json"}
        )
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"status {response.status}")
        if i >= 10:
            times.append((time.perf_counter() - started) * 1000)
    return summary(times)


def kernel_table(embedder, batch: list[list[int]]) -> list[dict]:
    """The CUDA kernels of one eager forward of ``batch``, by total time."""
    from torch.profiler import ProfilerActivity, profile

    graphs, embedder.graphs = embedder.graphs, None
    try:
        embedder.forward(batch)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            embedder.forward(batch)
            torch.cuda.synchronize()
    finally:
        embedder.graphs = graphs
    rows = [
        {"kernel": e.key[:90], "count": e.count, "total_us": e.device_time_total}
        for e in prof.key_averages()
        if e.device_time_total > 0
    ]
    return sorted(rows, key=lambda r: -r["total_us"])[:20]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build-dir", type=Path, default=Path("/tmp/qwen3-4b-random"))
    parser.add_argument("--model", default=None, help="Real weights (default: 4B architecture).")
    parser.add_argument("--quantize", default="none")
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_latency.json"))
    args = parser.parse_args()
    model_dir = Path(args.model) if args.model else build_model_dir(args.build_dir, None)
    service = EmbeddingService.from_options(
        ServiceOptions(model=str(model_dir), device="cuda:0", quantize=args.quantize)
    )
    service.warm_up()
    embedder = service.embedder
    result: dict = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "quantize": args.quantize,
        "model_gpu_bytes_after_warm_up": torch.cuda.memory_allocated(),
        "shapes": {},
    }
    server, url = start_http(service)
    host, port = url.removeprefix("http://").split(":")
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    loop = asyncio.new_event_loop()
    for name, (count, tokens) in SHAPES.items():
        texts_sets = [texts_of_lengths([tokens] * count, seed=100 + i) for i in range(20)]
        texts = texts_sets[0]
        batch = service.prepare(texts)
        bodies = [
            json.dumps({"input": t, "encoding_format": "base64"}).encode() for t in texts_sets
        ]
        stages = {
            "replay": replay_gpu_ms(embedder, batch, args.n),
            "forward": timed(lambda b=batch: embedder.forward(b), args.n),
            "prepare": timed(lambda t=texts: service.prepare(t), args.n),
            "batcher": timed(lambda b=batch: service.batcher.submit(b).result(), args.n),
            "embed_sync": timed(lambda t=texts: service.embed_sync(t), args.n),
            "embed_async": timed(lambda t=texts: loop.run_until_complete(service.embed(t)), args.n),
            "http_raw": pool.submit(raw_latency, host, int(port), bodies, args.n).result(),
            "http_httpx": pool.submit(latency, url, texts_sets, args.n).result(),
        }
        result["shapes"][name] = stages
        print(name, json.dumps({k: round(v["p50_ms"], 3) for k, v in stages.items()}), flush=True)
    server.should_exit = True
    for name, (count, tokens) in SHAPES.items():
        batch = service.prepare(texts_of_lengths([tokens] * count, seed=7))
        result[f"kernels_{name}_eager"] = table = kernel_table(embedder, batch)
        print(f"kernels of one eager {name} forward:")
        for row in table:
            print(f"{row['total_us']:9.0f} us  {row['count']:4d}  {row['kernel']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
