"""The gate/up GEMM with SiLU·mul in its epilogue (bridge/model/gate_up.py), in Triton's CPU
interpreter, against the GEMM followed by ``kernels.silu_mul_torch``. Its speed against
cuBLAS + the SiLU·mul kernel is measured by bench/gpu_gate_up.py.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from bridge.model import gate_up, launch
from bridge.model.fp8 import SMALL_ROWS, Fp8Rows, Fp8Weight
from bridge.model.packed import PackedQwen3

KERNEL_CHECK = """
import torch
from bridge.model import gate_up
from bridge.model.kernels import silu_mul_torch
torch.manual_seed(0)
# float16: the interpreter rounds bfloat16 wrongly (the GPU does not)
for rows, hidden, inter, tiles in [
    (70, 64, 48, dict(block_m=32, block_n=32, block_k=32, programs=3)),  # partial tiles
    (33, 32, 40, dict(block_m=16, block_n=16, block_k=16, programs=2)),  # a partial pair tile
    (64, 48, 32, dict(block_m=32, block_n=16, block_k=16)),  # programs: one per SM
    (16, 32, 16, dict(block_m=16, block_n=16, block_k=32, programs=1 << 30)),  # a tile each
]:
    x = torch.randn(rows, hidden, dtype=torch.float16)
    w = (torch.randn(2 * inter, hidden) / hidden**0.5).half()  # (gate, up) row pairs
    w[:, 0] *= 50  # channels of very different sizes
    assert gate_up.supported(x, w)
    got = gate_up.gate_up_silu(x, w, group_m=2, warps=4, stages=2, **tiles)
    want = silu_mul_torch((x.float() @ w.float().t()).half(), pairs=True)
    assert got.shape == (rows, inter) and got.dtype == torch.float16
    # rounded where the two kernels round: equal but for exp's last bit here and there
    assert torch.allclose(got.float(), want.float(), rtol=2**-10,
                          atol=1e-5 * want.abs().max().item()), (rows, hidden, inter)
    assert got.eq(want).float().mean() > 0.98, (rows, hidden, inter)
# the SiLU·mul kernel (fewer rows) in both layouts: pairs and gate-then-up (FP8's)
from bridge.model.kernels import silu_mul_triton
product = torch.randn(7, 2 * 1100, dtype=torch.float16)
for pairs in (True, False):
    got = silu_mul_triton(product, pairs=pairs)
    want = silu_mul_torch(product, pairs=pairs)
    assert got.shape == (7, 1100)
    assert torch.allclose(got.float(), want.float(), rtol=2**-10, atol=1e-5), pairs
assert not torch.equal(silu_mul_torch(product, pairs=True), silu_mul_torch(product))
print("ok")
"""


@pytest.mark.skipif(gate_up.triton is None, reason="Triton is not installed with this torch")
def test_kernel_equals_the_gemm_then_silu_mul():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", KERNEL_CHECK], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stdout + done.stderr


def test_only_shapes_and_devices_the_kernel_takes(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, w = torch.zeros(4, 16, dtype=torch.bfloat16), torch.zeros(16, 16, dtype=torch.bfloat16)
    assert not gate_up.supported(x, w)  # CPU tensors outside the interpreter
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert gate_up.supported(x, w) == (gate_up.triton is not None)
    assert not gate_up.supported(x.float(), w.float())  # 32-bit
    assert not gate_up.supported(x, w.half())  # mixed dtypes
    assert not gate_up.supported(x, torch.zeros(7, 16, dtype=torch.bfloat16))  # odd rows
    assert not gate_up.supported(x.t(), w)  # not contiguous
    assert not gate_up.supported(x, torch.zeros(12, 16, dtype=torch.bfloat16))  # 12-byte out rows
    shifted = torch.zeros(65, dtype=torch.bfloat16)[1:].view(4, 16)
    assert not gate_up.supported(shifted, w)  # a start off 16 bytes
    short = torch.zeros(8, 12, dtype=torch.bfloat16)
    assert not gate_up.supported(torch.zeros(4, 12, dtype=torch.bfloat16), short)  # 24-byte rows


def test_a_gpu_without_the_shared_memory_for_its_tiles_keeps_the_unfused_pair(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(launch, "hopper", lambda device: True)
    x, w = torch.zeros(4, 16, dtype=torch.bfloat16), torch.zeros(16, 16, dtype=torch.bfloat16)
    for rows in (gate_up.MIN_ROWS, gate_up.DEEP_BELOW_ROWS):  # both pipeline depths
        need = gate_up.shared_bytes(gate_up.stages_for(rows), 2)
        assert 99 * 1024 < need <= 227 * 1024  # more than sm_120 has, within an H100's
    monkeypatch.setattr(launch, "shared_memory", lambda device: 227 * 1024)  # an H100
    assert gate_up.supported(x, w) == (gate_up.triton is not None)
    monkeypatch.setattr(launch, "shared_memory", lambda device: 99 * 1024)  # sm_120
    assert not gate_up.supported(x, w)


def test_the_packed_forward_fuses_only_many_rows_with_fused_steps(monkeypatch):
    from bridge.model.kernels import TORCH_OPS

    monkeypatch.setattr(gate_up, "supported", lambda x, w: True)
    monkeypatch.setattr(gate_up, "gate_up_silu", lambda x, w: "fused")
    w, down = torch.randn(8, 4), torch.randn(4, 4)
    many, few = torch.randn(gate_up.MIN_ROWS, 4), torch.randn(gate_up.MIN_ROWS - 1, 4)
    fusing = SimpleNamespace(ops=dataclasses.replace(TORCH_OPS, in_gemms=True))
    plain = SimpleNamespace(ops=TORCH_OPS)
    assert PackedQwen3._activation(fusing, many, w, down) == "fused"
    unfused = PackedQwen3._activation(fusing, few, w, down)
    torch.testing.assert_close(unfused, TORCH_OPS.silu_mul(few @ w.T, pairs=True))
    assert PackedQwen3._activation(plain, many, w, down).shape == (gate_up.MIN_ROWS, 4)
    # FP8 weights never reach it, also where their own fused path declines; past the rows
    # of the few-row kernel, SiLU·mul quantizes its output for the FP8 down GEMM
    fp8_weight, fp8_down = Fp8Weight.of(torch.randn(8, 16)), Fp8Weight.of(torch.randn(16, 4))
    monkeypatch.setattr(Fp8Weight, "silu_mul", lambda self, x: None)
    monkeypatch.setattr("bridge.model.packed.linear", lambda x, weight: torch.ones(x.shape[0], 8))
    act = PackedQwen3._activation(fusing, many, fp8_weight, fp8_down)
    want = TORCH_OPS.silu_mul_fp8(torch.ones(gate_up.MIN_ROWS, 8))
    assert isinstance(act, Fp8Rows) and torch.equal(act.q.float(), want.q.float())
    few_rows = PackedQwen3._activation(fusing, many[:SMALL_ROWS], fp8_weight, fp8_down)
    torch.testing.assert_close(few_rows, TORCH_OPS.silu_mul(torch.ones(SMALL_ROWS, 8)))
