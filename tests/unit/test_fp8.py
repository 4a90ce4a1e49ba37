"""FP8 quantization (bridge/model/fp8.py) on the CPU: the scaling math against a float
reference, the module swaps (generic nn.Linear and the packed Qwen3 forward), and the
refusal on devices without FP8. Speed and the GPU GEMM are measured by bench/gpu_fp8.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from test_packed import SEQS, cosines, load_model

from bridge.model import fp8
from bridge.model.embedder import Embedder
from bridge.model.families import load_profile
from bridge.model.kernels import TORCH_OPS, triton
from bridge.model.packed import PackedQwen3, pack


def test_weight_scales_are_per_output_channel():
    torch.manual_seed(0)
    weight = torch.randn(32, 64) * torch.logspace(-3, 1, 32)[:, None]  # channels far apart
    q, scale = fp8.quantize_weight(weight)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (32,)
    assert torch.allclose(scale, weight.abs().amax(1) / 448)
    back = q.float() * scale[:, None]
    # e4m3 keeps 3 mantissa bits: each value within 1/16 of itself (normal range) or of
    # the smallest step of its channel
    err = (back - weight).abs()
    assert torch.all(err <= weight.abs() / 16 + scale[:, None] * 2**-6)
    assert q.float().abs().amax(1).eq(448).all()  # each channel uses the whole range


def test_activation_scales_are_per_token_and_zero_rows_stay_zero():
    x = torch.randn(5, 48)
    x[1] *= 1000
    x[3] = 0
    q, scale = fp8.quantize_rows(x)
    assert scale.shape == (5, 1)
    assert torch.allclose(scale[[0, 1, 2, 4], 0], x[[0, 1, 2, 4]].abs().amax(1) / 448)
    assert q[3].float().eq(0).all()
    back = q.float() * scale
    assert torch.allclose(back, x, rtol=1 / 16, atol=float(scale.max()) * 2**-6)


def test_fp8_linear_matches_the_float_layer():
    torch.manual_seed(1)
    layer = torch.nn.Linear(64, 48, bias=True)
    x = torch.randn(3, 7, 64)
    want = layer(x)
    got = fp8.Fp8Linear.of(layer)(x)
    assert got.shape == want.shape
    assert cosines(got.reshape(-1, 48), want.reshape(-1, 48)).min() > 0.999
    assert fp8.linear(x, layer.weight).shape == want.shape  # plain weights still work


def test_quantize_modules_swaps_every_linear_that_fits():
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 10), torch.nn.Linear(10, 16)
    )
    assert fp8.quantize_modules(model) == 1  # 64 -> 10 and 10 -> 16 are not multiples of 16
    assert isinstance(model[0], fp8.Fp8Linear)
    assert isinstance(model[2], torch.nn.Linear) and isinstance(model[3], torch.nn.Linear)


def test_quantize_modules_on_a_real_model_keeps_its_vectors():
    profile = load_profile("minilm")
    model = Embedder.load(profile, device="cpu").model
    tokens = torch.tensor([[101, 2054, 2003, 1037, 4937, 1029, 102]])
    with torch.inference_mode():
        want = model(input_ids=tokens).last_hidden_state.mean(1)
        assert fp8.quantize_modules(model) >= 36  # 6 layers x (q, k, v, o, up, down)
        got = model(input_ids=tokens).last_hidden_state.mean(1)
    assert cosines(got, want).min() > 0.99


def test_packed_qwen3_forward_with_fp8_weights(tiny_qwen3_dir):
    model = load_model(tiny_qwen3_dir)
    packed = PackedQwen3(model, TORCH_OPS, max_positions=512)
    with torch.inference_mode():
        want = packed.forward(pack(SEQS, pad_id=151643))
        assert fp8.quantize_packed(packed, model) == 4 * len(model.layers)
        got = packed.forward(pack(SEQS, pad_id=151643))
        # the model's own modules are row slices of the fused FP8 weights
        attn = model.layers[0].self_attn
        assert isinstance(attn.k_proj, fp8.Fp8Linear)
        assert attn.k_proj.fp8.weight.data_ptr() > attn.q_proj.fp8.weight.data_ptr()
        x = torch.randn(2, model.config.hidden_size)
        fused = packed.layers[0].qkv(x)
        split = torch.cat([attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)], dim=-1)
        mlp = model.layers[0].mlp  # FP8 gate/up: the gate rows, then the up rows
        gate_up = packed.layers[0].gate_up(x)
        halves = torch.cat([mlp.gate_proj(x), mlp.up_proj(x)], dim=-1)
    assert torch.equal(fused, split) and torch.equal(gate_up, halves)
    # 64-wide random layers average little of the rounding away; real models: bench/gpu_fp8.py
    assert cosines(got, want).min() > 0.97
    assert not torch.equal(got, want)  # the FP8 weights are really used


def test_refused_on_cpu_with_what_to_do():
    with pytest.raises(fp8.QuantizeError, match="compute capability 8.9.*without --quantize"):
        fp8.check_fp8_device(torch.device("cpu"))
    with pytest.raises(fp8.QuantizeError, match="FP8 tensor cores"):
        Embedder.load(load_profile("minilm"), device="cpu", quantize="fp8")
    with pytest.raises(fp8.QuantizeError, match="use none or fp8"):
        Embedder.load(load_profile("minilm"), device="cpu", quantize="int4")


def test_refused_on_gpus_older_than_ada(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(fp8.QuantizeError, match="A100 on cuda:0 is 8.0"):
        fp8.check_fp8_device(torch.device("cuda", 0))


def test_float_reference_of_the_gemm_equals_dequantized_math():
    torch.manual_seed(2)
    weight = fp8.Fp8Weight.of(torch.randn(16, 32, dtype=torch.bfloat16))
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    xq, xs = fp8.quantize_rows(x)
    want = F.linear(xq.float() * xs, weight.weight.float() * weight.scale[:, None])
    assert torch.allclose(weight(x).float(), want, rtol=1e-2, atol=1e-2)


def test_serve_refuses_fp8_on_cpu_before_loading(monkeypatch):
    from click.testing import CliRunner

    from bridge.cli import main

    monkeypatch.setenv("BRIDGE_QUANTIZE", "fp8")
    result = CliRunner().invoke(
        main, ["serve", "--model", "minilm", "--device", "cpu", "--port", "0"]
    )
    assert result.exit_code != 0
    assert "FP8 tensor cores" in result.output and "without --quantize" in result.output
    result = CliRunner().invoke(main, ["serve", "--quantize", "int8", "--device", "cpu"])
    assert result.exit_code == 2 and "'none', 'fp8'" in result.output


@pytest.mark.skipif(triton is None, reason="Triton is not installed with this torch")
def test_fused_quantizing_norm_equals_the_kernels_it_fuses():
    """Residual add + RMSNorm and SiLU·mul with FP8 output (Triton, CPU interpreter) write
    exactly what the unfused kernel followed by the separate quantize kernel writes,
    scales included."""
    script = """
import torch
from bridge.model import fp8
from bridge.model.kernels import TORCH_OPS, TRITON_OPS as ops
torch.manual_seed(0)
quantize = fp8._triton_quantize_rows()
x, r, w = torch.randn(5, 96), torch.randn(5, 96), torch.rand(96) + 0.5
x[2] *= 300
x[4] = -r[4]  # a zero row: the minimum scale, zeros
total, fused = ops.add_rms_norm_fp8(x, r, w, 1e-6)
want_total, normed = ops.add_rms_norm(x, r, w, 1e-6)
q, s = quantize(normed)
assert torch.equal(total, want_total)
assert torch.equal(fused.q.float(), q.float()) and torch.equal(fused.scale, s), "add_rms_norm"
assert fused.q[4].float().eq(0).all()
# a split GEMM's float32 partials, added up while loaded: as if added up first
parts = fp8.Partials(torch.randn(3, 5, 96) * 4, torch.bfloat16)
rb = r.bfloat16()
for fn in (ops.add_rms_norm, ops.add_rms_norm_fp8):
    (t1, o1), (t2, o2) = fn(parts, rb, w, 1e-6), fn(parts.total(), rb, w, 1e-6)
    assert torch.equal(t1, t2), fn
    exact = rb.float() + parts.parts.sum(0)
    assert torch.allclose(t1.float(), exact, rtol=2**-6, atol=1e-2), fn
    if isinstance(o1, fp8.Fp8Rows):
        o1, o2 = o1.q.float(), o2.q.float()
    assert torch.equal(o1, o2), fn
# SiLU·mul with FP8 output: the SiLU·mul kernel, then the quantize kernel, in one
product = torch.randn(6, 2 * 1100, dtype=torch.float16) * 3
product[1] *= 400
product[3] = 0  # a zero row: the minimum scale, zeros
fused = ops.silu_mul_fp8(product)
q, s = quantize(ops.silu_mul(product))
assert fused.q.shape == (6, 1100) and torch.equal(fused.scale, s), "silu_mul scales"
assert torch.equal(fused.q.float(), q.float()), "silu_mul"
ref = TORCH_OPS.silu_mul_fp8(product)  # the torch ops' form: as close as the kernels are
assert torch.allclose(ref.scale, s, rtol=2**-10)
print("ok")
"""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "ok" in done.stdout, done.stdout + done.stderr


def test_linear_refuses_quantized_rows_for_a_plain_weight():
    rows = fp8.Fp8Rows(*fp8.quantize_rows(torch.randn(2, 16)))
    with pytest.raises(TypeError, match="FP8 weight"):
        fp8.linear(rows, torch.randn(8, 16))
    weight = fp8.Fp8Weight.of(torch.randn(8, 16))
    assert torch.equal(fp8.linear(rows, weight), weight(rows))


@pytest.mark.skipif(triton is None, reason="Triton is not installed with this torch")
def test_small_row_gemm_equals_the_scaled_float_product():
    """The few-rows FP8 kernel (Triton, CPU interpreter) computes the same scaled product
    as the float reference, for row counts below, at and above its 16-row tile, column
    counts that leave a partial block, channels of very different scales, and K split in
    parts (evenly or not)."""
    script = """
import torch
from bridge.model import fp8
from bridge.model.kernels import silu_mul_torch
torch.manual_seed(0)
for rows, cols, depth in [(1, 40, 512), (16, 96, 256), (33, 48, 768)]:
    w = torch.randn(cols, depth) * torch.logspace(-2, 1, cols)[:, None]
    weight = fp8.Fp8Weight.of(w.to(torch.bfloat16))
    x = torch.randn(rows, depth, dtype=torch.bfloat16)
    x[0] *= 100
    xq, xs = fp8.quantize_rows(x)
    assert fp8.small_fits(xq, weight.weight)
    got = fp8.small_gemm(xq, xs, weight).float()
    want = ((xq.float() @ weight.weight.float().t()) * xs * weight.scale).bfloat16().float()
    assert got.shape == (rows, cols)
    assert torch.allclose(got, want, rtol=2**-7, atol=1e-6 * want.abs().max()), (rows, cols)
    for split in (2, 3):  # K in parts, the partials added by a second kernel
        parts = fp8.small_gemm(xq, xs, weight, split=split).float()
        assert torch.allclose(parts, want, rtol=2**-7, atol=1e-6 * want.abs().max()), split
    # 16-bit rows as they are (no quantize step): against the widened weights (float16
    # here: the interpreter multiplies bfloat16 tiles wrongly, the GPU does not)
    x16 = x.half()
    weight.out_dtype = torch.float16
    wide = ((x16.float() @ weight.weight.float().t()) * weight.scale).half().float()
    for split in (1, 3):
        got = fp8.small_gemm(x16, None, weight, split=split).float()
        assert torch.allclose(got, wide, rtol=2**-9, atol=1e-5 * wide.abs().max()), split
    # partials kept for the consumer (K of one block: nothing to split, a tensor)
    kept = fp8.small_gemm(x16, None, weight, split=3, keep_parts=True)
    if depth > fp8.SMALL_BLOCK_K:
        assert isinstance(kept, fp8.Partials) and kept.shape == (rows, cols)
        kept = kept.total()
    assert torch.equal(kept, fp8.small_gemm(x16, None, weight, split=3))
    # a gate/up weight: silu(gate) * up in the epilogue, rounded as the two kernels round
    gate_up = fp8.Fp8Weight.of(torch.randn(2 * cols, depth).half())
    for rows_in, scale in ((xq, xs), (x16, None)):
        product = fp8.small_gemm(rows_in, scale, gate_up, split=1)
        want = silu_mul_torch(product).float()
        got = fp8.small_gemm(rows_in, scale, gate_up, paired=True).float()
        assert got.shape == (rows, cols)
        assert torch.allclose(got, want, rtol=2**-9, atol=1e-5 * want.abs().max()), rows
assert fp8.split_for(16, 2560, 4096, 132) == 4  # 80 column blocks: too few for 132 SMs
assert fp8.split_for(16, 6144, 2560, 132) == 1  # 192 blocks: enough
assert fp8.split_for(64, 2560, 4096, 132) == 1  # many rows: the partials cost more
assert fp8.split_for(1, 2560, 256, 132) == 1  # one K block: nothing to split
assert not fp8.small_fits(torch.zeros(fp8.SMALL_ROWS + 1, 256), torch.zeros(8, 256))
assert not fp8.small_fits(torch.zeros(4, 200), torch.zeros(8, 200))
print("ok")
"""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "ok" in done.stdout, done.stdout + done.stderr
