"""The fused kernels touch nothing off CUDA (their numerics are checked on a GPU by
bench/gpu_kernels.py and bench/gpu.py's cosines)."""

from __future__ import annotations

import torch

from bridge.model.kernels import fuse_qwen3
from bridge.model.profile import load_profile

from conftest import make_service


def test_cpu_model_is_left_alone(tiny_qwen3_dir):
    service = make_service(tiny_qwen3_dir)
    before = service.embed_sync(["cats and dogs"]).vectors
    assert fuse_qwen3(service.embedder.model) == 0
    assert hasattr(service.embedder.model.layers[0].mlp, "gate_proj")
    assert torch.equal(
        torch.from_numpy(before), torch.from_numpy(service.embed_sync(["cats and dogs"]).vectors)
    )
    assert load_profile(str(tiny_qwen3_dir)).kind == "qwen3"
