"""Fused GPU kernels (Triton) for the Qwen3 blocks, for eager mode and CUDA graphs.

Eager Qwen3 spends about half of its GPU time outside the GEMMs: each RMSNorm is six
float32 elementwise kernels, and the MLP's SiLU·mul two more. Here an RMSNorm is one
kernel, and gate and up projections are one GEMM followed by one SiLU·mul kernel. The
arithmetic and its bf16 rounding points are those of the transformers code they replace.
``fuse_qwen3`` patches a loaded model in place; on CPU, or without Triton, it does nothing.
"""

from __future__ import annotations

import logging
import types

import torch

log = logging.getLogger(__name__)

try:  # Triton ships with PyTorch's CUDA wheels on Linux
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where Triton is absent
    triton = None


if triton is not None:

    @triton.jit
    def _rmsnorm(x_ptr, w_ptr, out_ptr, n_cols, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        keep = cols < n_cols
        x = tl.load(x_ptr + row * n_cols + cols, mask=keep, other=0.0).to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
        normed = (x * rstd).to(out_ptr.dtype.element_ty).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=keep, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * n_cols + cols, (w * normed).to(out_ptr.dtype.element_ty), keep)

    @triton.jit
    def _silu_mul(gu_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        keep = cols < n_cols
        gate = tl.load(gu_ptr + row * 2 * n_cols + cols, mask=keep, other=0.0).to(tl.float32)
        up = tl.load(gu_ptr + row * 2 * n_cols + n_cols + cols, mask=keep, other=0.0)
        act = (gate / (1.0 + tl.exp(-gate))).to(out_ptr.dtype.element_ty).to(tl.float32)
        out = (act * up.to(tl.float32)).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + row * n_cols + cols, out, keep)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * (x / rms(x)).to(x.dtype)`` over the last dimension, in one kernel."""
    n = x.shape[-1]
    flat = x.contiguous().view(-1, n)
    out = torch.empty_like(flat)
    _rmsnorm[(flat.shape[0],)](flat, weight, out, n, eps, BLOCK=triton.next_power_of_2(n))
    return out.view(x.shape)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` where ``gate_up`` holds gate then up on its last dimension."""
    n = gate_up.shape[-1] // 2
    flat = gate_up.contiguous().view(-1, 2 * n)
    out = torch.empty((flat.shape[0], n), dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    _silu_mul[(flat.shape[0], triton.cdiv(n, block))](flat, out, n, BLOCK=block)
    return out.view(*gate_up.shape[:-1], n)


def _norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    return rms_norm(hidden_states, self.weight, self.variance_epsilon)


def _mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(silu_mul(torch.nn.functional.linear(x, self.gate_up_weight)))


def fuse_qwen3(model: torch.nn.Module) -> int:
    """Swap the RMSNorms and MLPs of a Qwen3 model on CUDA for fused ones; returns how
    many modules changed (0 where it does not apply)."""
    device = next(model.parameters()).device
    if triton is None or device.type != "cuda":
        return 0
    changed = 0
    for module in model.modules():
        name = type(module).__name__
        if name.endswith("RMSNorm") and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(_norm_forward, module)
            changed += 1
        elif name == "Qwen3MLP" and getattr(module.config, "hidden_act", "") == "silu":
            # One GEMM for gate and up; the separate weights are dropped (same memory).
            weight = torch.cat([module.gate_proj.weight, module.up_proj.weight]).detach()
            del module.gate_proj, module.up_proj
            module.gate_up_weight = torch.nn.Parameter(weight, requires_grad=False)
            module.forward = types.MethodType(_mlp_forward, module)
            changed += 1
    log.info("fused kernels in %d modules", changed)
    return changed
