"""The MLP's gate/up GEMM with SiLU·mul in its epilogue (``gate_up.gate_up_silu``) against
cuBLAS (``F.linear``) followed by the SiLU·mul kernel, on a GPU, Qwen3-4B's shapes.

    python bench/gpu_gate_up.py --out bench/results/gpu_gate_up.json

For each row count of ``--rows`` and each method, the call repeated over ``LAYERS``
weights (each layer its own, as in a forward pass) in one CUDA graph, replayed: ms per
call, TFLOP/s of the GEMM's multiply-adds, and the largest difference to the unfused
result relative to its largest value. Methods: ``cublas`` (the GEMM alone: what the
fused kernel must approach), ``unfused`` (the GEMM + SiLU·mul, what the forward does
below ``gate_up.MIN_ROWS`` rows), ``fused`` (the kernel with its default tiles,
``gate_up.TILES``, and pipeline depth by rows: one of the first two configurations
repeats it) and each configuration of ``--configs``:
BLOCK_M:BLOCK_N:BLOCK_K:WARPS:STAGES:GROUP_M[:tiles][:ws] (``tiles``: one program per
tile instead of one per SM; ``ws``: Triton's warp specialization of the tile loop).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_small_gemm import graph_ms  # noqa: E402

from bridge.model import gate_up  # noqa: E402
from bridge.model.kernels import silu_mul_triton  # noqa: E402

HIDDEN, INTERMEDIATE, LAYERS = 2560, 9728, 4
# Session 15's H100 run (bench/results/gpu_gate_up_h100.json) also tried 64-wide tiles
# (14-26% slower than the unfused pair) and a warp-specialized 128 x 64 setting that
# Triton 3.6 could not compile; session 16's H200 run (gpu_gate_up_flat_h200.json) the
# tile and K loops pipelined as one (`tl.range(flatten=True)`: 12-20% slower) and the
# epilogue stored in two halves (within 1-4% either way); what is left brackets the default.
DEFAULT_CONFIGS = (
    "128:128:64:8:3:8,128:128:64:8:4:8,128:128:64:8:3:8:tiles,128:128:64:8:4:8:tiles,"
    "256:64:64:8:3:8,128:128:32:8:5:8,128:128:64:8:3:8:ws"
)


def parse_config(text: str) -> tuple[str, dict]:
    parts = text.split(":")
    bm, bn, bk, warps, stages, group = (int(v) for v in parts[:6])
    config = {
        "block_m": bm, "block_n": bn, "block_k": bk, "warps": warps, "stages": stages,
        "group_m": group,
    }  # fmt: skip
    if "tiles" in parts[6:]:
        config["programs"] = 1 << 30
    if "ws" in parts[6:]:
        config["warp_specialize"] = True
    return text, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1024,4096,8192,16384,32768")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_gate_up.json"))
    args = parser.parse_args()
    device = torch.device("cuda")
    torch.manual_seed(0)
    weights = [  # (gate, up) row pairs, as the packed forward stores them
        (torch.randn(2 * INTERMEDIATE, HIDDEN, device=device) / HIDDEN**0.5).bfloat16()
        for _ in range(LAYERS)
    ]
    result = {
        "gpu": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "shape": {"hidden": HIDDEN, "intermediate": INTERMEDIATE},
        "rows": {},
    }
    configs = dict(parse_config(c) for c in args.configs.split(",") if c)
    for rows in (int(r) for r in args.rows.split(",")):
        x = torch.randn(rows, HIDDEN, device=device).bfloat16()
        flops = 2 * rows * 2 * INTERMEDIATE * HIDDEN
        want = silu_mul_triton(F.linear(x, weights[0]), pairs=True).float()
        scale = want.abs().max().item()
        methods = {
            "cublas": lambda w, x=x: F.linear(x, w),
            "unfused": lambda w, x=x: silu_mul_triton(F.linear(x, w), pairs=True),
            "fused": lambda w, x=x: gate_up.gate_up_silu(x, w),
        }
        for name, config in configs.items():
            methods[name] = lambda w, x=x, c=config: gate_up.gate_up_silu(x, w, **c)
        entry = {}
        for name, method in methods.items():
            try:
                ms = graph_ms([lambda w=w, m=method: m(w) for w in weights], device) / LAYERS
            except Exception as exc:  # a configuration that does not fit (shared memory)
                entry[name] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                print(rows, name, entry[name]["error"], flush=True)
                continue
            row = {"ms": ms, "tflops": flops / ms / 1e9}
            if name != "cublas":
                got = method(weights[0]).float()
                row["max_diff_rel"] = (got - want).abs().max().item() / scale
            entry[name] = row
            print(rows, name, {k: round(v, 4) for k, v in row.items()}, flush=True)
        base = entry["unfused"]["ms"]
        for row in entry.values():
            if "ms" in row:
                row["speedup_vs_unfused"] = base / row["ms"]
        result["rows"][str(rows)] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
