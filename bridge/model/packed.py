"""A padding-free Qwen3 forward: the sequences of a batch packed into one row of tokens.

No padding is computed and no attention mask is built: attention is variable-length
(``cu_seqlens``, attention.py): on CUDA our Triton kernel for texts of up to 8,192 tokens
and flash attention past them, one causal attention per sequence elsewhere.
Each block is four GEMMs around the fused steps of ``kernels.py`` (q/k/v and gate/up
each one GEMM; SiLU·mul runs in the gate/up GEMM with FP8 and few rows (fp8.py, whose
split-K partials the residual-add kernel adds up) and with 16-bit weights and many rows
on Hopper (gate_up.py); with 16-bit weights the o and down GEMMs add their product
to the residual stream in place (cuBLAS's epilogue), so only the RMSNorm runs after
them; the q heads' RMSNorm and rotary run in our attention kernel as it loads them
(attention.py's ``QueryRope``), the k heads' in ``norm_rope``), and the last block
computes only the rows that are pooled (each sequence's last token). The
weights are those of the loaded transformers model; fused GEMM weights are built once
and the model's own weights become views of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain

import numpy as np
import torch
import torch.nn.functional as F

from bridge.model import gate_up as gate_up_gemm
from bridge.model.attention import QueryRope
from bridge.model.errors import Unsupported
from bridge.model.fp8 import SMALL_ROWS, Fp8Rows, Fp8Weight, linear
from bridge.model.kernels import Ops


@dataclass
class PackedBatch:
    """A batch as flat token arrays (on the CPU until moved). On a GPU the four arrays are
    views of one byte buffer (``flat``), so that one copy moves them."""

    ids: torch.Tensor  # (tokens,) int64
    positions: torch.Tensor  # (tokens,) int64, from 0 in each sequence
    cu_seqlens: torch.Tensor  # (sequences + 1,) int32, each sequence's start, then the end
    last: torch.Tensor  # (sequences,) int64, index of each sequence's last token
    max_len: int
    flat: torch.Tensor | None = None  # the bytes the four are views of (None: separate)

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """ids, positions, cu_seqlens, last: what a device copy moves."""
        return self.ids, self.positions, self.cu_seqlens, self.last

    def _staged(self, **where) -> PackedBatch:
        """A batch of this one's shapes over one new byte buffer (int64 arrays first, so
        every view is aligned; the four cover it), not filled; ``where``: ``torch.empty``'s
        placement."""
        sizes = [t.numel() * t.element_size() for t in self.tensors]
        order = (0, 1, 3, 2)  # ids, positions, last, then the int32 cu_seqlens
        flat = torch.empty(sum(sizes), dtype=torch.uint8, **where)
        views: list[torch.Tensor | None] = [None] * 4
        at = 0
        for i in order:
            views[i] = flat[at : at + sizes[i]].view(self.tensors[i].dtype)
            at += sizes[i]
        return PackedBatch(*views, self.max_len, flat)  # type: ignore[arg-type]

    def staging(self) -> PackedBatch:
        """Pinned host memory laid out as ``to`` lays the device copy out."""
        return self._staged(pin_memory=True)

    def to(self, device: torch.device) -> PackedBatch:
        """The batch on ``device``: one buffer, filled by one host-to-device copy."""
        if device.type != "cuda":
            return self
        host = self.staging()
        self.copy_into(host)
        moved = self._staged(device=device)
        moved.flat.copy_(host.flat, non_blocking=True)  # type: ignore[union-attr]
        return moved

    def copy_into(self, static: PackedBatch, staging: PackedBatch | None = None) -> None:
        """Write this batch's arrays into ``static``'s (a captured graph's inputs, same
        shapes): on the host directly; to a GPU through ``staging`` (``static.staging()``,
        kept by the caller, who waits for the copy before writing it again) in one copy."""
        if staging is None:
            for target, value in zip(static.tensors, self.tensors, strict=True):
                target.copy_(value)
            return
        for target, value in zip(staging.tensors, self.tensors, strict=True):
            target.copy_(value)
        static.flat.copy_(staging.flat, non_blocking=True)  # type: ignore[union-attr]


def pack(
    batch: list[list[int]], pad_id: int, tokens: int | None = None, slots: int | None = None
) -> PackedBatch:
    """Pack ``batch``. For a CUDA-graph bucket of ``tokens`` tokens and ``slots`` pooled
    rows, the tokens past the batch form one filler sequence and the unused slots empty
    sequences after it; their pooled rows (after the batch's) are computed and ignored."""
    lengths = [len(s) for s in batch]
    real = sum(lengths)
    total = tokens if tokens is not None else real
    if tokens is not None:
        lengths += [total - real] + [0] * ((slots or len(batch)) - len(batch))
    ids = np.full(total, pad_id, dtype=np.int64)
    ids[:real] = np.fromiter(chain.from_iterable(batch), dtype=np.int64, count=real)
    sizes = np.asarray(lengths, dtype=np.int64)
    starts = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    positions = np.arange(total, dtype=np.int64) - np.repeat(starts[:-1], sizes)
    # one pooled row per sequence (flash attention's one-query path needs as many)
    last = np.maximum(starts[1:] - 1, 0)
    return PackedBatch(
        torch.from_numpy(ids), torch.from_numpy(positions),
        torch.from_numpy(starts.astype(np.int32)), torch.from_numpy(last), int(sizes.max()),
    )  # fmt: skip


@dataclass
class _Layer:
    norm_in: torch.Tensor
    qkv: torch.Tensor | Fp8Weight  # (q + k + v rows, hidden); FP8 with --quantize fp8
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    o: torch.Tensor | Fp8Weight
    norm_post: torch.Tensor
    # (2 * intermediate, hidden): gate and up rows paired (gate_up.py); FP8: gate rows, then up
    gate_up: torch.Tensor | Fp8Weight
    down: torch.Tensor | Fp8Weight


def _pair_rows(gate: torch.nn.Linear, up: torch.nn.Linear) -> torch.Tensor:
    """One weight whose rows alternate ``gate``'s and ``up``'s (``gate_up.pair_rows``); the
    modules' weights become strided views of it, as in ``_fuse_rows``."""
    weight = gate_up_gemm.pair_rows(gate.weight.detach(), up.weight.detach())
    for start, module in enumerate((gate, up)):
        module.weight = torch.nn.Parameter(weight[start::2], requires_grad=False)
    return weight


def _fuse_rows(first: torch.nn.Linear, *rest: torch.nn.Linear) -> torch.Tensor:
    """One weight holding ``first`` and ``rest`` stacked; the modules' weights become views
    of it, so the model still works and no memory is doubled."""
    mods = (first, *rest)
    weight = torch.cat([m.weight.detach() for m in mods])
    start = 0
    for m in mods:
        rows = m.weight.shape[0]
        m.weight = torch.nn.Parameter(weight[start : start + rows], requires_grad=False)
        start += rows
    return weight


class PackedQwen3:
    """Pooled last-token states of a Qwen3 model for packed batches."""

    def __init__(self, model: torch.nn.Module, ops: Ops, max_positions: int) -> None:
        config = model.config
        check_supported(config)
        check_device(model.embed_tokens.weight)
        self.ops = ops
        self.eps = float(config.rms_norm_eps)
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.embed = model.embed_tokens.weight
        self.final_norm = model.norm.weight
        self.layers = []
        for layer in model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append(
                _Layer(
                    layer.input_layernorm.weight,
                    _fuse_rows(attn.q_proj, attn.k_proj, attn.v_proj),
                    attn.q_norm.weight,
                    attn.k_norm.weight,
                    attn.o_proj.weight,
                    layer.post_attention_layernorm.weight,
                    _pair_rows(mlp.gate_proj, mlp.up_proj),
                    mlp.down_proj.weight,
                )
            )
        # Rotary tables from the model's own rotary module: the same values it uses.
        with torch.inference_mode():
            positions = torch.arange(max_positions, device=self.embed.device)[None]
            cos, sin = model.rotary_emb(self.embed[:1][None], positions)
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()

    @property
    def max_positions(self) -> int:
        return self.cos.shape[0]

    def forward(self, b: PackedBatch) -> torch.Tensor:
        """(pooled rows, hidden) float32: the final-norm state of each ``b.last`` token."""
        ops, eps, d = self.ops, self.eps, self.head_dim
        nq, nk = self.heads * d, self.kv_heads * d
        h = F.embedding(b.ids, self.embed)
        x = ops.rms_norm(h, self.layers[0].norm_in, eps)
        pooled = b.last.shape[0]
        for i, layer in enumerate(self.layers):
            qkv = linear(x, layer.qkv)
            # the k heads normed and rotated here; the q heads by attention as it loads them
            k = ops.norm_rope(
                qkv[:, nq : nq + nk].view(-1, self.kv_heads, d),
                (layer.q_norm, layer.k_norm), 0, eps, self.cos, self.sin, b.positions,
            )  # fmt: skip
            if i < len(self.layers) - 1:
                q = qkv[:, :nq].view(-1, self.heads, d)
                rows, cu_q, max_q, causal = None, b.cu_seqlens, b.max_len, True
            else:  # only the pooled tokens go on: their query attends to their whole text
                q = qkv[b.last, :nq].view(-1, self.heads, d)
                rows = b.last
                h = h[b.last]
                cu_q = torch.arange(pooled + 1, dtype=torch.int32, device=h.device)
                max_q, causal = 1, False
            rope = QueryRope(layer.q_norm, eps, self.cos, self.sin, b.positions, rows)
            v = qkv[:, nq + nk :].view(-1, self.kv_heads, d)
            out = ops.attention(q, k, v, cu_q, b.cu_seqlens, max_q, b.max_len, causal, rope)
            h, x = self._add_norm(out.view(-1, nq), layer.o, h, layer.norm_post, layer.gate_up)
            act = self._activation(x, layer.gate_up, layer.down)
            if i + 1 < len(self.layers):
                following = self.layers[i + 1]
                h, x = self._add_norm(act, layer.down, h, following.norm_in, following.qkv)
            else:
                h, x = self._add_norm(act, layer.down, h, self.final_norm, None)
        return x.float()  # type: ignore[union-attr]

    def _activation(
        self,
        x: torch.Tensor | Fp8Rows,
        gate_up: torch.Tensor | Fp8Weight,
        down: torch.Tensor | Fp8Weight,
    ) -> torch.Tensor | Fp8Rows:
        """The MLP's ``silu(gate) * up``, the ``down`` GEMM's input: one kernel where a GEMM
        takes SiLU·mul in its epilogue (FP8 with few rows: fp8.py; 16-bit with many rows
        on Hopper: gate_up.py), else the GEMM and then SiLU·mul, which quantizes its rows
        where an FP8 ``down`` would (more rows than its few-row kernel takes)."""
        if self.ops.in_gemms and isinstance(gate_up, Fp8Weight):
            act = gate_up.silu_mul(x)
            if act is not None:
                return act
        elif (
            self.ops.in_gemms
            and isinstance(x, torch.Tensor)
            and x.shape[0] >= gate_up_gemm.MIN_ROWS
            and gate_up_gemm.supported(x, gate_up)
        ):
            return gate_up_gemm.gate_up_silu(x, gate_up)
        product = linear(x, gate_up)
        if isinstance(down, Fp8Weight) and product.shape[0] > SMALL_ROWS:
            return self.ops.silu_mul_fp8(product)
        return self.ops.silu_mul(product, pairs=isinstance(gate_up, torch.Tensor))

    def _add_norm(
        self,
        x: torch.Tensor | Fp8Rows,
        weight: torch.Tensor | Fp8Weight,
        residual: torch.Tensor,
        norm: torch.Tensor,
        consumer: torch.Tensor | Fp8Weight | None,
    ) -> tuple[torch.Tensor, torch.Tensor | Fp8Rows]:
        """The residual stream after the GEMM of ``x`` by ``weight`` is added to it, and its
        RMSNorm: the next GEMM's input, quantized when ``consumer`` (that GEMM) is FP8.
        With 16-bit weights and our kernels the sum is the GEMM's own epilogue (cuBLAS
        adds ``residual`` in place, rounding once), so the norm reads one tensor, not two;
        an FP8 GEMM's output (or its split-K partials) is added as the norm loads it."""
        if isinstance(consumer, Fp8Weight):
            y = linear(x, weight, keep_parts=True)
            return self.ops.add_rms_norm_fp8(y, residual, norm, self.eps)
        if self.ops.in_gemms and isinstance(weight, torch.Tensor):
            residual.addmm_(x, weight.t())  # type: ignore[arg-type]
            return residual, self.ops.rms_norm(residual, norm, self.eps)
        return self.ops.add_rms_norm(linear(x, weight, keep_parts=True), residual, norm, self.eps)


def check_device(weight: torch.Tensor) -> None:
    """Flash attention on CUDA needs an Ampere or newer GPU and 16-bit weights."""
    if not weight.is_cuda:
        return  # the per-sequence attention works anywhere
    if torch.cuda.get_device_capability(weight.device) < (8, 0):
        raise Unsupported("flash attention needs an Ampere (sm80) or newer GPU")
    if weight.dtype not in (torch.float16, torch.bfloat16):
        raise Unsupported(f"flash attention needs float16 or bfloat16, not {weight.dtype}")


def check_supported(config) -> None:
    """Refuse what this forward does not reproduce (it then falls back to transformers)."""
    if getattr(config, "model_type", "") != "qwen3":
        raise Unsupported(f"model type {config.model_type!r} is not qwen3")
    if getattr(config, "attention_bias", False):
        raise Unsupported("attention biases")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise Unsupported(f"activation {config.hidden_act!r}")
    layer_types = getattr(config, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        raise Unsupported("sliding-window layers")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise Unsupported(f"rope type {rope.get('rope_type')!r}")
