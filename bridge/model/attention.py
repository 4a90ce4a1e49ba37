"""Attention over packed sequences (``cu_seqlens``): each sequence's queries over its own
keys, grouped-query heads, causal aligned to the end of the keys (a sequence's last query
sees all its keys), as flash attention defines it.

Three implementations of one definition:

- ``attention_triton``: our Triton kernel, on CUDA for sequences of up to
  ``TRITON_MAX_KEYS`` tokens. PyTorch's flash attention (FA2) gives each program 128
  queries of one head, so a short sequence is a few long serial programs. Here a program
  takes 16 queries of every query head that shares one key/value head (their keys and
  values loaded once for all of them): more, shorter programs. In CUDA graphs on an H100
  (bench/gpu_attention.py), a layer of ten 128-token texts takes 16.4 µs against FA2's
  24.7, one 16-token query 3.5 against 7.4, the last layer (one query a text) 3.4-11 µs
  against 14-25; sixteen 512-token texts 142 against 235 µs, two of 2,048 tokens 204
  against 274, one of 8,192 1,307 against 1,754.
- ``attention_flash``: PyTorch's flash attention on CUDA, for longer sequences.
- ``attention_reference``: one ``scaled_dot_product_attention`` per sequence, anywhere.

Qwen3 norms and rotates each query head before attention (``QueryRope``); our kernel
does that as it loads the raw q heads from the q/k/v GEMM's output, so they are not
written and read again (``kernels.py`` runs ``norm_rope`` first for the other two). It
holds each query row as its two halves, the pairs rotary mixes, and makes the scores
as two products over half the head each: on an H100, sixteen 512-token texts' q/k norm,
rotary and attention take 189.5 µs a layer (with ``norm_rope`` on all heads first:
197.9; inside, on whole rows with each partner half loaded again: 215.7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bridge.model.launch import (
    hopper_fits,
    interpreting,
    launch_options,
    norm_rope_halves,
    wait_for_inputs,
)

try:  # Triton ships with PyTorch's CUDA wheels on Linux
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where Triton is absent
    triton = None

# The longest key sequence attention_triton is chosen for: on an H100 it took 27% less
# time than flash attention for two 2,048-token sequences, 25% less for one of 8,192
# (bench/gpu_attention.py); longer ones, not measured, keep flash attention.
TRITON_MAX_KEYS = 8192
# From this many queries a sequence, key blocks that a tile's rows all see whole take the
# unmasked step (on an H100: 2-3% faster at 512 tokens, 7-8% at 1,024 and 2,048, 10% at
# 8,192; 3-7% slower up to 256); from LONG_QUERIES, on Hopper with the shared memory for
# it, 128 query rows a program over blocks of 64 keys (``_wide_tiles_fit``: a further 10%
# at 2,048, 17% at 8,192). Not from 1,024: there a text gives half the programs it has
# with 16-query tiles, too few for the SMs when it is the batch's one long text (an H200:
# 31 short texts and one of 1,200 tokens 15% slower; two of 1,024 tokens alone 1-2% faster).
SPLIT_QUERIES = 512
LONG_QUERIES = 2048


@dataclass(frozen=True)
class QueryRope:
    """Qwen3's query step before attention: per-head RMSNorm with ``weight``, then rotary
    at each query's position from the tables ``cos``/``sin`` (positions, head dim). Our
    kernel applies it to the queries as it loads them (a query's position is its place
    in its text); elsewhere ``kernels.py`` applies its ``norm_rope`` first, at
    ``positions[rows]`` (``rows`` None: ``positions`` are the queries')."""

    weight: torch.Tensor
    eps: float
    cos: torch.Tensor
    sin: torch.Tensor
    positions: torch.Tensor
    rows: torch.Tensor | None = None

    def query_positions(self) -> torch.Tensor:
        return self.positions if self.rows is None else self.positions[self.rows]


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor,
    cu_k: torch.Tensor,
    max_q: int,
    max_k: int,
    causal: bool,
) -> torch.Tensor:
    """q (tokens, heads, dim), k and v (tokens, kv heads, dim) -> (tokens, heads, dim)."""
    out = torch.empty_like(q)
    groups = q.shape[1] // k.shape[1]
    bounds_q, bounds_k = cu_q.tolist(), cu_k.tolist()
    for i in range(len(bounds_q) - 1):
        qs, qe, ks, ke = bounds_q[i], bounds_q[i + 1], bounds_k[i], bounds_k[i + 1]
        if qe == qs:
            continue
        qi = q[qs:qe].transpose(0, 1)
        ki = k[ks:ke].transpose(0, 1).repeat_interleave(groups, dim=0)
        vi = v[ks:ke].transpose(0, 1).repeat_interleave(groups, dim=0)
        mask, square = None, causal and qe - qs == ke - ks
        if causal and not square:  # aligned to the end: query i sees keys to i + keys - queries
            rows = torch.arange(qe - qs, device=q.device)[:, None] + (ke - ks) - (qe - qs)
            mask = torch.arange(ke - ks, device=q.device)[None, :] <= rows
        o = F.scaled_dot_product_attention(
            qi, ki, vi, attn_mask=mask, is_causal=square, scale=_scale(q)
        )
        out[qs:qe] = o.transpose(0, 1)
    return out


def attention_flash(q, k, v, cu_q, cu_k, max_q: int, max_k: int, causal: bool) -> torch.Tensor:
    """PyTorch's variable-length flash attention (CUDA, Ampere or newer, 16-bit)."""
    return torch.ops.aten._flash_attention_forward(
        q, k, v, cu_q, cu_k, max_q, max_k, 0.0, causal, False, scale=_scale(q)
    )[0]


def attention_any(q, k, v, cu_q, cu_k, max_q: int, max_k: int, causal: bool) -> torch.Tensor:
    """Flash attention on CUDA, the per-sequence reference elsewhere."""
    run = attention_flash if q.is_cuda else attention_reference
    return run(q, k, v, cu_q, cu_k, max_q, max_k, causal)


def triton_takes(q: torch.Tensor, k: torch.Tensor, max_k: int) -> bool:
    """Whether ``attention_triton`` serves these inputs: up to ``TRITON_MAX_KEYS`` keys a
    sequence, shapes the kernel takes (past it, flash attention is as fast)."""
    return max_k <= TRITON_MAX_KEYS and triton_supported(q, k)


def _scale(q: torch.Tensor) -> float:
    return q.shape[-1] ** -0.5


def triton_supported(q: torch.Tensor, k: torch.Tensor) -> bool:
    """The kernel's inputs: on CUDA (or in Triton's interpreter), 16-bit, a power-of-two
    head size of 32 to 256 (each half a product of at least 16), whole head groups."""
    dim = q.shape[-1]
    return (
        triton is not None
        and (q.is_cuda or interpreting())
        and 32 <= dim <= 256
        and dim & (dim - 1) == 0
        and q.shape[1] % k.shape[1] == 0
        and q.dtype in (torch.float16, torch.bfloat16)
    )


def _wide_tiles_fit(q: torch.Tensor) -> bool:
    """Whether the long sequences' tiles (measured on an H100) suit this GPU: Hopper or
    newer, with shared memory for 3 stages of 64 keys and values and 128 query rows."""
    return hopper_fits(q.device, (3 * 2 * 64 + 128) * q.shape[-1] * q.element_size())


def _tiles(max_q: int, max_k: int, group: int, wide: bool) -> dict:
    """Tile sizes measured best on an H100 (bench/gpu_attention.py): 16 queries of each
    head of a group a program (at least 16 rows for ``tl.dot``, at most 128), keys in
    blocks of 32 (16 when there are no more); one query a sequence (the last layer):
    blocks of 64 keys; long sequences: see ``SPLIT_QUERIES`` and ``LONG_QUERIES``
    (``wide``: the GPU takes the larger tiles). One launch has one tile size, set by the
    batch's longest text: its short texts take the long one's tiles too (for 32 short
    texts alone they were 49% slower), but from ``LONG_QUERIES`` tokens the long text
    alone gives the SMs enough programs (512 with Qwen3-4B's 8 key/value heads), and its
    work, which grows with the square of its length, dominates the launch."""
    heads = triton.next_power_of_2(group)
    if wide and max_q >= LONG_QUERIES:
        return {
            "block": max(1, 128 // heads),
            "block_n": 64,
            "warps": 8,
            "stages": 3,
            "split": True,
        }
    block = max(16 // heads, min(16, triton.next_power_of_2(max_q)))
    block = max(1, min(block, 128 // heads))
    block_n = min(32 if block * heads >= 64 else 64, max(16, triton.next_power_of_2(max_k)))
    stages = 3 if block_n == 32 else 2
    return {"block": block, "block_n": block_n, "stages": stages, "split": max_q >= SPLIT_QUERIES}


def attention_triton(
    q, k, v, cu_q, cu_k, max_q: int, max_k: int, causal: bool, rope: QueryRope | None = None
) -> torch.Tensor:
    """The Triton kernel (CUDA, or Triton's CPU interpreter); ``rope``: the queries come raw
    and the kernel norms and rotates them as it loads them."""
    tiles = _tiles(max_q, max_k, q.shape[1] // k.shape[1], _wide_tiles_fit(q))
    return launch_triton(q, k, v, cu_q, cu_k, max_q, causal, rope, **tiles)


def launch_triton(
    q, k, v, cu_q, cu_k, max_q: int, causal: bool, rope: QueryRope | None = None, *,
    block: int, block_n: int = 64, warps: int = 4, stages: int = 2, split: bool = False,
) -> torch.Tensor:  # fmt: skip
    """``_attention_kernel`` with its tile sizes given (bench/gpu_attention.py tries them);
    ``split``: blocks of keys that every row of a tile sees whole take an unmasked step."""
    tokens, heads, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    for t in (q, k, v):
        if t.stride(2) != 1:
            raise ValueError("attention_triton needs the head dimension contiguous")
    out = torch.empty((tokens, heads, dim), dtype=q.dtype, device=q.device)
    grid = (triton.cdiv(max_q, block), cu_q.shape[0] - 1, kv_heads)
    rope_args = (q, q, q, 0.0) if rope is None else (rope.weight, rope.cos, rope.sin, rope.eps)
    _attention_kernel[grid](
        q, k, v, out, cu_q, cu_k, *rope_args,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1), _scale(q) * 1.4426950408889634, group,
        CAUSAL=causal, ROPE=rope is not None, WIDEN=interpreting(),
        GROUP=triton.next_power_of_2(group),
        BLOCK_M=block, BLOCK_N=block_n, DIM=dim, SPLIT=split, num_warps=warps,
        num_stages=stages,
        **launch_options(q.device),
    )  # fmt: skip
    return out


if triton is not None:

    @triton.jit
    def _attention_kernel(
        q_ptr, k_ptr, v_ptr, out_ptr, cu_q_ptr, cu_k_ptr, qw_ptr, cos_ptr, sin_ptr, eps,
        q_st, q_sh, k_st, k_sh, v_st, v_sh, o_st, o_sh, scale_log2, group,
        CAUSAL: tl.constexpr, ROPE: tl.constexpr, WIDEN: tl.constexpr, GROUP: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DIM: tl.constexpr, SPLIT: tl.constexpr,
        DEPENDENT: tl.constexpr,
    ):  # fmt: skip
        wait_for_inputs(DEPENDENT)
        # One program: BLOCK_M queries of one sequence for the GROUP query heads of one
        # key/value head, as GROUP * BLOCK_M rows (head-major); online softmax in float32
        # over blocks of BLOCK_N keys, probabilities rounded to the inputs' dtype for the
        # second product (as flash attention does).
        first = tl.program_id(0) * BLOCK_M
        seq = tl.program_id(1)
        kv_head = tl.program_id(2)
        q_start = tl.load(cu_q_ptr + seq)
        q_len = tl.load(cu_q_ptr + seq + 1) - q_start
        k_start = tl.load(cu_k_ptr + seq)
        k_len = tl.load(cu_k_ptr + seq + 1) - k_start
        if first < q_len:
            rows = tl.arange(0, GROUP * BLOCK_M)
            member = rows // BLOCK_M
            pos = first + rows % BLOCK_M
            live = (pos < q_len) & (member < group)
            head = kv_head * group + member
            # each q row as its two halves (rotary's pairs): the scores are two products
            half: tl.constexpr = DIM // 2
            lo = tl.arange(0, half)[None, :]
            q_rows = (q_start + pos).to(tl.int64) * q_st + head * q_sh
            q_at = q_ptr + q_rows[:, None] + lo
            q1 = tl.load(q_at, mask=live[:, None], other=0.0)
            q2 = tl.load(q_at + half, mask=live[:, None], other=0.0)
            shift = k_len - q_len  # causal, aligned to the end of the keys
            if ROPE:  # raw queries: normed and rotated here (a query's position: pos + shift)
                table = (pos + shift).to(tl.int64)[:, None] * DIM + lo
                cos, sin = cos_ptr + table, sin_ptr + table
                keep = live[:, None]
                q1, q2 = norm_rope_halves(
                    q1.to(tl.float32), q2.to(tl.float32),
                    tl.load(qw_ptr + lo).to(tl.float32), tl.load(qw_ptr + half + lo).to(tl.float32),
                    tl.load(cos, mask=keep, other=0.0).to(tl.float32),
                    tl.load(cos + half, mask=keep, other=0.0).to(tl.float32),
                    tl.load(sin, mask=keep, other=0.0).to(tl.float32),
                    tl.load(sin + half, mask=keep, other=0.0).to(tl.float32),
                    eps, q_ptr.dtype.element_ty, DIM,
                )  # fmt: skip
            if WIDEN:  # the CPU interpreter multiplies bf16 wrongly: float32 there
                q1, q2 = q1.to(tl.float32), q2.to(tl.float32)
            end = k_len
            # blocks every row of the tile sees whole: no masks (most blocks of a long text)
            whole = (k_len // BLOCK_N) * BLOCK_N
            if CAUSAL:
                end = tl.minimum(k_len, first + BLOCK_M + shift)
                whole = tl.minimum(whole, ((first + shift + 1) // BLOCK_N) * BLOCK_N)
            if not SPLIT:
                whole = 0
            best = tl.full((GROUP * BLOCK_M,), float("-inf"), tl.float32)
            total = tl.zeros((GROUP * BLOCK_M,), tl.float32)
            acc = tl.zeros((GROUP * BLOCK_M, DIM), tl.float32)
            k_base = k_ptr + kv_head * k_sh
            v_base = v_ptr + kv_head * v_sh
            for n in range(0, whole, BLOCK_N):
                acc, best, total = _attend(
                    q1, q2, acc, best, total, k_base, v_base, k_st, v_st, k_start, n, k_len,
                    pos + shift, scale_log2, MASKED=False, CAUSAL=CAUSAL, WIDEN=WIDEN,
                    BLOCK_N=BLOCK_N, DIM=DIM,
                )  # fmt: skip
            for n in range(whole, end, BLOCK_N):
                acc, best, total = _attend(
                    q1, q2, acc, best, total, k_base, v_base, k_st, v_st, k_start, n, k_len,
                    pos + shift, scale_log2, MASKED=True, CAUSAL=CAUSAL, WIDEN=WIDEN,
                    BLOCK_N=BLOCK_N, DIM=DIM,
                )  # fmt: skip
            o_rows = (q_start + pos).to(tl.int64) * o_st + head * o_sh
            dims = tl.arange(0, DIM)
            # a slot without keys (an unused one of a CUDA-graph bucket) gets zeros
            result = acc / tl.where(total > 0, total, 1.0)[:, None]
            tl.store(
                out_ptr + o_rows[:, None] + dims[None, :],
                result.to(out_ptr.dtype.element_ty),
                mask=live[:, None],
            )

    @triton.jit
    def _attend(
        q1, q2, acc, best, total, k_base, v_base, k_st, v_st, k_start, n, k_len, last_seen,
        scale_log2, MASKED: tl.constexpr, CAUSAL: tl.constexpr, WIDEN: tl.constexpr,
        BLOCK_N: tl.constexpr, DIM: tl.constexpr,
    ):  # fmt: skip
        """One block of BLOCK_N keys from ``n`` into the online softmax (the queries as
        their two halves ``q1``, ``q2``); ``MASKED``: the block may hold keys past the text
        or past a row's causal limit (``last_seen``)."""
        cols = n + tl.arange(0, BLOCK_N)
        dims = tl.arange(0, DIM)
        half: tl.constexpr = DIM // 2
        lo = tl.arange(0, half)[:, None]
        real = cols < k_len
        at = (k_start + cols).to(tl.int64)
        kt_at = k_base + at[None, :] * k_st + lo
        if MASKED:
            kt1 = tl.load(kt_at, mask=real[None, :], other=0.0)
            kt2 = tl.load(kt_at + half, mask=real[None, :], other=0.0)
        else:
            kt1 = tl.load(kt_at)
            kt2 = tl.load(kt_at + half)
        if WIDEN:  # the CPU interpreter multiplies bf16 wrongly: float32 there
            kt1, kt2 = kt1.to(tl.float32), kt2.to(tl.float32)
        s = tl.dot(q2, kt2, tl.dot(q1, kt1)) * scale_log2
        if MASKED:
            allowed = real[None, :]
            if CAUSAL:
                allowed = allowed & (cols[None, :] <= last_seen[:, None])
            s = tl.where(allowed, s, float("-inf"))
        new_best = tl.maximum(best, tl.max(s, axis=1))
        p = tl.exp2(s - new_best[:, None])
        fade = tl.exp2(best - new_best)
        total = total * fade + tl.sum(p, axis=1)
        if MASKED:
            vb = tl.load(v_base + at[:, None] * v_st + dims[None, :], mask=real[:, None], other=0.0)
        else:
            vb = tl.load(v_base + at[:, None] * v_st + dims[None, :])
        p = p.to(vb.dtype)  # rounded as flash attention rounds it
        if WIDEN:
            p, vb = p.to(tl.float32), vb.to(tl.float32)
        acc = acc * fade[:, None] + tl.dot(p, vb)
        return acc, new_best, total
