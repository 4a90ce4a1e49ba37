"""Packed attention on a GPU: our Triton kernel against flash attention, Qwen3-4B's heads.

    python bench/gpu_attention.py --out bench/results/gpu_attention.json

For each case (sequence lengths as one replay packs them, the unused slots of a CUDA-graph
bucket included) and each method: one layer's attention for all 36 layers (each its own
q, k and v, strided as the packed forward leaves them) captured in one CUDA graph and
replayed; microseconds per layer, and the largest difference of the kernel's output to
flash attention's. ``default``: ``attention.attention_triton`` with the tile sizes it
picks; then each configuration of ``--configs`` through ``attention.launch_triton``:
BLOCK_M:BLOCK_N:WARPS:STAGES[:whole] (BLOCK_M queries of each of the 4 query heads of
a key/value head a program; ``whole``: the blocks of keys every row of a tile sees whole
go through an unmasked step, the rest through the masked one). ``pooled`` cases are the
last layer's: one query per sequence over its whole text. With the default tiles, each
case that is not pooled also times the q/k norm and rotary with attention, as the
forward runs them (``rope_inside_us``: ``norm_rope`` on the k heads, the q heads normed
and rotated by the attention kernel, ``attention.QueryRope``) and as it did before
(``rope_before_us``: ``norm_rope`` on the q and k heads, then attention).
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

from bridge.model import attention  # noqa: E402
from bridge.model.kernels import norm_rope_triton  # noqa: E402

HEADS, KV_HEADS, DIM, LAYERS = 32, 8, 128, 36
SLOTS = 32
DEFAULT_CONFIGS = (
    "16:32:4:3,16:32:4:3:whole,16:64:4:3:whole,32:32:4:3:whole,32:32:8:3:whole,"
    "32:64:8:3:whole,32:64:8:2:whole,16:16:4:2,4:64:4:2,4:64:4:2:whole,4:128:4:2:whole"
)


def cases() -> dict[str, tuple[list[int], int]]:
    """name -> (sequence lengths, the longest a bucket sizes attention for)."""
    gen = torch.Generator().manual_seed(0)
    mixed = torch.exp(torch.randn(SLOTS, generator=gen) * 0.8 + 4.0).clamp(3, 256).int().tolist()

    def slots(lengths: list[int]) -> list[int]:  # a graph bucket's filler and empty slots
        return lengths + [0] * (SLOTS + 1 - len(lengths))

    return {
        "1x16": (slots([16]), 16),
        "4x32": (slots([32] * 4), 64),
        "10x128": (slots([128] * 10), 256),
        "32x64": (slots([64] * 32), 64),
        "8x256": (slots([256] * 8), 256),
        "mixed32": (slots(mixed), 256),
        # one long text among short ones: the whole launch takes the long text's tiles
        "mixed31+1200": (mixed[:31] + [1200], 1200),
        "4x512": ([512] * 4, 512),
        "16x512": ([512] * 16, 512),
        "2x1024": ([1024] * 2, 1024),
        "2x2048": ([2048] * 2, 2048),
        "1x8192": ([8192], 8192),
    }


def bounds(lengths: list[int], device) -> torch.Tensor:
    """cu_seqlens of sequences of ``lengths``: each one's start, then the end."""
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return cu.to(device)


def layer_inputs(lengths: list[int], pooled: bool, device) -> list[tuple]:
    """Arguments of one attention call per layer, as the packed forward makes them."""
    tokens = sum(lengths)
    cu = bounds(lengths, device)
    last = (cu[1:] - 1).clamp(min=0).long()
    calls = []
    for _ in range(LAYERS):
        qkv = torch.randn(tokens, (HEADS + 2 * KV_HEADS) * DIM, device=device, dtype=torch.bfloat16)
        qk = qkv[:, : (HEADS + KV_HEADS) * DIM].view(tokens, HEADS + KV_HEADS, DIM).clone()
        q, k = qk[:, :HEADS], qk[:, HEADS:]
        v = qkv[:, (HEADS + KV_HEADS) * DIM :].view(tokens, KV_HEADS, DIM)
        if pooled:
            q = q[last].contiguous()
            cu_q = torch.arange(len(lengths) + 1, dtype=torch.int32, device=device)
            calls.append((q, k, v, cu_q, cu, 1, True))
        else:
            calls.append((q, k, v, cu, cu, None, False))
    return calls


def rope_steps(lengths: list[int], longest: int, device) -> dict:
    """µs a layer of the q/k norm and rotary with attention: inside the kernel and before."""
    tokens, eps = sum(lengths), 1e-6
    positions = torch.cat([torch.arange(n) for n in lengths]).to(device)
    angles = torch.arange(max(lengths) + 1, device=device)[:, None] * torch.rand(DIM, device=device)
    cos, sin = angles.cos().bfloat16(), angles.sin().bfloat16()
    cu = bounds(lengths, device)
    layers = []
    for _ in range(LAYERS):
        qkv = torch.randn(tokens, (HEADS + 2 * KV_HEADS) * DIM, device=device, dtype=torch.bfloat16)
        norms = (torch.rand(DIM, device=device) + 0.5).bfloat16(), torch.ones_like(cos[0])
        layers.append((qkv, norms))

    def before(qkv, norms):
        qk = qkv[:, : (HEADS + KV_HEADS) * DIM].view(tokens, HEADS + KV_HEADS, DIM)
        qk = norm_rope_triton(qk, norms, HEADS, eps, cos, sin, positions)
        v = qkv[:, (HEADS + KV_HEADS) * DIM :].view(tokens, KV_HEADS, DIM)
        return attention.attention_triton(qk[:, :HEADS], qk[:, HEADS:], v, cu, cu, longest,
                                          longest, True)  # fmt: skip

    def inside(qkv, norms):
        k = qkv[:, HEADS * DIM : (HEADS + KV_HEADS) * DIM].view(tokens, KV_HEADS, DIM)
        k = norm_rope_triton(k, norms, 0, eps, cos, sin, positions)
        q = qkv[:, : HEADS * DIM].view(tokens, HEADS, DIM)
        v = qkv[:, (HEADS + KV_HEADS) * DIM :].view(tokens, KV_HEADS, DIM)
        rope = attention.QueryRope(norms[0], eps, cos, sin, positions)
        return attention.attention_triton(q, k, v, cu, cu, longest, longest, True, rope)

    out = {}
    for name, step in (("rope_before", before), ("rope_inside", inside)):
        us = graph_ms([lambda a=a, f=step: f(*a) for a in layers], device) * 1000 / LAYERS
        out[f"{name}_us"] = us
    got, want = inside(*layers[0]).float(), before(*layers[0]).float()
    out["rope_inside_max_diff"] = float((got - want).abs().max())
    return out


def measure(lengths: list[int], longest: int, pooled: bool, configs: list[str], device) -> dict:
    inputs = layer_inputs(lengths, pooled, device)
    max_q = 1 if pooled else longest
    causal = not pooled

    def flash(a):
        q, k, v, cu_q, cu_k, _, _ = a
        return attention.attention_flash(q, k, v, cu_q, cu_k, max_q, longest, causal)

    def triton_(a, tiles: dict):
        q, k, v, cu_q, cu_k, _, _ = a
        return attention.launch_triton(q, k, v, cu_q, cu_k, max_q, causal, **tiles)

    def ours(a):
        q, k, v, cu_q, cu_k, _, _ = a
        return attention.attention_triton(q, k, v, cu_q, cu_k, max_q, longest, causal)

    out = {"flash_us": graph_ms([lambda a=a: flash(a) for a in inputs], device) * 1000 / LAYERS}
    want = flash(inputs[0]).float()
    default = ours(inputs[0]).float()
    out["default_us"] = graph_ms([lambda a=a: ours(a) for a in inputs], device) * 1000 / LAYERS
    out["default_max_diff"] = float((default - want).abs().max())
    out["flash_max_abs"] = float(want.abs().max())
    for config in configs:
        parts = config.split(":")
        tiles = dict(zip(("block", "block_n", "warps", "stages"), map(int, parts[:4]), strict=True))
        if len(parts) > 4:  # "whole": unmasked steps for the blocks a whole tile sees
            tiles["split"] = parts[4] == "whole"
        try:
            got = triton_(inputs[0], tiles).float()
            us = graph_ms([lambda a=a, t=tiles: triton_(a, t) for a in inputs], device)
            out[config] = {"us": us * 1000 / LAYERS, "max_diff": float((got - want).abs().max())}
        except Exception as e:  # noqa: BLE001 - a configuration the GPU cannot run
            out[config] = {"error": str(e)[:200]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=DEFAULT_CONFIGS)
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    wanted = set(args.cases.split(",")) if args.cases else None
    device = torch.device("cuda")
    configs = args.configs.split(",")
    result = {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__, "cases": {}}
    for name, (lengths, longest) in cases().items():
        if wanted is not None and name not in wanted:
            continue
        for pooled in (False, True):
            if pooled and name not in ("1x16", "10x128", "mixed32"):
                continue
            key = name + (" pooled" if pooled else "")
            result["cases"][key] = row = measure(lengths, longest, pooled, configs, device)
            if not pooled:
                row |= rope_steps(lengths, longest, device)
            best = min(
                ((c, r["us"]) for c, r in row.items() if isinstance(r, dict) and "us" in r),
                key=lambda cr: cr[1],
            )
            rope = ""
            if not pooled:
                before, inside = row["rope_before_us"], row["rope_inside_us"]
                rope = f"  rope before {before:.2f} inside {inside:.2f}"
            print(
                f"{key:16s} flash {row['flash_us']:7.2f} us  default {row['default_us']:7.2f} us"
                f"  best {best[0]} {best[1]:7.2f} us  diff {row['default_max_diff']:.4f}{rope}",
                flush=True,
            )
            torch.cuda.empty_cache()
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
