"""The FP8 GEMM of many rows: cuBLAS (``torch._scaled_mm``) against our persistent kernel
with a stream-K tail (bridge/model/fp8_tiles.py), whole tiles only and as planned, on
Qwen3-4B's four GEMM shapes, each call timed inside a CUDA graph of 20 (µs a call, best of
five replays):

    python bench/gpu_fp8_tiles.py --out bench/results/gpu_fp8_tiles_h100.json

``--configs`` adds tile settings ``block_m:block_n:block_k:warps:stages`` to try.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.model import fp8_tiles  # noqa: E402
from bridge.model.fp8 import quantize_rows, quantize_weight  # noqa: E402

SHAPES = {"qkv": (2560, 6144), "o": (4096, 2560), "gate_up": (2560, 19456), "down": (9728, 2560)}
ROWS = (256, 640, 1024, 1280, 1536, 2048, 2560, 4096, 8192, 16384)


def graph_us(fn, reps: int = 20, rounds: int = 5) -> float:
    """µs a call of ``fn``: ``reps`` calls captured in one CUDA graph, best of ``rounds``."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    best = float("inf")
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) * 1000 / reps)
    return best


def config_of(text: str) -> dict:
    bm, bn, bk, warps, stages = (int(v) for v in text.split(":"))
    return {"block_m": bm, "block_n": bn, "block_k": bk, "warps": warps, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default=",".join(map(str, ROWS)))
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--configs", default="", help="extra tile settings, comma-separated")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device("cuda")
    configs = [config_of(c) for c in args.configs.split(",") if c]
    out: dict = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__}
    out["tiles"], out["full_enough"], out["cases"] = fp8_tiles.TILES, fp8_tiles.FULL_ENOUGH, []
    for name in args.shapes.split(","):
        depth, cols = SHAPES[name]
        torch.manual_seed(0)
        wq, ws = quantize_weight(torch.randn(cols, depth, device=device) * 0.02)
        for rows in map(int, args.rows.split(",")):
            xq, xs = quantize_rows(torch.randn(rows, depth, device=device, dtype=torch.bfloat16))

            def cublas(xq=xq, xs=xs, wq=wq, ws=ws):
                return torch._scaled_mm(
                    xq, wq.t(), scale_a=xs, scale_b=ws[None, :], out_dtype=torch.bfloat16
                )

            def ours(xq=xq, xs=xs, wq=wq, ws=ws, **kw):
                return fp8_tiles.fp8_gemm(xq, xs, wq, ws, **kw)

            want = cublas().float()
            got = ours().float()
            tiles = -(-rows // 128) * -(-cols // 128)
            case = {
                "shape": name,
                "rows": rows,
                "tiles": tiles,
                "whole_planned": fp8_tiles.plan(
                    rows,
                    cols,
                    torch.cuda.get_device_properties(device).multi_processor_count,
                    128,
                    128,
                ),  # fmt: skip
                "max_rel_diff": ((got - want).abs().max() / want.abs().max()).item(),
                "cublas_us": graph_us(cublas),
                "ours_us": graph_us(ours),
                "ours_whole_tiles_us": graph_us(lambda t=tiles: ours(whole_tiles=t)),
            }
            for c in configs:
                key = "ours_" + ":".join(str(v) for v in c.values()) + "_us"
                case[key] = graph_us(lambda c=c: ours(**c))
            flops = 2 * rows * depth * cols
            case["cublas_tflops"] = flops / case["cublas_us"] / 1e6
            case["ours_tflops"] = flops / case["ours_us"] / 1e6
            out["cases"].append(case)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                              for k, v in case.items()}), flush=True)  # fmt: skip
            if args.out:
                args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
