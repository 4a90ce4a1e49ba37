"""The FP8 GEMM for many rows on Hopper: persistent tiles and a stream-K tail.

cuBLAS's row-scaled FP8 GEMM cuts the output into 128 × 128 tiles, one per SM at a time.
Where the tiles are not a whole number of waves, the last wave leaves SMs idle: for 1,280
rows (10 texts of 128 tokens) and Qwen3-4B's o and down GEMMs (2,560 columns) that is 200
tiles on an H100's 132 SMs, two waves for the work of 1.5; those GEMMs took as long for
1,024 or 1,536 rows as for 1,280. Here one program per SM first takes whole tiles for as
many full waves as there are, then the tiles left over are shared out by their K
iterations (stream-K): each program takes an equal run of (tile, k) iterations, which
may end inside one tile and go on into the next. A tile computed by several programs is
finished by the last of them to arrive (a per-tile counter): it sums the float32
partials in program order (the same sum whatever the arrival order) and writes the tile.
No program waits for another, and each counter is put back to zero by the program that
finishes its tile, so the kernel needs no memset and replays in a CUDA graph.

The epilogue scales each row and each column (the activation's per-token scale, the
weight's per-channel scale) and rounds to the output dtype, as ``torch._scaled_mm``
does. Its arithmetic is tested in Triton's interpreter (tests/unit/test_fp8_tiles.py);
its speed against cuBLAS is measured by bench/gpu_fp8_tiles.py.
"""

from __future__ import annotations

import functools

import torch

from bridge.model.launch import (
    hopper_fits,
    interpreting,
    launch_options,
    sm_count,
    wait_for_inputs,
)

try:  # Triton ships with PyTorch's CUDA wheels on Linux
    import triton
    import triton.language as tl
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - exercised where Triton (or its TMA) is absent
    triton = None

TILES = {"block_m": 128, "block_n": 128, "block_k": 128, "group_m": 8, "warps": 8, "stages": 4}
# A last wave at least this full is left to whole tiles: sharing it out would save little
# and add the partials' writing and reading.
FULL_ENOUGH = 0.75


def shared_bytes(stages: int) -> int:
    """Shared memory the default tiles ask for: ``stages`` blocks of x and w (one byte an
    element) and the 16-bit output tile."""
    t = TILES
    return stages * (t["block_m"] + t["block_n"]) * t["block_k"] + 2 * t["block_m"] * t["block_n"]


def supported(xq: torch.Tensor, weight: torch.Tensor) -> bool:
    """FP8 rows and an FP8 weight (out, in), both contiguous, rows TMA takes (16-byte
    aligned starts and rows, outputs too), on a Hopper GPU with the shared memory of the
    default tiles (or in Triton's interpreter)."""
    if triton is None or xq.dim() != 2 or weight.dim() != 2:
        return False
    if xq.element_size() != 1 or weight.element_size() != 1:
        return False
    if not (xq.is_contiguous() and weight.is_contiguous()) or weight.shape[1] != xq.shape[1]:
        return False
    if xq.shape[1] % 16 or weight.shape[0] % 8:  # 16-byte rows in, 16-byte bf16 rows out
        return False
    if xq.data_ptr() % 16 or weight.data_ptr() % 16:
        return False
    return hopper_fits(xq.device, shared_bytes(TILES["stages"]))


def plan(rows: int, cols: int, programs: int, block_m: int, block_n: int) -> int:
    """How many tiles go whole (the rest are shared out by K): all of them where the last
    wave is empty or at least ``FULL_ENOUGH`` full, else the full waves'."""
    tiles = -(-rows // block_m) * -(-cols // block_n)
    left = tiles % programs
    if left == 0 or left >= FULL_ENOUGH * programs:
        return tiles
    return tiles - left


@functools.cache
def _counters(device: torch.device, programs: int) -> torch.Tensor:
    """Arrival counters of the shared tiles (fewer than the programs), zero between calls:
    each finishing program zeroes its tile's."""
    return torch.zeros(programs, dtype=torch.int32, device=device)


def fp8_gemm(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    weight: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    block_m: int = TILES["block_m"],
    block_n: int = TILES["block_n"],
    block_k: int = TILES["block_k"],
    group_m: int = TILES["group_m"],
    warps: int = TILES["warps"],
    stages: int = TILES["stages"],
    programs: int | None = None,
    whole_tiles: int | None = None,
) -> torch.Tensor:
    """(rows, out) ``out_dtype``: ``(xq @ weight.T) * x_scale * w_scale`` for FP8 rows
    ``xq`` (rows, in) with float32 ``x_scale`` (rows, 1) and an FP8 ``weight`` (out, in)
    with float32 ``w_scale`` (out,). The tile sizes, ``programs`` (default one per SM)
    and ``whole_tiles`` (default ``plan``'s) are what bench/gpu_fp8_tiles.py tries."""
    rows, depth = xq.shape
    cols = weight.shape[0]
    out = torch.empty((rows, cols), dtype=out_dtype, device=xq.device)
    if rows == 0:
        return out
    programs = programs or sm_count(xq.device)
    tiles = triton.cdiv(rows, block_m) * triton.cdiv(cols, block_n)
    whole = plan(rows, cols, programs, block_m, block_n) if whole_tiles is None else whole_tiles
    shared = tiles - whole
    if not 0 <= shared < programs:  # else a program's run could span more than two tiles
        raise ValueError(f"{shared} tiles to share out among {programs} programs")
    k_iters = triton.cdiv(depth, block_k)
    run = triton.cdiv(shared * k_iters, programs) if shared else 1
    if shared == 0:
        programs = min(programs, tiles)
    counters = _counters(xq.device, programs)
    # two partial tiles a program at most: its run is no longer than one tile's iterations
    partials = torch.empty(
        (programs, 2, block_m, block_n) if shared else (1,), dtype=torch.float32,
        device=xq.device,
    )  # fmt: skip
    _fp8_tiles_kernel[(programs,)](
        TensorDescriptor.from_tensor(xq, [block_m, block_k]),
        TensorDescriptor.from_tensor(weight, [block_n, block_k]),
        TensorDescriptor.from_tensor(out, [block_m, block_n]),
        x_scale, w_scale, partials, counters,
        rows, cols, depth, programs, whole, run,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=group_m,
        WIDEN=interpreting(),
        num_warps=warps, num_stages=stages, **launch_options(xq.device),
    )  # fmt: skip
    return out


if triton is not None:

    @triton.jit
    def _origin(tile, tiles_m, tiles_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                GROUP_M: tl.constexpr):  # fmt: skip
        """A tile's first row and column: tiles in groups of GROUP_M row blocks, so that a
        group's rows stay in L2 while its programs sweep the weight."""
        per_group = GROUP_M * tiles_n
        first_m = (tile // per_group) * GROUP_M
        size_m = tl.minimum(tiles_m - first_m, GROUP_M)
        at_m = (first_m + (tile % per_group) % size_m) * BLOCK_M
        at_n = ((tile % per_group) // size_m) * BLOCK_N
        return at_m, at_n

    @triton.jit
    def _product(x_desc, w_desc, at_m, at_n, k_from, k_to, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, WIDEN: tl.constexpr):  # fmt: skip
        """The float32 sum over K iterations [k_from, k_to) of one tile."""
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k in range(k_from, k_to):
            a = x_desc.load([at_m, k * BLOCK_K])
            w = w_desc.load([at_n, k * BLOCK_K])
            if WIDEN:  # the CPU interpreter has no FP8 products: exact float32 there
                acc = tl.dot(a.to(tl.float32), w.to(tl.float32).T, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, w.T, acc)
        return acc

    @triton.jit
    def _finish(acc, out_desc, xs_ptr, ws_ptr, at_m, at_n, rows, cols,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
        """Scale a tile's sums by row and column and store it in the output's dtype."""
        m = at_m + tl.arange(0, BLOCK_M)
        n = at_n + tl.arange(0, BLOCK_N)
        acc = acc * tl.load(xs_ptr + m, mask=m < rows, other=0.0)[:, None]
        acc = acc * tl.load(ws_ptr + n, mask=n < cols, other=0.0)[None, :]
        out_desc.store([at_m, at_n], acc.to(out_desc.dtype))

    # One compiled kernel for every row count and plan.
    @triton.jit(do_not_specialize=["rows", "programs", "whole", "run"])
    def _fp8_tiles_kernel(
        x_desc, w_desc, out_desc, xs_ptr, ws_ptr, part_ptr, count_ptr,
        rows, cols, depth, programs, whole, run,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr, WIDEN: tl.constexpr, DEPENDENT: tl.constexpr,
    ):  # fmt: skip
        wait_for_inputs(DEPENDENT)
        pid = tl.program_id(0)
        tiles_m = tl.cdiv(rows, BLOCK_M)
        tiles_n = tl.cdiv(cols, BLOCK_N)
        k_iters = tl.cdiv(depth, BLOCK_K)
        # whole tiles: every `programs`-th one
        for tile in range(pid, whole, programs):
            at_m, at_n = _origin(tile, tiles_m, tiles_n, BLOCK_M, BLOCK_N, GROUP_M)
            acc = _product(x_desc, w_desc, at_m, at_n, 0, k_iters, BLOCK_M, BLOCK_N, BLOCK_K,
                           WIDEN)  # fmt: skip
            _finish(acc, out_desc, xs_ptr, ws_ptr, at_m, at_n, rows, cols, BLOCK_M, BLOCK_N)
        # the tiles left: this program's run of (tile, k) iterations, no longer than one
        # tile's, so in two pieces at most: to the end of its first tile, then on
        start = pid * run
        tiles = tiles_m * tiles_n
        end = tl.minimum(start + run, (tiles - whole) * k_iters)
        tile_elems = BLOCK_M * BLOCK_N
        offs = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
        # (a loop, not an `if`: Triton pipelines the K loop inside a loop, not inside an if;
        # a piece past the run's end has no K iterations and is not stored)
        for piece in range(2):
            it = start + piece * ((start // k_iters + 1) * k_iters - start)
            shared = it // k_iters
            k_from = it - shared * k_iters
            k_to = tl.minimum(k_iters, k_from + end - it)
            tile = tl.minimum(whole + shared, tiles - 1)  # (a real one past the end too)
            at_m, at_n = _origin(tile, tiles_m, tiles_n, BLOCK_M, BLOCK_N, GROUP_M)
            acc = _product(x_desc, w_desc, at_m, at_n, k_from, k_to, BLOCK_M, BLOCK_N,
                           BLOCK_K, WIDEN)  # fmt: skip
            if it < end:
                if k_from == 0 and k_to == k_iters:
                    _finish(acc, out_desc, xs_ptr, ws_ptr, at_m, at_n, rows, cols, BLOCK_M,
                            BLOCK_N)  # fmt: skip
                else:
                    tl.store(part_ptr + (pid * 2 + piece) * tile_elems + offs, acc)
                    tl.debug_barrier()  # every thread's partial written before the count
                    first = (shared * k_iters) // run
                    last = ((shared + 1) * k_iters - 1) // run
                    arrived = tl.atomic_add(count_ptr + shared, 1, sem="acq_rel")
                    if arrived == last - first:  # the last one here: sum in program order
                        total = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
                        for q in range(first, last + 1):
                            q_piece = tl.where((q * run) // k_iters == shared, 0, 1)
                            total += tl.load(
                                part_ptr + (q * 2 + q_piece) * tile_elems + offs,
                                cache_modifier=".cg",
                            )
                        tl.atomic_xchg(count_ptr + shared, 0)
                        _finish(total, out_desc, xs_ptr, ws_ptr, at_m, at_n, rows, cols,
                                BLOCK_M, BLOCK_N)  # fmt: skip
