"""The padding-free Qwen3 forward (bridge/model/packed.py) against transformers itself.

On the CPU in float32, with the torch definitions of the fused steps, and with the
Triton kernels run by Triton's CPU interpreter (their bf16 numerics and speed are
measured on a GPU by bench/gpu.py and bench/gpu_kernels.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

from bridge.model.kernels import TORCH_OPS, triton
from bridge.model.packed import PackedQwen3, Unsupported, check_supported, pack

HERE = Path(__file__).resolve().parent


def test_pack_layout():
    b = pack([[5, 6, 7], [8]], pad_id=0)
    assert b.ids.tolist() == [5, 6, 7, 8]
    assert b.positions.tolist() == [0, 1, 2, 0]
    assert b.cu_seqlens.tolist() == [0, 3, 4] and b.cu_seqlens.dtype == torch.int32
    assert b.last.tolist() == [2, 3] and b.max_len == 3


def test_pack_into_a_bucket_adds_a_filler_and_empty_slots():
    b = pack([[5, 6, 7], [8]], pad_id=0, tokens=8, slots=4)
    assert b.ids.tolist() == [5, 6, 7, 8, 0, 0, 0, 0]
    assert b.positions.tolist() == [0, 1, 2, 0, 0, 1, 2, 3]
    # two texts, the filler (4 tokens), two empty slots
    assert b.cu_seqlens.tolist() == [0, 3, 4, 8, 8, 8]
    assert b.last.tolist() == [2, 3, 7, 7, 7]


def test_a_batch_goes_through_one_buffer_of_views():
    """What a GPU copy moves: one byte buffer whose views are the four arrays (the
    int64 ones first, each view aligned), filled from a batch of the same bucket."""
    static = pack([], pad_id=0, tokens=8, slots=4)
    flat = static._staged()  # as ``to`` and ``staging`` lay it out, here in CPU memory
    assert flat.flat.numel() == sum(t.numel() * t.element_size() for t in static.tensors)
    for view, like in zip(flat.tensors, static.tensors, strict=True):
        assert view.dtype == like.dtype and view.shape == like.shape
        assert view.untyped_storage().data_ptr() == flat.flat.untyped_storage().data_ptr()
        assert view.data_ptr() % view.element_size() == 0
    batch = pack([[5, 6, 7], [8]], pad_id=0, tokens=8, slots=4)
    batch.copy_into(flat)
    for view, value in zip(flat.tensors, batch.tensors, strict=True):
        assert torch.equal(view, value)
    assert flat.flat.numel() == 8 * 8 * 2 + 5 * 8 + 6 * 4  # no gap: every byte is written


def load_model(path: Path) -> torch.nn.Module:
    model = AutoModel.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # the tiny model's norms are all ones: make them count
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(1.0, 0.3, generator=generator)
    return model.eval()


def reference(model: torch.nn.Module, seqs: list[list[int]]) -> torch.Tensor:
    """transformers, one text at a time: the last token's final state."""
    with torch.inference_mode():
        return torch.cat(
            [model(input_ids=torch.tensor([s])).last_hidden_state[:, -1] for s in seqs]
        )


SEQS = [[11, 12, 13, 14, 15, 16, 151643], [20, 151643], [30 + i for i in range(40)] + [151643]]


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (F.normalize(a.float(), dim=-1) * F.normalize(b.float(), dim=-1)).sum(-1)


def test_packed_forward_equals_transformers(tiny_qwen3_dir):
    model = load_model(tiny_qwen3_dir)
    want = reference(model, SEQS)
    packed = PackedQwen3(model, TORCH_OPS, max_positions=512)
    with torch.inference_mode():
        got = packed.forward(pack(SEQS, pad_id=151643))
        bucketed = packed.forward(pack(SEQS, pad_id=151643, tokens=64, slots=6))
    assert got.shape == (3, 64)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    assert torch.allclose(bucketed[:3], got, atol=1e-5)
    # the model's own weights are now views of the fused ones and still give its results
    assert torch.allclose(reference(model, SEQS), want, atol=1e-6)
    mlp, fused = model.layers[0].mlp, packed.layers[0].gate_up  # (gate, up) row pairs
    assert mlp.gate_proj.weight.data_ptr() == fused.data_ptr()
    assert torch.equal(fused[1::2], mlp.up_proj.weight)


def test_unsupported_configurations_are_refused(tiny_qwen3_dir):
    config = AutoModel.from_pretrained(tiny_qwen3_dir).config
    check_supported(config)
    config.attention_bias = True
    with pytest.raises(Unsupported, match="bias"):
        check_supported(config)


@pytest.mark.skipif(triton is None, reason="Triton is not installed with this torch")
def test_triton_kernels_in_the_packed_forward(tiny_qwen3_dir):
    """The whole forward with the Triton kernels (CPU interpreter) against transformers."""
    script = f"""
import sys, torch
sys.path.insert(0, {str(HERE)!r})
from test_packed import SEQS, load_model, reference
from bridge.model.kernels import TRITON_OPS
from bridge.model.packed import PackedQwen3, pack
model = load_model({str(tiny_qwen3_dir)!r})
want = reference(model, SEQS)
with torch.inference_mode():
    got = PackedQwen3(model, TRITON_OPS, 512).forward(pack(SEQS, 151643, tokens=64, slots=4))
err = (got[:3] - want).abs().max().item()
print("max error", err)
assert err < 1e-3, err
"""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
