"""Packed attention (bridge/model/attention.py): the per-sequence reference against the
softmax written out, and our Triton kernel (Triton's CPU interpreter)
against the reference: grouped heads, empty slots, strided views, both forms the packed
forward uses. Its speed against flash attention is measured by bench/gpu_attention.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from bridge.model import attention, kernels, launch


def written_out(q, k, v, causal: bool) -> torch.Tensor:
    """One sequence: softmax(q kᵀ / √d) v per head, causal aligned to the end of k."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5
    if causal:
        seen = torch.arange(k.shape[0])[None, :] <= torch.arange(q.shape[0])[:, None] + (
            k.shape[0] - q.shape[0]
        )
        scores = scores.masked_fill(~seen, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


def packed(lengths: list[int], heads: int, kv_heads: int, dim: int, dtype=torch.float32):
    """q, k, v as views of one (tokens, q + k + v) tensor, and the sequences' bounds."""
    torch.manual_seed(sum(lengths) + heads)
    tokens = sum(lengths)
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * dim, dtype=dtype)
    q = qkv[:, : heads * dim].view(tokens, heads, dim)
    k = qkv[:, heads * dim : (heads + kv_heads) * dim].view(tokens, kv_heads, dim)
    v = qkv[:, (heads + kv_heads) * dim :].view(tokens, kv_heads, dim)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return q, k, v, cu


def test_reference_is_the_softmax_per_sequence():
    lengths = [5, 0, 9, 1]
    q, k, v, cu = packed(lengths, heads=6, kv_heads=2, dim=8)
    got = attention.attention_reference(q, k, v, cu, cu, 9, 9, True)
    for s in range(len(lengths)):
        a, b = int(cu[s]), int(cu[s + 1])
        if a < b:
            torch.testing.assert_close(got[a:b], written_out(q[a:b], k[a:b], v[a:b], True))


def test_one_query_per_sequence_sees_all_its_keys():
    """The last layer's form: each sequence's pooled (last) query over its whole text."""
    lengths = [5, 9, 1]
    q, k, v, cu = packed(lengths, heads=6, kv_heads=2, dim=8)
    full = attention.attention_reference(q, k, v, cu, cu, 9, 9, True)
    last = (cu[1:] - 1).long()
    cu_q = torch.arange(len(lengths) + 1, dtype=torch.int32)
    one = attention.attention_reference(q[last], k, v, cu_q, cu, 1, 9, False)
    torch.testing.assert_close(one, full[last])


def test_causal_shorter_queries_align_to_the_end_of_the_keys():
    q, k, v, cu = packed([7], heads=2, kv_heads=1, dim=4)
    cu_q = torch.tensor([0, 3], dtype=torch.int32)
    got = attention.attention_reference(q[4:], k, v, cu_q, cu, 3, 7, True)
    full = attention.attention_reference(q, k, v, cu, cu, 7, 7, True)
    torch.testing.assert_close(got, full[4:])


@pytest.mark.skipif(attention.triton is None, reason="Triton is not installed with this torch")
def test_triton_kernel_is_chosen_up_to_its_longest_keys_only(monkeypatch):
    used = []
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # CPU tensors: only in the interpreter
    monkeypatch.setattr(kernels, "attention_triton", lambda *a: used.append("triton"))
    monkeypatch.setattr(kernels, "attention_any", lambda *a: used.append(a[0]))
    q, k, v, cu = packed([4], heads=4, kv_heads=2, dim=32, dtype=torch.bfloat16)
    kernels.attention_fused(q, k, v, cu, cu, 4, attention.TRITON_MAX_KEYS, True)
    kernels.attention_fused(q, k, v, cu, cu, 4, attention.TRITON_MAX_KEYS + 1, True)
    q3 = torch.zeros(4, 4, 24, dtype=torch.bfloat16)  # head size not a power of two
    kernels.attention_fused(q3, q3[:, :2], q3[:, :2], cu, cu, 4, 4, True)
    assert used[0] == "triton" and used[1] is q and used[2] is q3
    monkeypatch.delenv("TRITON_INTERPRET")
    kernels.attention_fused(q, k, v, cu, cu, 4, 4, True)  # CPU, no interpreter
    assert used[-1] is q
    # raw queries (a QueryRope) are normed and rotated first where the kernel is not used
    monkeypatch.setattr(kernels, "norm_rope_triton", kernels.norm_rope_torch)  # no GPU here
    table = torch.randn(8, 32, dtype=torch.bfloat16)
    rope = attention.QueryRope(torch.rand(32, dtype=torch.bfloat16) + 0.5, 1e-6, table,
                               table.flip(0), torch.arange(4))  # fmt: skip
    kernels.attention_fused(q, k, v, cu, cu, 4, 4, True, rope)
    want = kernels.norm_rope_torch(q, (rope.weight,) * 2, 4, 1e-6, table, table.flip(0),
                                   torch.arange(4))  # fmt: skip
    torch.testing.assert_close(used[-1], want)


@pytest.mark.skipif(attention.triton is None, reason="Triton is not installed with this torch")
def test_long_sequences_take_the_split_step_and_larger_tiles():
    short, mid = attention._tiles(256, 256, 4, True), attention._tiles(512, 512, 4, True)
    long, pooled = attention._tiles(2048, 2048, 4, True), attention._tiles(1, 2048, 4, True)
    assert not short["split"] and mid["split"] and long["split"] and not pooled["split"]
    assert mid["block"] == short["block"] == 16 and long["block"] * 4 == 128
    assert long["block_n"] == 64 and long["warps"] == 8
    # a batch's one text of 1,200 tokens among short ones: enough programs for the SMs
    assert attention._tiles(1200, 1200, 4, True) == mid
    # a GPU without the shared memory for them (sm_120: 99 KiB) keeps the smaller tiles
    narrow = attention._tiles(2048, 2048, 4, False)
    assert narrow == mid


@pytest.mark.skipif(attention.triton is None, reason="Triton is not installed with this torch")
def test_larger_tiles_only_on_hopper_with_the_shared_memory_for_them(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q = torch.zeros(4, 8, 128, dtype=torch.bfloat16)  # Qwen3's head size
    monkeypatch.setattr(launch, "hopper", lambda device: True)
    monkeypatch.setattr(launch, "shared_memory", lambda device: 227 * 1024)  # an H100
    assert attention._wide_tiles_fit(q)
    assert not attention._wide_tiles_fit(torch.zeros(4, 8, 256, dtype=torch.float16))
    monkeypatch.setattr(launch, "shared_memory", lambda device: 99 * 1024)  # sm_120
    assert not attention._wide_tiles_fit(q)
    monkeypatch.setattr(launch, "shared_memory", lambda device: 227 * 1024)
    monkeypatch.setattr(launch, "hopper", lambda device: False)  # Ampere: not measured
    assert not attention._wide_tiles_fit(q)


KERNEL_CHECK = """
import torch
from test_attention import packed
from bridge.model import attention
cases = [
    # lengths, heads, kv heads, head size
    ([16] + [0] * 5, 8, 2, 32),          # one short query, a bucket's empty slots
    ([7, 2, 70, 0, 130], 8, 2, 32),      # more than one block of keys, an empty one
    ([130, 1, 5, 33], 10, 2, 32),        # 5 heads a group: not a power of two
    ([3, 64, 65], 4, 4, 32),             # no grouping
]
worst = 0.0
for lengths, heads, kv_heads, dim in cases:
    q, k, v, cu = packed(lengths, heads, kv_heads, dim, torch.bfloat16)
    longest = max(lengths)
    want = attention.attention_reference(q.float(), k.float(), v.float(), cu, cu, longest,
                                         longest, True)
    got = attention.attention_triton(q, k, v, cu, cu, longest, longest, True)
    assert got.dtype == torch.bfloat16 and got.shape == q.shape
    worst = max(worst, (got.float() - want).abs().max().item())
    # blocks a whole tile sees through the unmasked step (bench/gpu_attention.py's "whole")
    split = attention.launch_triton(q, k, v, cu, cu, longest, True, block=4, block_n=16,
                                    split=True)
    worst = max(worst, (split.float() - want).abs().max().item())
    # the tiles long sequences get (LONG_QUERIES), here over short ones
    long_q = attention.LONG_QUERIES
    tiles = attention._tiles(long_q, long_q, heads // kv_heads, wide=True)
    long = attention.launch_triton(q, k, v, cu, cu, longest, True, **tiles)
    worst = max(worst, (long.float() - want).abs().max().item())
    # the last layer's form: one query per sequence (also the empty ones) over its keys
    last = (cu[1:] - 1).clamp(min=0).long()
    cu_q = torch.arange(len(lengths) + 1, dtype=torch.int32)
    one = attention.attention_triton(q[last].contiguous(), k, v, cu_q, cu, 1, longest, False)
    for s, n in enumerate(lengths):
        if n:
            worst = max(worst, (one[s].float() - want[last[s]]).abs().max().item())
        else:
            assert one[s].eq(0).all(), "a slot without keys gets zeros"
    split = attention.launch_triton(q[last].contiguous(), k, v, cu_q, cu, 1, False, block=4,
                                    block_n=16, split=True)
    assert torch.equal(split, one) or (split.float() - one.float()).abs().max() < 0.03
# raw queries normed and rotated by the kernel as it loads them (QueryRope), in both forms
from bridge.model.kernels import norm_rope_torch
rope_worst = 0.0
for lengths, heads, kv_heads, dim in cases:
    q, k, v, cu = packed(lengths, heads, kv_heads, dim, torch.bfloat16)
    q = q * 3  # RMSNorm has work to do
    longest = max(lengths)
    angles = torch.arange(200)[:, None] * torch.rand(dim)[None, :]
    cos, sin = angles.cos().bfloat16(), angles.sin().bfloat16()
    positions = torch.cat([torch.arange(n) for n in lengths])
    weight = (torch.rand(dim) + 0.5).bfloat16()
    scale = v.float().abs().max()  # outputs are averages of v: at most this large
    rope = attention.QueryRope(weight, 1e-6, cos, sin, positions)
    roped = norm_rope_torch(q, (weight, weight), heads, 1e-6, cos, sin, positions)
    want = attention.attention_triton(roped, k, v, cu, cu, longest, longest, True)
    got = attention.attention_triton(q, k, v, cu, cu, longest, longest, True, rope)
    rope_worst = max(rope_worst, ((got.float() - want.float()).abs() / scale).max().item())
    last = (cu[1:] - 1).clamp(min=0).long()
    cu_q = torch.arange(len(lengths) + 1, dtype=torch.int32)
    rope = attention.QueryRope(weight, 1e-6, cos, sin, positions, last)
    want = attention.attention_triton(roped[last].contiguous(), k, v, cu_q, cu, 1, longest, False)
    got = attention.attention_triton(q[last].contiguous(), k, v, cu_q, cu, 1, longest, False,
                                     rope)
    rope_worst = max(rope_worst, ((got.float() - want.float()).abs() / scale).max().item())
print("worst", worst, "rope", rope_worst)
assert worst < 0.03, worst  # bf16 inputs and output: a few units in the last place
assert rope_worst <= 2**-6, rope_worst  # q a unit in the last place apart here and there
"""


@pytest.mark.skipif(attention.triton is None, reason="Triton is not installed with this torch")
def test_triton_kernel_matches_the_reference():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", KERNEL_CHECK], env=env, capture_output=True, text=True,
        cwd=os.path.dirname(__file__),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
