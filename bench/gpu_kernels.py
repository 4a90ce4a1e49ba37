"""A/B of the forward paths on one model in one process (same weights):

- ``transformers``: the padded transformers forward (left padding, attention mask);
- ``packed_torch``: the padding-free forward with the plain torch steps;
- ``packed_triton``: the padding-free forward with the fused Triton kernels (the default);
- ``graph``: its CUDA-graph replay (batches that fit a bucket).

Times each on a few batch shapes and gives the lowest cosine of each against transformers:

    python bench/gpu_kernels.py --out bench/results/gpu_kernels.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu import END_ID, VOCAB_WORDS, build_model_dir  # noqa: E402

from bridge.model.embedder import Embedder  # noqa: E402
from bridge.model.families import load_profile  # noqa: E402
from bridge.model.kernels import TORCH_OPS, TRITON_OPS  # noqa: E402


def batches(seed: int = 0) -> dict[str, list[list[int]]]:
    rng = random.Random(seed)

    def seq(n: int) -> list[int]:
        return [1000 + rng.randrange(VOCAB_WORDS) for _ in range(n - 1)] + [END_ID]

    return {
        "64x512": [seq(512) for _ in range(64)],
        "mixed_256": [
            seq(min(1024, max(8, int(rng.lognormvariate(4.8, 0.9))))) for _ in range(256)
        ],
        "mixed_32": [seq(rng.randint(8, 400)) for _ in range(32)],
        "10x129": [seq(129) for _ in range(10)],
        "1x16": [seq(16)],
    }


def timed(forward, batch: list[list[int]], repeats: int) -> tuple[float, np.ndarray]:
    out = forward(batch)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        out = forward(batch)
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats * 1000, out


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def replay_breakdown(graphs, batch: list[list[int]], repeats: int) -> dict:
    """Where the time of one replayed batch goes: the whole call, the replay alone (GPU),
    and the host's share (packing and copies in, the copy out)."""
    key = graphs.bucket_for(sum(map(len, batch)), max(map(len, batch)), len(batch))
    g = graphs.graphs[key]
    whole = timed(lambda b: graphs.run(b), batch, repeats)[0]
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        g.graph.replay()
    end.record()
    torch.cuda.synchronize()
    return {
        "bucket": list(key),
        "call_ms": round(whole, 3),
        "replay_gpu_ms": round(start.elapsed_time(end) / repeats, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--build-dir", type=Path, default=Path("/tmp/qwen3-4b-random"))
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_kernels.json"))
    args = parser.parse_args()
    model_dir = Path(args.model) if args.model else build_model_dir(args.build_dir, args.layers)
    embedder = Embedder.load(load_profile(str(model_dir)), "cuda:0", fused_kernels=True)
    packed = embedder.packed
    assert packed is not None, "the padding-free forward did not load"
    result: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    started = time.perf_counter()
    embedder.capture_graphs()
    result["graph_capture_seconds"] = time.perf_counter() - started
    result["graphs"] = len(embedder.graphs.graphs)
    graphs = embedder.graphs

    def mode(name: str):
        embedder.graphs = graphs if name == "graph" else None
        embedder.packed = None if name == "transformers" else packed
        packed.ops = TORCH_OPS if name == "packed_torch" else TRITON_OPS
        return embedder.forward

    result["forward"] = {}
    for shape, batch in batches().items():
        tokens = sum(map(len, batch))
        row: dict = {"tokens": tokens}
        ref = None
        for name in ("transformers", "packed_torch", "packed_triton", "graph"):
            if name == "graph" and graphs.run(batch) is None:
                continue
            reps = 3 if name == "transformers" else args.repeats  # slow on unsorted lengths
            ms, out = timed(mode(name), batch, reps)
            ref = out if ref is None else ref
            row[name] = {
                "ms": round(ms, 2),
                "tokens_per_s": round(tokens / ms * 1000),
                "cosine_vs_transformers": min_cosine(out, ref),
            }
        result["forward"][shape] = row
        print(shape, json.dumps(row), flush=True)

    # Attention sized for the longest sequence: ten texts of 129 tokens replayed in the
    # bucket of their length class and in one sized for the whole token count.
    ten = batches()["10x129"]
    mode("graph")
    tight = graphs.bucket_for(1290, 129, 10)
    loose = max(k for k in graphs.graphs if k[0] == tight[0])
    captured, times = graphs.graphs, {}
    for key in (tight, loose):
        graphs.graphs = {key: captured[key]}  # the only bucket: the replay must use it
        times[f"{key[0]} tokens, longest {key[1]}"] = timed(embedder.forward, ten, args.repeats)[0]
    graphs.graphs = captured
    result["attention_bucket_ms"] = times
    print("attention buckets", times, flush=True)
    result["replay_breakdown_10x128"] = replay_breakdown(graphs, ten, args.repeats)
    print("replay breakdown", result["replay_breakdown_10x128"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
