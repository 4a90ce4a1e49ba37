"""Where the time of one Qwen3-4B batch goes (torch profiler), for issue 7 work.

    python bench/gpu_profile.py [--tokens 32768] [--seq 512]
Prints the top CUDA kernels by total time and the wall time of one forward (the server's
forward: padding-free with the fused kernels, eager, no CUDA graphs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu import build_model_dir  # noqa: E402

from bridge.model.embedder import Embedder  # noqa: E402
from bridge.model.families import load_profile  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--build-dir", type=Path, default=Path("/tmp/qwen3-4b-random"))
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    embedder = Embedder.load(load_profile(str(build_model_dir(args.build_dir, None))), "cuda")
    batch = [
        [1000 + (i * 7 + j) % 20000 for j in range(args.seq)]
        for i in range(args.tokens // args.seq)
    ]
    short = [[1000 + j for j in range(16)]]
    for _ in range(3):
        embedder.forward(batch)
        embedder.forward(short)
    summary = time_shapes("eager", embedder, batch, short)
    if not args.no_profile:
        profile_tables(embedder, batch, short)
    print(summary)


def time_shapes(label: str, embedder: Embedder, batch, short) -> str:
    parts = []
    for name, b in (("batch", batch), ("short", short)):
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(5):
            embedder.forward(b)
        torch.cuda.synchronize()
        ms = (time.perf_counter() - started) / 5 * 1000
        tokens = sum(map(len, b))
        parts.append(f"{name} {ms:.1f} ms ({tokens / ms * 1000:.0f} tok/s)")
    return f"{label}: " + ", ".join(parts)


def profile_tables(embedder: Embedder, batch, short) -> None:
    from torch.profiler import ProfilerActivity, profile

    for name, b in (("batch", batch), ("short", short)):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            embedder.forward(b)
            torch.cuda.synchronize()
        print(f"--- {name}")
        print(
            prof.key_averages().table(
                sort_by="cuda_time_total", row_limit=14, max_name_column_width=60
            )
        )


if __name__ == "__main__":
    main()
