"""A/B of the fused Triton kernels (bridge/model/kernels.py) on one model in one process.

Builds (or loads) the Qwen3-Embedding-4B architecture, times forward passes before and
after ``fuse_qwen3`` on the same weights, and compares the pooled vectors:

    python bench/gpu_kernels.py --out bench/results/gpu_kernels.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu import END_ID, VOCAB_WORDS, build_model_dir  # noqa: E402

from bridge.model.embedder import Embedder  # noqa: E402
from bridge.model.kernels import fuse_qwen3  # noqa: E402
from bridge.model.profile import load_profile  # noqa: E402


def batches(seed: int = 0) -> dict[str, list[list[int]]]:
    rng = random.Random(seed)

    def seq(n: int) -> list[int]:
        return [1000 + rng.randrange(VOCAB_WORDS) for _ in range(n - 1)] + [END_ID]

    return {
        "64x512": [seq(512) for _ in range(64)],
        "mixed_32": [seq(rng.randint(8, 400)) for _ in range(32)],
        "10x129": [seq(129) for _ in range(10)],
        "1x16": [seq(16)],
    }


def timed(embedder: Embedder, batch: list[list[int]], repeats: int) -> tuple[float, object]:
    out = embedder.forward(batch)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        out = embedder.forward(batch)
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats * 1000, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None)
    parser.add_argument("--build-dir", type=Path, default=Path("/tmp/qwen3-4b-random"))
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_kernels.json"))
    args = parser.parse_args()
    model_dir = Path(args.model) if args.model else build_model_dir(args.build_dir, args.layers)
    embedder = Embedder.load(load_profile(str(model_dir)), "cuda:0")
    work = batches()
    before = {name: timed(embedder, b, 10) for name, b in work.items()}
    fused = fuse_qwen3(embedder.model)
    after = {name: timed(embedder, b, 10) for name, b in work.items()}
    result: dict = {"gpu": torch.cuda.get_device_name(), "modules_fused": fused, "forward": {}}
    for name in work:
        (ms_a, out_a), (ms_b, out_b) = before[name], after[name]
        a = torch.nn.functional.normalize(torch.from_numpy(out_a), dim=-1)
        b = torch.nn.functional.normalize(torch.from_numpy(out_b), dim=-1)
        tokens = sum(len(s) for s in work[name])
        result["forward"][name] = {
            "eager_ms": round(ms_a, 2),
            "fused_ms": round(ms_b, 2),
            "speedup": round(ms_a / ms_b, 3),
            "fused_tokens_per_s": round(tokens / ms_b * 1000),
            "cosine_min": float((a * b).sum(-1).min()),
        }
        print(name, result["forward"][name], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
