"""The MLP's gate/up GEMM with SiLU·mul in its epilogue, for many 16-bit rows (Hopper).

Unfused, a Qwen3 MLP writes ``x @ [gate; up]ᵀ`` (twice the intermediate width) and a
second kernel reads it back for ``silu(gate) * up``. Here one Triton kernel computes
each output tile's gate and up columns in one product and stores only ``silu(gate) *
up``: the product of twice the width is never written nor read again. The weight's
rows come in (gate, up) pairs (``pair_rows``: the packed forward stores it so), so a
tile of 2·BLOCK_N weight rows gives BLOCK_N gate columns each next to its up column,
in the same thread's registers. Loads and stores go through tensor-memory descriptors
(TMA) and the programs are persistent (one per SM, walking the tiles). Rounded where
the two kernels round (gate and up to the model's dtype, then SiLU, then the product;
``launch.silu_mul_rounded``), so it agrees with ``kernels.silu_mul_torch`` of the GEMM
up to the GEMM's own summation order and the GPU's fast exponential and division.

The packed forward (packed.py) uses it for batches of ``MIN_ROWS`` tokens or more on
Hopper. On an H100, Qwen3-4B's shapes (bench/gpu_gate_up.py): 4-12% less time than
cuBLAS then the SiLU·mul kernel from 1,024 to 32,768 rows (one listing at 8,192 rows
was 8% slower, the same setting listed again 5% faster: that bench's spread); cuBLAS
alone, without SiLU·mul, took 5-15% less time than it. Two products a tile, one for the
gate rows and one for the up rows, took 3% more than one product on pairs from 16,384
rows. With the fast exponential and division in the epilogue, 4.75 ms at 32,768 rows
against 4.93 (cuBLAS alone: 4.49), the same bf16 values. Its arithmetic is also tested
in Triton's interpreter (tests/unit/test_gate_up.py).
"""

from __future__ import annotations

import torch

from bridge.model.launch import (
    hopper_fits,
    interpreting,
    launch_options,
    silu_mul_rounded,
    sm_count,
    wait_for_inputs,
)

try:  # Triton ships with PyTorch's CUDA wheels on Linux
    import triton
    import triton.language as tl
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - exercised where Triton (or its TMA) is absent
    triton = None

TILES = {"block_m": 128, "block_n": 128, "block_k": 64, "group_m": 8, "warps": 8}
# Pipeline depth by rows, measured on an H100: 4 stages ahead below 16,384 rows (up to 9%
# faster there), 3 from it (4% faster there).
DEEP_BELOW_ROWS = 16384
MIN_ROWS = 1024  # fewer rows were not measured: they keep cuBLAS + SiLU·mul


def stages_for(rows: int) -> int:
    """Pipeline depth of the default tiles (``DEEP_BELOW_ROWS``)."""
    return 4 if rows < DEEP_BELOW_ROWS else 3


def shared_bytes(stages: int, element_size: int) -> int:
    """Shared memory the default tiles ask for: ``stages`` blocks of x, gate and up, and
    the output tile."""
    t = TILES
    per_stage = (t["block_m"] + 2 * t["block_n"]) * t["block_k"]
    return (stages * per_stage + t["block_m"] * t["block_n"]) * element_size


def pair_rows(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The kernel's weight layout: row 2j is ``gate``'s row j, row 2j + 1 ``up``'s."""
    return torch.stack((gate, up), dim=1).flatten(0, 1)


def unpair_rows(weight: torch.Tensor) -> torch.Tensor:
    """``pair_rows``'s weight as the gate rows, then the up rows."""
    return torch.cat((weight[0::2], weight[1::2]))


def supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """The kernel's inputs: 2-D, contiguous, 16-bit and alike, on a Hopper or newer GPU
    with the shared memory its default tiles take (or in Triton's interpreter), an even
    number of weight rows, rows and starts TMA takes."""
    if triton is None or x.dim() != 2 or weight.dim() != 2:
        return False
    if not (x.is_contiguous() and weight.is_contiguous()):
        return False
    if x.dtype not in (torch.float16, torch.bfloat16) or weight.dtype != x.dtype:
        return False
    depth, size = x.shape[1], x.element_size()
    if weight.shape[1] != depth or weight.shape[0] % 2:
        return False
    # TMA: 16-byte aligned rows (of x, the weight and the output) and starts
    if (depth * size) % 16 or (weight.shape[0] // 2 * size) % 16:
        return False
    if x.data_ptr() % 16 or weight.data_ptr() % 16:
        return False
    return hopper_fits(x.device, shared_bytes(stages_for(x.shape[0]), size))


def gate_up_silu(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    block_m: int = TILES["block_m"],
    block_n: int = TILES["block_n"],
    block_k: int = TILES["block_k"],
    group_m: int = TILES["group_m"],
    warps: int = TILES["warps"],
    stages: int | None = None,
    programs: int | None = None,
    warp_specialize: bool = False,
) -> torch.Tensor:
    """(rows, intermediate): ``silu(gate) * up`` of ``x`` (rows, hidden) and ``weight``
    (2 · intermediate, hidden) in one kernel; the tile sizes, ``programs`` (default: one
    per SM) and Triton's ``warp_specialize`` are what bench/gpu_gate_up.py tries;
    ``stages`` defaults by rows (``DEEP_BELOW_ROWS``)."""
    rows, depth = x.shape
    stages = stages or stages_for(rows)
    cols = weight.shape[0] // 2
    out = torch.empty((rows, cols), dtype=x.dtype, device=x.device)
    tiles = triton.cdiv(rows, block_m) * triton.cdiv(cols, block_n)
    programs = min(tiles, programs or sm_count(x.device))
    _gate_up_silu_kernel[(programs,)](
        TensorDescriptor.from_tensor(x, [block_m, block_k]),
        TensorDescriptor.from_tensor(weight, [2 * block_n, block_k]),
        TensorDescriptor.from_tensor(out, [block_m, block_n]),
        rows, cols, depth, programs,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=group_m,
        WIDEN=interpreting(), SPECIALIZE=warp_specialize,
        num_warps=warps, num_stages=stages, **launch_options(x.device),
    )  # fmt: skip
    return out


if triton is not None:
    # One compiled kernel for every row count: Triton would otherwise build another for
    # counts that are not multiples of 16 (an eager batch's first call would wait for it).
    @triton.jit(do_not_specialize=["rows", "programs"])
    def _gate_up_silu_kernel(
        x_desc, w_desc, out_desc, rows, cols, depth, programs,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr, WIDEN: tl.constexpr,
        SPECIALIZE: tl.constexpr, DEPENDENT: tl.constexpr,
    ):  # fmt: skip
        wait_for_inputs(DEPENDENT)
        # Tiles in groups of GROUP_M row blocks (a group's rows of x stay in L2 while its
        # programs sweep the weight); each program takes every `programs`-th tile.
        tiles_m = tl.cdiv(rows, BLOCK_M)
        tiles_n = tl.cdiv(cols, BLOCK_N)
        per_group = GROUP_M * tiles_n
        total = tiles_m * tiles_n
        for tile in tl.range(tl.program_id(0), total, programs, warp_specialize=SPECIALIZE):
            group = tile // per_group
            first_m = group * GROUP_M
            size_m = tl.minimum(tiles_m - first_m, GROUP_M)
            at_m = (first_m + (tile % per_group) % size_m) * BLOCK_M
            at_n = ((tile % per_group) // size_m) * BLOCK_N
            # one product over 2 * BLOCK_N weight rows: BLOCK_N (gate, up) row pairs
            acc = tl.zeros((BLOCK_M, 2 * BLOCK_N), tl.float32)
            for at_k in range(0, depth, BLOCK_K):
                a = x_desc.load([at_m, at_k])
                w = w_desc.load([2 * at_n, at_k])
                if WIDEN:  # the CPU interpreter multiplies bf16 wrongly: exact float32 there
                    a, w = a.to(tl.float32), w.to(tl.float32)
                    acc = tl.dot(a, w.T, acc, input_precision="ieee")
                else:
                    acc = tl.dot(a, w.T, acc)
            # each thread holds a gate column next to its up column: the split moves nothing
            gate, up = acc.reshape(BLOCK_M, BLOCK_N, 2).split()
            dt = out_desc.dtype
            out_desc.store([at_m, at_n], silu_mul_rounded(gate, up, dt).to(dt))
