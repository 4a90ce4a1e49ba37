"""FP8 (e4m3) linear layers for GPUs with FP8 tensor cores (compute capability 8.9+).

Weights are quantized once, one scale per output channel; activations are quantized on
the fly, one scale per token (row), and the GEMM is ``torch._scaled_mm`` with those row
and column scales, writing bf16. For up to ``SMALL_ROWS`` rows our Triton kernel
``small_gemm`` takes over; up to ``WIDE_ROWS``, bf16 activations are not quantized at all
(the kernel widens the FP8 weights in registers: so few rows cost the weights' reading,
not the multiplications, and a quantize kernel would only add time), while rows that come
quantized (``Fp8Rows``) keep their scales. For so few rows the steps around a GEMM cost
more in kernel boundaries than in work, so the kernel also takes two of them: the MLP's
SiLU·mul in the gate/up GEMM's epilogue (``Fp8Weight.silu_mul``), and split-K partials
left for the next kernel to add up as it loads them (``Partials``). Everything that is
not a linear layer stays bf16.

``quantize_modules`` swaps every suitable ``nn.Linear`` of any model for ``Fp8Linear``;
``quantize_packed`` does the same for the fused weights of the padding-free Qwen3 forward
(q/k/v and gate/up are one GEMM each there, so one scale set covers each fused weight).
The quantize step is one Triton kernel on CUDA (torch ops elsewhere), so it is also
captured by the CUDA graphs; in the packed forward the inputs of the q/k/v and gate/up
GEMMs come quantized from the residual add + RMSNorm kernel (``Fp8Rows``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bridge.model.errors import DeviceError
from bridge.model.gate_up import unpair_rows
from bridge.model.launch import (
    launch_options,
    row_warps,
    silu_mul_rounded,
    sm_count,
    wait_for_inputs,
)

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
MIN_SCALE = 1e-12  # an all-zero row quantizes to zeros instead of dividing by zero
QUANTIZE_CHOICES = ("none", "fp8")
FP8_CAPABILITY = (8, 9)  # Ada and Hopper


class QuantizeError(DeviceError):
    """FP8 was asked for where it cannot run."""


def check_fp8_device(device: torch.device) -> None:
    """Refuse devices without FP8 tensor cores, saying what to do instead."""
    if device.type != "cuda":
        raise QuantizeError(
            f"--quantize fp8 needs an NVIDIA GPU with FP8 tensor cores (compute capability "
            f"8.9+, e.g. L4, L40S, H100, H200); the device is {device}. Start without "
            "--quantize (or BRIDGE_QUANTIZE=none) to serve in the default precision."
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        raise QuantizeError(
            f"--quantize fp8 needs compute capability 8.9+ (Ada, Hopper); {name} on {device} "
            f"is {capability[0]}.{capability[1]}. Start without --quantize to serve in bf16."
        )


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight (out, in), float32 scale (out,)): one scale per output channel, so
    ``weight ≈ fp8.float() * scale[:, None]``."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / FP8_MAX).clamp(min=MIN_SCALE)
    q = (w / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def quantize_rows_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 rows, float32 scale (rows, 1)) of a 2-D tensor with torch ops: one dynamic
    scale per token."""
    xf = x.float()
    scale = (xf.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=MIN_SCALE)
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def _triton_quantize_rows():
    """The Triton kernel of ``quantize_rows`` (built on first use on CUDA)."""
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(
        x_ptr, q_ptr, s_ptr, cols, stride, fp8_max, min_scale, BLOCK: tl.constexpr,
        DEPENDENT: tl.constexpr,
    ):  # fmt: skip
        wait_for_inputs(DEPENDENT)
        row = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        mask = offs < cols
        x = tl.load(x_ptr + row * stride + offs, mask=mask, other=0.0).to(tl.float32)
        scale = tl.maximum(tl.max(tl.abs(x), axis=0) / fp8_max, min_scale)
        q = tl.clamp(x / scale, -fp8_max, fp8_max)
        tl.store(q_ptr + row * cols + offs, q.to(q_ptr.dtype.element_ty), mask=mask)
        tl.store(s_ptr + row, scale)

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = x.shape
        q = torch.empty((rows, cols), dtype=FP8, device=x.device)
        scale = torch.empty((rows, 1), dtype=torch.float32, device=x.device)
        if rows:
            block = triton.next_power_of_2(cols)
            kernel[(rows,)](
                x, q, scale, cols, x.stride(0), FP8_MAX, MIN_SCALE, BLOCK=block,
                num_warps=row_warps(block),
                **launch_options(x.device),
            )  # fmt: skip
        return q, scale

    return run


_QUANTIZE_ROWS_CUDA = None


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token quantization of a 2-D tensor whose rows are contiguous."""
    global _QUANTIZE_ROWS_CUDA
    if not x.is_cuda:
        return quantize_rows_reference(x)
    if x.stride(1) != 1:
        x = x.contiguous()
    if _QUANTIZE_ROWS_CUDA is None:
        _QUANTIZE_ROWS_CUDA = _triton_quantize_rows()
    return _QUANTIZE_ROWS_CUDA(x)


# Few rows (a short query): cuBLASLt's row-scaled FP8 kernels read the weights slowly
# there (bench/gpu_small_gemm.py: on an H200, 1x16 tokens' GPU time 3.6 -> 2.7 ms with
# this kernel). Up to SMALL_ROWS rows, a Triton kernel that streams the weights once, a
# block of output columns per program, takes over. Where the column blocks alone are too
# few programs to keep every SM reading (o and down of Qwen3-4B: 80 blocks on 132 SMs),
# the depth is split too (split-K): each program sums its share of K into a float32
# partial, and a second small kernel adds the partials up.
SMALL_ROWS = 64
SMALL_BLOCK_N = 32
SMALL_BLOCK_K = 256
SMALL_STAGES = 3
SPLIT_ROWS = 16  # split K only up to this many rows (past it the partials cost more)
WIDE_ROWS = 16  # bf16 rows unquantized up to this many (past it quantizing is cheaper)
SPLIT_PROGRAMS_PER_SM = 2  # then split until about this many programs per SM
SPLIT_MIN_BLOCKS = 2  # ... while each program keeps at least this many K blocks


def split_for(rows: int, cols: int, depth: int, sms: int, block_n: int = SMALL_BLOCK_N) -> int:
    """How many parts to split the depth into: 1 where the column blocks alone are at
    least one program per SM or the rows are many; else enough parts for
    ``SPLIT_PROGRAMS_PER_SM`` programs per SM, each with ``SPLIT_MIN_BLOCKS`` K blocks."""
    col_blocks = -(-cols // block_n)
    if col_blocks >= sms or rows > SPLIT_ROWS:
        return 1
    wanted = -(-SPLIT_PROGRAMS_PER_SM * sms // col_blocks)
    return max(1, min(wanted, depth // (SPLIT_MIN_BLOCKS * SMALL_BLOCK_K)))


def _triton_small_gemm():
    """The Triton kernels of ``small_gemm`` (built on first use on CUDA)."""
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(
        x_ptr,
        xs_ptr,
        w_ptr,
        ws_ptr,
        out_ptr,
        rows,
        cols,
        depth,
        k_per_split,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        X_FP8: tl.constexpr,
        PAIRED: tl.constexpr,
        DEPENDENT: tl.constexpr,
    ):
        wait_for_inputs(DEPENDENT)
        m = tl.arange(0, BLOCK_M)
        n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        split = tl.program_id(1)
        k_start = split * k_per_split
        k = k_start + tl.arange(0, BLOCK_K)
        x_ptrs = x_ptr + m[:, None] * depth + k[None, :]  # (BLOCK_M, BLOCK_K)
        w_ptrs = w_ptr + n[None, :] * depth + k[:, None]  # (BLOCK_K, BLOCK_N): W transposed
        m_in, n_in = m[:, None] < rows, n[None, :] < cols
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)  # PAIRED: the up half
        for _ in range(k_start, tl.minimum(k_start + k_per_split, depth), BLOCK_K):
            x = tl.load(x_ptrs, mask=m_in, other=0.0)
            w = tl.load(w_ptrs, mask=n_in, other=0.0)
            if not X_FP8:  # 16-bit rows: the weights widened in registers, no row scales
                w = w.to(tl.float16).to(x.dtype)  # exact: e4m3 fits float16
            acc = tl.dot(x, w, acc)
            if PAIRED:  # the up column paired with each gate column, cols further on
                w_up = tl.load(w_ptrs + cols * depth, mask=n_in, other=0.0)
                if not X_FP8:
                    w_up = w_up.to(tl.float16).to(x.dtype)
                acc_up = tl.dot(x, w_up, acc_up)
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        out = acc * tl.load(ws_ptr + n, mask=n < cols, other=0.0)[None, :]  # partials alike
        if X_FP8:
            x_scale = tl.load(xs_ptr + m, mask=m < rows, other=0.0)[:, None]
            out *= x_scale
        if PAIRED:  # silu(gate) * up, rounded where the two kernels round (kernels.py)
            dt = out_ptr.dtype.element_ty
            up = acc_up * tl.load(ws_ptr + cols + n, mask=n < cols, other=0.0)[None, :]
            if X_FP8:
                up *= x_scale
            out = silu_mul_rounded(out, up, dt)
        out_ptrs = out_ptr + split * rows * cols + m[:, None] * cols + n[None, :]
        tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=m_in & n_in)

    @triton.jit
    def add_partials(
        part_ptr, out_ptr, size, SPLIT: tl.constexpr, BLOCK: tl.constexpr, DEPENDENT: tl.constexpr
    ):
        wait_for_inputs(DEPENDENT)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < size
        total = tl.zeros((BLOCK,), dtype=tl.float32)
        for s in tl.static_range(SPLIT):
            total += tl.load(part_ptr + s * size + offs, mask=mask, other=0.0)
        tl.store(out_ptr + offs, total.to(out_ptr.dtype.element_ty), mask=mask)

    def run(
        xq: torch.Tensor,
        x_scale: torch.Tensor | None,
        weight: Fp8Weight,
        block_n: int = SMALL_BLOCK_N,
        block_k: int = SMALL_BLOCK_K,
        warps: int = 4,
        stages: int = SMALL_STAGES,
        split: int | None = None,
        paired: bool = False,
        keep_parts: bool = False,
    ) -> torch.Tensor | Partials:
        rows, depth = xq.shape
        cols = weight.weight.shape[0] // (2 if paired else 1)
        if paired:
            split = 1  # the epilogue needs whole sums
        elif split is None:
            split = split_for(rows, cols, depth, sm_count(xq.device), block_n)
        k_blocks = -(-depth // block_k)
        k_per_split = -(-k_blocks // split) * block_k
        split = -(-depth // k_per_split)  # no empty part
        out = torch.empty((rows, cols), dtype=weight.out_dtype, device=xq.device)
        target = out
        if split > 1:
            target = torch.empty((split, rows, cols), dtype=torch.float32, device=xq.device)
        block_m = max(16, triton.next_power_of_2(rows))
        kernel[(triton.cdiv(cols, block_n), split)](
            xq,
            xq if x_scale is None else x_scale,
            weight.weight,
            weight.scale,
            target,
            rows,
            cols,
            depth,
            k_per_split,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            BLOCK_K=block_k,
            X_FP8=x_scale is not None,
            PAIRED=paired,
            num_warps=warps,
            num_stages=stages,
            **launch_options(xq.device),
        )
        if split == 1:
            return out
        parts = Partials(target, weight.out_dtype)
        return parts if keep_parts else parts.total()

    def total(parts: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        split, rows, cols = parts.shape
        out = torch.empty((rows, cols), dtype=dtype, device=parts.device)
        size, block = rows * cols, 1024
        add_partials[(triton.cdiv(size, block),)](
            parts, out, size, SPLIT=split, BLOCK=block, **launch_options(parts.device)
        )
        return out

    return run, total


_SMALL_GEMM_CUDA = None


def _small_kernels():
    global _SMALL_GEMM_CUDA
    if _SMALL_GEMM_CUDA is None:
        _SMALL_GEMM_CUDA = _triton_small_gemm()
    return _SMALL_GEMM_CUDA


def small_gemm(
    xq: torch.Tensor, x_scale: torch.Tensor | None, weight: Fp8Weight, **config
) -> torch.Tensor | Partials:
    """``xq @ weight.T`` scaled per row and per channel, for at most ``SMALL_ROWS``
    contiguous rows whose depth is a multiple of ``SMALL_BLOCK_K`` (``small_fits``);
    ``x_scale`` None: ``xq`` is 16-bit rows, multiplied as they are by the weights widened
    to their type (no quantize step: few rows cost the weights' reading, not the MMAs).
    ``config``: tile sizes; ``split`` (parts of K; default ``split_for``); ``paired``:
    the weight holds gate rows then as many up rows, and the result is ``silu(gate) *
    up`` (the MLP's activation, computed in the epilogue); ``keep_parts``: a split product
    comes back as its ``Partials``, for a consumer that adds them up as it loads them."""
    return _small_kernels()[0](xq, x_scale, weight, **config)


@dataclass
class Partials:
    """A split-K product not yet added up: float32 ``parts`` (parts, rows, cols), to be
    summed in order and rounded to ``dtype`` (``total``, or a kernel that sums on load)."""

    parts: torch.Tensor
    dtype: torch.dtype

    @property
    def shape(self) -> torch.Size:
        return self.parts.shape[1:]

    def total(self) -> torch.Tensor:
        return _small_kernels()[1](self.parts, self.dtype)


def dense(x: torch.Tensor | Partials) -> torch.Tensor:
    """``x`` as one tensor (partials added up)."""
    return x.total() if isinstance(x, Partials) else x


def small_fits(xq: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``small_gemm`` takes this product (few rows, whole K blocks, contiguous)."""
    return (
        xq.shape[0] <= SMALL_ROWS
        and xq.shape[1] % SMALL_BLOCK_K == 0
        and xq.is_contiguous()
        and weight.is_contiguous()
    )


@dataclass
class Fp8Rows:
    """Activations already quantized per token (by a fused kernel): fp8 rows and their
    float32 scales (rows, 1)."""

    q: torch.Tensor
    scale: torch.Tensor


@dataclass
class Fp8Weight:
    """A linear layer's weight in FP8: ``weight`` (out, in) and per-channel ``scale``."""

    weight: torch.Tensor  # float8_e4m3fn, (out, in), row-major
    scale: torch.Tensor  # float32, (out,)
    bias: torch.Tensor | None = None
    out_dtype: torch.dtype = torch.bfloat16

    @classmethod
    def of(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> Fp8Weight:
        q, scale = quantize_weight(weight)
        return cls(q, scale, None if bias is None else bias.detach(), weight.dtype)

    def _rows(
        self, x: torch.Tensor | Fp8Rows
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Size]:
        """The GEMM's rows, their scales and the input's shape: quantized rows as they are,
        few 16-bit rows on a GPU unquantized (scales None), any others quantized here."""
        if isinstance(x, Fp8Rows):
            return x.q, x.scale, x.q.shape
        rows = x.reshape(-1, x.shape[-1])
        if rows.is_cuda and rows.shape[0] <= WIDE_ROWS and small_fits(rows, self.weight):
            return rows, None, x.shape
        return *quantize_rows(rows), x.shape

    def __call__(
        self, x: torch.Tensor | Fp8Rows, keep_parts: bool = False
    ) -> torch.Tensor | Partials:
        """``x @ weight.T``; ``keep_parts``: a split-K product may come back as its
        ``Partials`` (the consumer adds them up)."""
        xq, x_scale, shape = self._rows(x)
        if xq.is_cuda and small_fits(xq, self.weight):
            out = small_gemm(xq, x_scale, self, keep_parts=keep_parts and self.bias is None)
            if isinstance(out, Partials):
                return out
        elif xq.is_cuda:
            out = torch._scaled_mm(
                xq,
                self.weight.t(),  # column-major (in, out), as the kernel wants
                scale_a=x_scale,
                scale_b=self.scale[None, :],
                out_dtype=self.out_dtype,
            )
        else:  # the same arithmetic in float32 (tests, and a reference)
            out = ((xq.float() @ self.weight.float().t()) * x_scale * self.scale).to(self.out_dtype)
        return self._finish(out, shape)

    def silu_mul(self, x: torch.Tensor | Fp8Rows) -> torch.Tensor | None:
        """``silu(gate) * up`` of this weight's product (gate rows, then as many up rows) in
        one kernel, where the few-row kernel takes ``x`` (the SiLU·mul in its epilogue);
        None elsewhere: the caller runs the GEMM and SiLU·mul."""
        lead = x.q if isinstance(x, Fp8Rows) else x.reshape(-1, x.shape[-1])
        rows_out = self.weight.shape[0]
        takes = lead.is_cuda and small_fits(lead, self.weight) and self.bias is None
        if not takes or rows_out % 2:
            return None
        xq, x_scale, shape = self._rows(x)
        out = small_gemm(xq, x_scale, self, paired=True)
        return out.reshape(*shape[:-1], rows_out // 2)  # type: ignore[union-attr]

    def _finish(self, out: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], out.shape[-1])


def linear(
    x: torch.Tensor | Fp8Rows, weight: torch.Tensor | Fp8Weight, keep_parts: bool = False
) -> torch.Tensor | Partials:
    """``F.linear`` for a plain weight, the FP8 GEMM for an ``Fp8Weight`` (which also takes
    rows a fused kernel quantized; ``keep_parts``: see ``Fp8Weight.__call__``)."""
    if isinstance(weight, Fp8Weight):
        return weight(x, keep_parts)
    if isinstance(x, Fp8Rows):
        raise TypeError("quantized rows need an FP8 weight")
    return F.linear(x, weight)


class Fp8Linear(torch.nn.Module):
    """Drop-in for an ``nn.Linear`` (inference only)."""

    def __init__(self, fp8: Fp8Weight) -> None:
        super().__init__()
        self.out_features, self.in_features = fp8.weight.shape
        self.fp8 = fp8

    @classmethod
    def of(cls, source: torch.nn.Linear) -> Fp8Linear:
        return cls(Fp8Weight.of(source.weight, source.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fp8(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8"


def fits(in_features: int, out_features: int) -> bool:
    """FP8 GEMMs need both sizes to be multiples of 16."""
    return in_features % 16 == 0 and out_features % 16 == 0


def quantize_modules(model: torch.nn.Module) -> int:
    """Replace every ``nn.Linear`` whose sizes fit by ``Fp8Linear``; returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and fits(child.in_features, child.out_features):
                setattr(parent, name, Fp8Linear.of(child))
                swapped += 1
    return swapped


# each fused weight of the packed forward, and the model's modules it stacks
PACKED_WEIGHTS = {
    "qkv": ("self_attn", ("q_proj", "k_proj", "v_proj")),
    "o": ("self_attn", ("o_proj",)),
    "gate_up": ("mlp", ("gate_proj", "up_proj")),
    "down": ("mlp", ("down_proj",)),
}


def quantize_packed(packed, model: torch.nn.Module) -> int:
    """Quantize the GEMM weights of a ``PackedQwen3`` built from ``model`` (fused q/k/v
    and gate/up, o, down). The model's linear modules become row slices of the same FP8
    weights (per-channel scales slice with them), so the bf16 weights are freed."""
    count = 0
    for layer, block in zip(packed.layers, model.layers, strict=True):
        for field, (owner_name, names) in PACKED_WEIGHTS.items():
            weight = getattr(layer, field)
            if not isinstance(weight, torch.Tensor) or not fits(weight.shape[1], weight.shape[0]):
                continue
            if field == "gate_up":  # gate rows, then up rows: what the FP8 kernels take
                weight = unpair_rows(weight)
            fp8 = Fp8Weight.of(weight)
            setattr(layer, field, fp8)
            owner, start = getattr(block, owner_name), 0
            for name in names:
                rows = getattr(owner, name).out_features
                part = Fp8Weight(
                    fp8.weight[start : start + rows],
                    fp8.scale[start : start + rows],
                    out_dtype=fp8.out_dtype,
                )
                setattr(owner, name, Fp8Linear(part))
                start += rows
            count += 1
    return count


def probe(device: torch.device) -> None:
    """One small FP8 GEMM with row-wise scales, so that an unsupported torch or GPU fails
    at start-up with a clear message instead of on the first request."""
    weight = Fp8Weight.of(torch.randn(32, 32, device=device, dtype=torch.bfloat16))
    try:
        weight(torch.randn(16, 32, device=device, dtype=torch.bfloat16))
        torch.cuda.synchronize(device)
    except (RuntimeError, ImportError) as exc:
        raise QuantizeError(
            f"FP8 GEMMs with row-wise scales do not run here (torch {torch.__version__}, "
            f"{torch.cuda.get_device_name(device)}): {exc}. Start without --quantize."
        ) from exc


def apply(model: torch.nn.Module, packed, device: torch.device) -> None:
    """Quantize a loaded model in place (and its packed forward, when it has one)."""
    check_fp8_device(device)
    probe(device)
    fused = quantize_packed(packed, model) if packed is not None else 0
    swapped = quantize_modules(model)  # whatever linear layers are left
    torch.cuda.empty_cache()
    log.info("fp8: %d fused packed weights, %d linear layers quantized", fused, swapped)
