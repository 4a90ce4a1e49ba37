"""The elementwise work of a Qwen3 block, twice: as plain torch (the definition, any
device) and as fused Triton kernels (CUDA), with the same bf16 rounding points.

Eager transformers spends about half of a Qwen3 forward outside the GEMMs: an RMSNorm is
six float32 kernels, rotary five per tensor, the MLP's SiLU·mul two. Here each step is
one kernel: RMSNorm, residual add + RMSNorm, per-head q/k RMSNorm + rotary, SiLU·mul
(the second and the last also with their output quantized per token for FP8 GEMMs). The
SiLU·mul that quantizes takes a whole 9,728-wide row per program; on an H100 it took 28
µs at 1,280 rows against 42 for SiLU·mul then the quantize kernel, 599 against 986 at
32,768 (bench/gpu_silu_fp8.py; session 7's 2.4 times slower was libdevice's exp and an
IEEE division, since replaced by the fast ones).
Each reproduces the transformers arithmetic step for step (float32 inside, rounded to the
model's dtype where transformers rounds), so results stay within bf16 noise of it.
``TORCH_OPS`` and ``TRITON_OPS`` hold the two sets behind one interface, attention
included: given a ``QueryRope``, it takes the q heads raw (our attention kernel norms and
rotates them as it loads them; elsewhere ``norm_rope`` runs first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bridge.model.attention import QueryRope, attention_any, attention_triton, triton_takes
from bridge.model.fp8 import (
    FP8,
    FP8_MAX,
    MIN_SCALE,
    Fp8Rows,
    Partials,
    dense,
    quantize_rows_reference,
)  # fmt: skip
from bridge.model.launch import (
    launch_options,
    norm_rope_halves,
    row_warps,
    silu_mul_rounded,
    wait_for_inputs,
)

try:  # Triton ships with PyTorch's CUDA wheels on Linux
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where Triton is absent
    triton = None


# ---- the definitions (transformers' Qwen3 arithmetic) ----------------------------------


def rms_norm_torch(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * (x * rsqrt(mean(x²) + eps)).to(x.dtype)``, statistics in float32."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def add_rms_norm_torch(
    x: torch.Tensor | Partials, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(``residual + x``, its RMSNorm): the residual stream and the next block's input
    (``x`` may be a split GEMM's partials: added up first)."""
    total = residual + dense(x)
    return total, rms_norm_torch(total, weight, eps)


def norm_rope_torch(
    x: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor],
    first_heads: int,
    eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
) -> torch.Tensor:
    """Per-head RMSNorm of ``x`` (tokens, heads, head_dim), with ``weights[0]`` on the
    first ``first_heads`` heads (q) and ``weights[1]`` on the rest (k), then rotary at
    ``positions`` with the tables ``cos``/``sin`` (positions, head_dim)."""
    h = torch.cat(
        (
            rms_norm_torch(x[:, :first_heads], weights[0], eps),
            rms_norm_torch(x[:, first_heads:], weights[1], eps),
        ),
        dim=1,
    )
    c, s = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)
    half = h.shape[-1] // 2
    rotated = torch.cat((-h[..., half:], h[..., :half]), dim=-1)
    return (h * c) + (rotated * s)


def silu_mul_torch(gate_up: torch.Tensor, pairs: bool = False) -> torch.Tensor:
    """``silu(gate) * up``, ``gate_up`` holding gate then up on its last dimension, or with
    ``pairs`` each gate column followed by its up column (gate_up.py's layout)."""
    if pairs:
        gate, up = gate_up.unflatten(-1, (-1, 2)).unbind(-1)
    else:
        gate, up = gate_up.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


def silu_mul_fp8_torch(gate_up: torch.Tensor) -> Fp8Rows:
    """``silu_mul`` (gate then up) quantized per token for an FP8 GEMM, as it would
    quantize the 16-bit rows itself."""
    act = silu_mul_torch(gate_up)
    return Fp8Rows(*quantize_rows_reference(act.reshape(-1, act.shape[-1])))


def add_rms_norm_fp8_torch(
    x: torch.Tensor | Partials, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, Fp8Rows]:
    """``add_rms_norm`` whose normed output is quantized per token for an FP8 GEMM."""
    total, normed = add_rms_norm_torch(x, residual, weight, eps)
    return total, Fp8Rows(*quantize_rows_reference(normed))


# ---- the same in Triton ----------------------------------------------------------------

if triton is not None:

    @triton.jit
    def _rmsnorm(x_ptr, w_ptr, out_ptr, n_cols, eps, BLOCK: tl.constexpr, DEPENDENT: tl.constexpr):
        wait_for_inputs(DEPENDENT)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        keep = cols < n_cols
        x = tl.load(x_ptr + row * n_cols + cols, mask=keep, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.div_rn(tl.sum(x * x, axis=0), n_cols.to(tl.float32)) + eps)
        normed = (x * rstd).to(out_ptr.dtype.element_ty).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=keep, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * n_cols + cols, (w * normed).to(out_ptr.dtype.element_ty), keep)

    @triton.jit
    def _quantize_row(y, cols, keep, q_ptr, s_ptr, row, n_cols, fp8_max, min_scale):
        """Store one row quantized to FP8 with its own scale (as ``fp8.quantize_rows``)."""
        scale = tl.maximum(tl.max(tl.abs(y), axis=0) / fp8_max, min_scale)
        q = tl.clamp(y / scale, -fp8_max, fp8_max)
        tl.store(q_ptr + row * n_cols + cols, q.to(q_ptr.dtype.element_ty), keep)
        tl.store(s_ptr + row, scale)

    @triton.jit
    def _add_rmsnorm(
        x_ptr, res_ptr, w_ptr, sum_ptr, out_ptr, s_ptr, n_cols, part_size, eps, fp8_max,
        min_scale, BLOCK: tl.constexpr, QUANT: tl.constexpr, PARTS: tl.constexpr,
        DEPENDENT: tl.constexpr,
    ):  # fmt: skip
        wait_for_inputs(DEPENDENT)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        keep = cols < n_cols
        dt = sum_ptr.dtype.element_ty
        # x: a tensor (PARTS 1), or a split GEMM's float32 partials, added in order and
        # rounded as fp8.Partials.total does
        if PARTS == 1:
            x = tl.load(x_ptr + row * n_cols + cols, mask=keep, other=0.0).to(tl.float32)
        else:
            x = tl.zeros((BLOCK,), dtype=tl.float32)
            for part in tl.static_range(PARTS):
                x += tl.load(x_ptr + part * part_size + row * n_cols + cols, mask=keep, other=0.0)
            x = x.to(dt).to(tl.float32)
        r = tl.load(res_ptr + row * n_cols + cols, mask=keep, other=0.0).to(tl.float32)
        total = (r + x).to(dt)
        tl.store(sum_ptr + row * n_cols + cols, total, keep)
        t = total.to(tl.float32)
        rstd = tl.rsqrt(tl.div_rn(tl.sum(t * t, axis=0), n_cols.to(tl.float32)) + eps)
        normed = (t * rstd).to(dt).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=keep, other=0.0).to(tl.float32)
        y = (w * normed).to(dt)
        if QUANT:  # the FP8 GEMM's input: quantized here, never stored in bf16
            _quantize_row(
                y.to(tl.float32), cols, keep, out_ptr, s_ptr, row, n_cols, fp8_max, min_scale
            )
        else:
            tl.store(out_ptr + row * n_cols + cols, y, keep)

    @triton.jit
    def _norm_rope(
        x_ptr, wa_ptr, wb_ptr, cos_ptr, sin_ptr, pos_ptr, out_ptr,
        x_row_stride, n_heads, first_heads, eps,
        HEADS: tl.constexpr, DIM: tl.constexpr, DEPENDENT: tl.constexpr,
    ):  # fmt: skip
        wait_for_inputs(DEPENDENT)
        # One token's block of HEADS heads; each head's two halves loaded once (rotary
        # pairs dimension i with i + DIM/2).
        token = tl.program_id(0).to(tl.int64)
        heads = tl.program_id(1) * HEADS + tl.arange(0, HEADS)[:, None]
        half: tl.constexpr = DIM // 2
        dims = tl.arange(0, half)[None, :]
        keep = heads < n_heads
        base = x_ptr + token * x_row_stride + heads * DIM + dims
        x1 = tl.load(base, mask=keep, other=0.0).to(tl.float32)
        x2 = tl.load(base + half, mask=keep, other=0.0).to(tl.float32)
        dt = out_ptr.dtype.element_ty
        first = heads < first_heads  # q heads take one weight, k heads the other
        w1 = tl.where(first, tl.load(wa_ptr + dims), tl.load(wb_ptr + dims)).to(tl.float32)
        wa2, wb2 = tl.load(wa_ptr + half + dims), tl.load(wb_ptr + half + dims)
        w2 = tl.where(first, wa2, wb2).to(tl.float32)
        table = tl.load(pos_ptr + token) * DIM + dims
        c1 = tl.load(cos_ptr + table).to(tl.float32)
        c2 = tl.load(cos_ptr + table + half).to(tl.float32)
        s1 = tl.load(sin_ptr + table).to(tl.float32)
        s2 = tl.load(sin_ptr + table + half).to(tl.float32)
        out1, out2 = norm_rope_halves(x1, x2, w1, w2, c1, c2, s1, s2, eps, dt, DIM)
        target = out_ptr + token * n_heads * DIM + heads * DIM + dims
        tl.store(target, out1, keep)
        tl.store(target + half, out2, keep)

    @triton.jit
    def _silu_mul(
        gu_ptr,
        out_ptr,
        n_cols,
        BLOCK: tl.constexpr,
        PAIRS: tl.constexpr,
        DEPENDENT: tl.constexpr,
    ):
        wait_for_inputs(DEPENDENT)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < n_cols
        if PAIRS:  # column c's gate at 2c, its up at 2c + 1
            gate_at, up_at = 2 * cols, 2 * cols + 1
        else:  # gate columns, then the up columns
            gate_at, up_at = cols, n_cols + cols
        gate = tl.load(gu_ptr + row * 2 * n_cols + gate_at, mask=keep, other=0.0)
        up = tl.load(gu_ptr + row * 2 * n_cols + up_at, mask=keep, other=0.0)
        dt = out_ptr.dtype.element_ty
        tl.store(out_ptr + row * n_cols + cols, silu_mul_rounded(gate, up, dt).to(dt), keep)

    @triton.jit
    def _silu_mul_fp8(
        gu_ptr, q_ptr, s_ptr, n_cols, fp8_max, min_scale, BLOCK: tl.constexpr,
        DEPENDENT: tl.constexpr,
    ):  # fmt: skip
        wait_for_inputs(DEPENDENT)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        keep = cols < n_cols
        gate = tl.load(gu_ptr + row * 2 * n_cols + cols, mask=keep, other=0.0)
        up = tl.load(gu_ptr + row * 2 * n_cols + n_cols + cols, mask=keep, other=0.0)
        dt = gu_ptr.dtype.element_ty
        y = silu_mul_rounded(gate, up, dt).to(dt).to(tl.float32)  # the 16-bit product
        _quantize_row(y, cols, keep, q_ptr, s_ptr, row, n_cols, fp8_max, min_scale)


NORM_ROPE_HEADS = 8  # heads per program: 40 q+k heads of Qwen3-4B are 5 blocks, no padding


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    n = x.shape[-1]
    flat = x.contiguous().view(-1, n)
    out = torch.empty_like(flat)
    _rmsnorm[(flat.shape[0],)](
        flat, weight, out, n, eps, BLOCK=triton.next_power_of_2(n), **launch_options(x.device)
    )
    return out.view(x.shape)


def _add_rms_norm_launch(
    x: torch.Tensor | Partials, residual: torch.Tensor, weight: torch.Tensor, eps: float,
    quantize: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """Run ``_add_rmsnorm``: (the sum, the normed rows, their FP8 scales when
    ``quantize`` (the rows then FP8) else None), each with ``residual``'s rows."""
    n = residual.shape[-1]
    res = residual.contiguous().view(-1, n)
    if isinstance(x, Partials):
        source, parts = x.parts, x.parts.shape[0]
    else:
        source, parts = x.contiguous().view(-1, n), 1
    rows = res.shape[0]
    total = torch.empty_like(res)
    out = torch.empty((rows, n), dtype=FP8 if quantize else res.dtype, device=res.device)
    scale = torch.empty((rows, 1), dtype=torch.float32, device=res.device) if quantize else None
    _add_rmsnorm[(rows,)](
        source, res, weight, total, out, out if scale is None else scale, n, rows * n, eps,
        FP8_MAX, MIN_SCALE, BLOCK=triton.next_power_of_2(n), QUANT=quantize, PARTS=parts,
        **launch_options(res.device),
    )  # fmt: skip
    return total.view(residual.shape), out, scale


def add_rms_norm_triton(
    x: torch.Tensor | Partials, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    total, out, _ = _add_rms_norm_launch(x, residual, weight, eps, quantize=False)
    return total, out.view(residual.shape)


def add_rms_norm_fp8_triton(
    x: torch.Tensor | Partials, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, Fp8Rows]:
    total, q, scale = _add_rms_norm_launch(x, residual, weight, eps, quantize=True)
    return total, Fp8Rows(q, scale)  # type: ignore[arg-type]


def norm_rope_triton(
    x: torch.Tensor,
    weights: tuple[torch.Tensor, torch.Tensor],
    first_heads: int,
    eps: float,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
) -> torch.Tensor:
    tokens, heads, dim = x.shape
    if x.stride(2) != 1 or x.stride(1) != dim:
        x = x.contiguous()
    out = torch.empty((tokens, heads, dim), dtype=x.dtype, device=x.device)
    block = min(NORM_ROPE_HEADS, triton.next_power_of_2(heads))
    _norm_rope[(tokens, triton.cdiv(heads, block))](
        x, weights[0], weights[1], cos, sin, positions, out, x.stride(0), heads, first_heads,
        eps, HEADS=block, DIM=dim, **launch_options(x.device),
    )  # fmt: skip
    return out


def silu_mul_triton(gate_up: torch.Tensor, pairs: bool = False) -> torch.Tensor:
    n = gate_up.shape[-1] // 2
    flat = gate_up.contiguous().view(-1, 2 * n)
    out = torch.empty((flat.shape[0], n), dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    _silu_mul[(flat.shape[0], triton.cdiv(n, block))](
        flat, out, n, BLOCK=block, PAIRS=pairs,
        **launch_options(flat.device),
    )  # fmt: skip
    return out.view(*gate_up.shape[:-1], n)


def silu_mul_fp8_triton(gate_up: torch.Tensor) -> Fp8Rows:
    """One kernel: each row's ``silu(gate) * up`` rounded to 16 bits, then quantized
    with its own scale (``fp8.quantize_rows``); the 16-bit product is never stored."""
    n = gate_up.shape[-1] // 2
    flat = gate_up.contiguous().view(-1, 2 * n)
    rows = flat.shape[0]
    q = torch.empty((rows, n), dtype=FP8, device=flat.device)
    scale = torch.empty((rows, 1), dtype=torch.float32, device=flat.device)
    block = triton.next_power_of_2(n)
    _silu_mul_fp8[(rows,)](
        flat, q, scale, n, FP8_MAX, MIN_SCALE, BLOCK=block,
        num_warps=row_warps(block),
        **launch_options(flat.device),
    )  # fmt: skip
    return Fp8Rows(q, scale)


def _roped(norm_rope: Callable[..., torch.Tensor], q: torch.Tensor, rope: QueryRope | None):
    """Raw query heads ``q`` normed and rotated by ``norm_rope`` as ``rope`` says."""
    if rope is None:
        return q
    weights = (rope.weight, rope.weight)
    positions = rope.query_positions()
    return norm_rope(q, weights, q.shape[1], rope.eps, rope.cos, rope.sin, positions)


def attention_torch(q, k, v, cu_q, cu_k, max_q: int, max_k: int, causal: bool, rope=None):
    """``attention_any`` (flash attention on CUDA, the reference elsewhere); ``rope``: the
    queries come raw and are normed and rotated first."""
    q = _roped(norm_rope_torch, q, rope)
    return attention_any(q, k, v, cu_q, cu_k, max_q, max_k, causal)


def attention_fused(q, k, v, cu_q, cu_k, max_q: int, max_k: int, causal: bool, rope=None):
    """Our Triton kernel where it serves (``triton_takes``), raw queries normed and rotated
    as it loads them; else ``norm_rope_triton`` first, then flash attention (or the
    reference)."""
    if triton_takes(q, k, max_k):
        return attention_triton(q, k, v, cu_q, cu_k, max_q, max_k, causal, rope)
    q = _roped(norm_rope_triton, q, rope)
    return attention_any(q, k, v, cu_q, cu_k, max_q, max_k, causal)


@dataclass(frozen=True)
class Ops:
    """One implementation of each elementwise step of a Qwen3 block."""

    name: str
    rms_norm: Callable[..., torch.Tensor]
    add_rms_norm: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    norm_rope: Callable[..., torch.Tensor]
    silu_mul: Callable[..., torch.Tensor]  # (gate_up, pairs=False): see silu_mul_torch
    # add_rms_norm and silu_mul (gate then up) with their outputs quantized per token for
    # an FP8 GEMM (--quantize fp8)
    add_rms_norm_fp8: Callable[..., tuple[torch.Tensor, Fp8Rows]]
    silu_mul_fp8: Callable[[torch.Tensor], Fp8Rows]
    # attention over packed sequences (bridge/model/attention.py), its queries raw when
    # given a QueryRope: (q, k, v, cu_q, cu_k, max_q, max_k, causal, rope=None)
    attention: Callable[..., torch.Tensor]
    # the steps may also run inside our Triton GEMMs (SiLU·mul in a few-row FP8 GEMM)
    in_gemms: bool = False


TORCH_OPS = Ops(
    "torch", rms_norm_torch, add_rms_norm_torch, norm_rope_torch, silu_mul_torch,
    add_rms_norm_fp8_torch, silu_mul_fp8_torch, attention_torch,
)  # fmt: skip
TRITON_OPS = Ops(
    "triton", rms_norm_triton, add_rms_norm_triton, norm_rope_triton, silu_mul_triton,
    add_rms_norm_fp8_triton, silu_mul_fp8_triton, attention_fused, in_gemms=True,
)  # fmt: skip


def pick_ops(device: torch.device, fused: bool) -> Ops:
    """Triton kernels on CUDA when asked for and available, else plain torch."""
    if fused and triton is not None and device.type == "cuda":
        return TRITON_OPS
    return TORCH_OPS
