"""FP8 GEMMs of few rows (a short query) on a GPU: the Triton weight-streaming kernel
(``fp8.small_gemm``) against ``torch._scaled_mm`` and bf16 ``F.linear``.

    python bench/gpu_small_gemm.py --out bench/results/gpu_small_gemm.json

For the four GEMMs of a Qwen3-Embedding-4B layer (q/k/v, o, gate/up, down) and row counts
1 to 128: the time of each (``triton.testing.do_bench``, L2 flushed between runs, so the
weights come from memory as in a forward pass), the weight bandwidth it reaches, and the
largest difference of the kernel's output to ``_scaled_mm``'s; the kernel for each
configuration of ``--configs`` (BLOCK_N:BLOCK_K:WARPS:STAGES[:SPLIT], SPLIT the parts of
K, ``auto`` or left out: ``fp8.split_for``). Then ``graph_forward_ms``: the 36 layers'
GEMMs of one forward (each layer its own weights) captured in one CUDA graph and replayed,
per method and row count: what the GEMMs cost inside the server's graphs, without the
Python launch overhead that inflates single-kernel timings of a few microseconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.model import fp8  # noqa: E402

# (name, out features, in features) of one Qwen3-Embedding-4B layer's GEMMs
SHAPES = (("qkv", 6144, 2560), ("o", 2560, 4096), ("gate_up", 19456, 2560), ("down", 2560, 9728))
LAYERS = 36


def scaled_mm(xq: torch.Tensor, xs: torch.Tensor, weight: fp8.Fp8Weight) -> torch.Tensor:
    return torch._scaled_mm(
        xq, weight.weight.t(), scale_a=xs, scale_b=weight.scale[None, :], out_dtype=torch.bfloat16
    )


def measure(bf16: torch.Tensor, weight: fp8.Fp8Weight, rows: int, configs: dict) -> dict:
    """Times (µs) of one GEMM of ``rows`` rows by each method, and the kernel's differences."""
    from triton.testing import do_bench

    x = torch.randn(rows, bf16.shape[1], device=bf16.device, dtype=torch.bfloat16)
    xq, xs = fp8.quantize_rows(x)
    want = scaled_mm(xq, xs, weight).float()
    row: dict = {
        "bf16_us": 1000 * do_bench(lambda: F.linear(x, bf16)),
        "scaled_mm_us": 1000 * do_bench(lambda: scaled_mm(xq, xs, weight)),
    }
    for key, config in configs.items():
        try:
            got = fp8.small_gemm(xq, xs, weight, **config).float()
            row[key + "_us"] = 1000 * do_bench(lambda c=config: fp8.small_gemm(xq, xs, weight, **c))
            row[key + "_max_rel_diff"] = (got - want).abs().max().item() / want.abs().max().item()
        except Exception as exc:  # noqa: BLE001 - a config that does not compile
            row[key + "_error"] = str(exc)[:200]
    size = weight.weight.numel()
    row["weight_gb_per_s_scaled_mm"] = size / row["scaled_mm_us"] / 1000
    timed = [(v, k) for k, v in row.items() if k.startswith("small") and k.endswith("_us")]
    if timed:
        best_us, best = min(timed)
        row["best_small"] = best
        row["weight_gb_per_s_best_small"] = size / best_us / 1000
    return row


def parse_config(text: str) -> tuple[str, dict]:
    """BLOCK_N:BLOCK_K:WARPS:STAGES[:SPLIT] -> (name, small_gemm keyword arguments)."""
    parts = text.split(":")
    block_n, block_k, warps, stages = (int(v) for v in parts[:4])
    split = parts[4] if len(parts) > 4 else "auto"
    config = {"block_n": block_n, "block_k": block_k, "warps": warps, "stages": stages}
    if split != "auto":
        config["split"] = int(split)
    return f"small_{block_n}_{block_k}_{warps}_{stages}_{split}", config


def graph_forward_ms(layers: list[dict[str, fp8.Fp8Weight]], rows: int, gemm) -> float:
    """GPU time (ms) of every layer's GEMMs for ``rows`` rows, replayed as one CUDA graph."""
    device = layers[0]["o"].weight.device
    inputs = {}
    for weight in layers[0].values():
        depth = weight.weight.shape[1]
        inputs[depth] = fp8.quantize_rows(
            torch.randn(rows, depth, device=device, dtype=torch.bfloat16)
        )

    def forward() -> None:
        for layer in layers:
            for weight in layer.values():
                gemm(*inputs[weight.weight.shape[1]], weight)

    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        forward()  # compiles and warms up outside the capture
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        forward()
    for _ in range(3):
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    replays = 20
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) / replays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,16,64")
    parser.add_argument(
        "--configs", default="32:256:4:4:1,32:256:4:4:2,32:256:4:4:4,32:256:4:4:8,32:256:4:4:auto"
    )
    parser.add_argument("--graph-rows", default="1,16,64")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_small_gemm.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cuda:0")
    configs = dict(parse_config(c) for c in args.configs.split(","))
    result: dict = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__}
    totals: dict[str, dict[str, float]] = {}
    layers: list[dict[str, fp8.Fp8Weight]] = [{} for _ in range(LAYERS)]
    for name, cols, depth in SHAPES:
        bf16 = torch.randn(cols, depth, device=device, dtype=torch.bfloat16) / depth**0.5
        weight = fp8.Fp8Weight.of(bf16)
        for layer in layers:  # each layer its own weights (as many bytes to read as a model)
            layer[name] = fp8.Fp8Weight(weight.weight.clone(), weight.scale.clone())
        for rows in (int(r) for r in args.rows.split(",")):
            row = measure(bf16, weight, rows, configs)
            result[f"{name}_{rows}"] = row
            per_layer = totals.setdefault(str(rows), {})
            for k, v in row.items():
                if k.endswith("_us"):
                    per_layer[k] = per_layer.get(k, 0.0) + v
            print(
                name, rows, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            )
    # what the 36 layers' GEMMs of a forward of that many rows take, per method (ms)
    result["forward_gemms_ms"] = {
        rows: {k.removesuffix("_us"): LAYERS * v / 1000 for k, v in per_layer.items()}
        for rows, per_layer in totals.items()
    }
    print(json.dumps(result["forward_gemms_ms"], indent=1))
    methods = {"scaled_mm": scaled_mm} | {
        key: (lambda xq, xs, w, c=config: fp8.small_gemm(xq, xs, w, **c))
        for key, config in configs.items()
    }
    result["graph_forward_ms"] = {
        rows: {key: graph_forward_ms(layers, int(rows), gemm) for key, gemm in methods.items()}
        for rows in args.graph_rows.split(",")
    }
    print(json.dumps(result["graph_forward_ms"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
