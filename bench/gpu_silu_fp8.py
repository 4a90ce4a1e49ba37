"""FP8's SiLU·mul that quantizes its rows for the down GEMM (``kernels.silu_mul_fp8``, one
kernel, a whole row per program) against SiLU·mul then the quantize kernel (two kernels,
the 16-bit product written and read back), on Qwen3-4B's gate/up product (2 × 9,728
columns), on a GPU:

    python bench/gpu_silu_fp8.py --out bench/results/gpu_silu_fp8_h100.json

For each row count, each method over ``LAYERS`` products (each layer its own, as in a
forward pass) in one CUDA graph, replayed: µs a call, and how many FP8 values and scales
differ between the two.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_small_gemm import graph_ms  # noqa: E402

from bridge.model.fp8 import quantize_rows  # noqa: E402
from bridge.model.kernels import silu_mul_fp8_triton, silu_mul_triton  # noqa: E402

INTERMEDIATE, LAYERS = 9728, 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="65,128,1280,4096,32768")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_silu_fp8.json"))
    args = parser.parse_args()
    device = torch.device("cuda")
    torch.manual_seed(0)
    result = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__, "rows": {}}
    for rows in (int(r) for r in args.rows.split(",")):
        products = [
            torch.randn(rows, 2 * INTERMEDIATE, device=device).bfloat16() for _ in range(LAYERS)
        ]
        methods = {
            "silu_mul_fp8": silu_mul_fp8_triton,
            "silu_mul_then_quantize": lambda p: quantize_rows(silu_mul_triton(p)),
            "silu_mul_alone": silu_mul_triton,
        }
        entry = {}
        for name, method in methods.items():
            ms = graph_ms([lambda p=p, m=method: m(p) for p in products], device) / LAYERS
            entry[name] = {"us": 1000 * ms}
        fused = silu_mul_fp8_triton(products[0])
        q, scale = quantize_rows(silu_mul_triton(products[0]))
        entry["fp8_values_differing"] = int((fused.q.float() != q.float()).sum())
        entry["scales_differing"] = int((fused.scale != scale).sum())
        entry["speedup"] = entry["silu_mul_then_quantize"]["us"] / entry["silu_mul_fp8"]["us"]
        result["rows"][str(rows)] = entry
        print(rows, json.dumps(entry), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
