"""FP8 GEMMs of few rows (a short query) on a GPU: the Triton weight-streaming kernel
(``fp8.small_gemm``) against ``torch._scaled_mm`` and bf16 ``F.linear``.

    python bench/gpu_small_gemm.py --out bench/results/gpu_small_gemm.json

For each GEMM of a Qwen3-Embedding-4B layer (q/k/v, o, gate/up, down), each row count of
``--rows`` and each method: that GEMM of all 36 layers (each layer its own weights, so
they come from memory as in a forward pass) captured in one CUDA graph and replayed; the
time per GEMM, the weight bandwidth it reaches, and the largest difference of the
kernel's output to ``_scaled_mm``'s. Timing kernels of a few microseconds one at a time
from Python would measure the launch overhead instead; inside the server's graphs there
is none. Methods: ``scaled_mm``, ``bf16``, the kernel for each configuration of
``--configs`` (BLOCK_N:BLOCK_K:WARPS:STAGES[:SPLIT], SPLIT the parts of K, ``auto`` or
left out: ``fp8.split_for``), and ``small_bf16_rows``: the kernel on bf16 rows as they
are (its difference taken to the product with the widened FP8 weights).
``forward_gemms_ms``: per row count, the four GEMMs of the 36 layers per method, and with
the best method of each GEMM (``best``). ``--as-forward``: each configuration runs each GEMM
as the FP8 forward calls it (o and down on bf16 rows up to ``fp8.WIDE_ROWS`` with their
split-K partials left for the next kernel, gate/up with SiLU·mul in its epilogue), its
difference taken to the default configuration's output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.model import fp8  # noqa: E402

# (name, out features, in features) of one Qwen3-Embedding-4B layer's GEMMs
SHAPES = (("qkv", 6144, 2560), ("o", 2560, 4096), ("gate_up", 19456, 2560), ("down", 2560, 9728))
LAYERS = 36
DEFAULT_CONFIGS = (
    "32:256:4:4:1,32:256:4:4:auto,16:256:4:4:auto,64:256:4:4:auto,32:512:4:3:auto,"
    "32:128:4:6:auto,32:256:8:4:auto,16:512:4:3:auto,32:256:4:3:auto"
)


def scaled_mm(xq: torch.Tensor, xs: torch.Tensor, weight: fp8.Fp8Weight) -> torch.Tensor:
    return torch._scaled_mm(
        xq, weight.weight.t(), scale_a=xs, scale_b=weight.scale[None, :], out_dtype=torch.bfloat16
    )


def parse_config(text: str) -> tuple[str, dict]:
    """BLOCK_N:BLOCK_K:WARPS:STAGES[:SPLIT] -> (name, small_gemm keyword arguments)."""
    parts = text.split(":")
    block_n, block_k, warps, stages = (int(v) for v in parts[:4])
    split = parts[4] if len(parts) > 4 else "auto"
    config = {"block_n": block_n, "block_k": block_k, "warps": warps, "stages": stages}
    if split != "auto":
        config["split"] = int(split)
    return f"small_{block_n}_{block_k}_{warps}_{stages}_{split}", config


def graph_ms(calls: list[Callable[[], object]], device: torch.device) -> float:
    """GPU time (ms) of ``calls`` in order, captured as one CUDA graph and replayed."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for call in calls:  # compiles and warms up outside the capture
            call()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
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


def mark_best(row: dict, size: int) -> None:
    """Name the fastest FP8 method of ``row`` (its ``*_us`` times, bf16 aside) and the
    weight bandwidth it reaches over ``size`` bytes of weights."""
    best_us, best = min((v, k) for k, v in row.items() if k.endswith("_us") and k != "bf16_us")
    row["best"] = best.removesuffix("_us")
    row["weight_gb_per_s_best"] = size / best_us / 1000


def forward_rows(name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The rows (and scales) the FP8 forward gives GEMM ``name``: few bf16 rows as they are
    for o and down, FP8 rows from the norm kernel for q/k/v and gate/up."""
    if name in ("o", "down") and x.shape[0] <= fp8.WIDE_ROWS:
        return x, None
    return fp8.quantize_rows(x)


def forward_call(name: str, rows: tuple, weight: fp8.Fp8Weight, config: dict):
    """The GEMM ``name`` as the FP8 packed forward runs it, with ``config``."""
    if name == "gate_up":
        return fp8.small_gemm(*rows, weight, paired=True, **config)
    return fp8.small_gemm(*rows, weight, keep_parts=name in ("o", "down"), **config)


def measure_forward(name: str, weights: list[fp8.Fp8Weight], rows: int, configs: dict) -> dict:
    """Per configuration: µs per GEMM as the forward calls it, and its largest difference
    to the default configuration's output."""
    device = weights[0].weight.device
    x = torch.randn(rows, weights[0].weight.shape[1], device=device, dtype=torch.bfloat16)
    inputs = forward_rows(name, x)
    want = fp8.dense(forward_call(name, inputs, weights[0], {})).float()
    row: dict = {}
    for key, config in {"default": {}, **configs}.items():
        try:
            got = fp8.dense(forward_call(name, inputs, weights[0], config)).float()
            calls = [lambda w=w, c=config: forward_call(name, inputs, w, c) for w in weights]
            row[f"{key}_us"] = 1000 * graph_ms(calls, device) / len(weights)
            row[f"{key}_max_rel_diff"] = (got - want).abs().max().item() / want.abs().max().item()
        except Exception as exc:  # noqa: BLE001 - a config that does not compile
            row[f"{key}_error"] = str(exc)[:200]
    mark_best(row, weights[0].weight.numel())
    return row


def measure(bf16: torch.Tensor, weights: list[fp8.Fp8Weight], rows: int, configs: dict) -> dict:
    """Per method: µs per GEMM of ``rows`` rows over the layers' weights, and differences."""
    device = bf16.device
    x = torch.randn(rows, bf16.shape[1], device=device, dtype=torch.bfloat16)
    xq, xs = fp8.quantize_rows(x)
    want = scaled_mm(xq, xs, weights[0]).float()
    copies = [bf16.clone() for _ in weights]
    row: dict = {"bf16_us": 1000 * graph_ms([lambda w=w: F.linear(x, w) for w in copies], device)}
    del copies
    methods: dict[str, Callable] = {"scaled_mm": lambda w: scaled_mm(xq, xs, w)}
    for key, config in configs.items():
        methods[key] = lambda w, c=config: fp8.small_gemm(xq, xs, w, **c)
    # bf16 rows as they are (what the packed forward gives o and down): no quantize kernel
    methods["small_bf16_rows"] = lambda w: fp8.small_gemm(x, None, w)
    w0 = weights[0]
    wide = ((x.float() @ w0.weight.float().t()) * w0.scale).bfloat16().float()
    for key, method in methods.items():
        try:
            got = method(weights[0]).float()
            ref = wide if key == "small_bf16_rows" else want
            row[f"{key}_us"] = 1000 * graph_ms(
                [lambda w=w, m=method: m(w) for w in weights], device
            )
            row[f"{key}_us"] /= len(weights)
            row[f"{key}_max_rel_diff"] = (got - ref).abs().max().item() / ref.abs().max().item()
        except Exception as exc:  # noqa: BLE001 - a config that does not compile
            row[f"{key}_error"] = str(exc)[:200]
    row["bf16_us"] /= len(weights)
    size = weights[0].weight.numel()
    mark_best(row, size)
    row["weight_gb_per_s_scaled_mm"] = size / row["scaled_mm_us"] / 1000
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,16,64")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--as-forward", action="store_true", help="GEMMs as the forward runs them")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_small_gemm.json"))
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cuda:0")
    configs = dict(parse_config(c) for c in args.configs.split(","))
    result: dict = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__}
    totals: dict[str, dict[str, float]] = {}
    for name, cols, depth in SHAPES:
        bf16 = torch.randn(cols, depth, device=device, dtype=torch.bfloat16) / depth**0.5
        weight = fp8.Fp8Weight.of(bf16)
        weights = [
            fp8.Fp8Weight(weight.weight.clone(), weight.scale.clone()) for _ in range(LAYERS)
        ]
        for rows in args.rows.split(","):
            if args.as_forward:
                row = measure_forward(name, weights, int(rows), configs)
            else:
                row = measure(bf16, weights, int(rows), configs)
            result[f"{name}_{rows}"] = row
            per_rows = totals.setdefault(rows, {})
            for key, value in row.items():
                if key.endswith("_us"):
                    method = key.removesuffix("_us")
                    per_rows[method] = per_rows.get(method, 0.0) + LAYERS * value / 1000
            per_rows["best"] = per_rows.get("best", 0.0) + LAYERS * row[row["best"] + "_us"] / 1000
            print(
                name,
                rows,
                row["best"],
                {k: round(v, 2) for k, v in row.items() if k.endswith("_us")},
            )
        del weights
    result["forward_gemms_ms"] = totals
    print(json.dumps(totals, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
