"""Model resolution, devices, and dimension rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridge.model.embedder import DeviceError, pick_device, pick_dtype
from bridge.model.errors import ModelSpecError
from bridge.model.families import load_profile
from bridge.model.inputs import InputError

from conftest import make_service


def test_hub_id_without_network_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelSpecError, match="could not fetch 'Qwen/Qwen3-Embedding-4B'"):
        load_profile("Qwen/Qwen3-Embedding-4B")


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelSpecError, match="not a directory"):
        load_profile(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSpecError, match="no config.json"):
        load_profile(str(tmp_path / "empty"))


def test_devices():
    assert pick_device("cpu").type == "cpu"
    assert pick_dtype(torch.device("cpu"), "auto") == torch.float32
    assert pick_dtype(torch.device("cuda", 0), "auto") == torch.bfloat16
    with pytest.raises(DeviceError, match="use auto, cpu, cuda or cuda:N"):
        pick_device("tpu:0")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            pick_device("cuda:0")
        assert pick_device("auto").type == "cpu"


def test_truncation_needs_the_flag_for_models_not_trained_for_it():
    plain = make_service("minilm")
    allowed = make_service("minilm", allow_truncation=True)
    try:
        assert plain.dim_range == (384, 384)
        with pytest.raises(InputError, match="--allow-truncation"):
            plain.check_dimensions(128)
        assert allowed.dim_range == (32, 384)
        full = allowed.embed_sync(["a sentence to embed"]).vectors[0]
        cut = allowed.embed_sync(["a sentence to embed"], dimensions=128).vectors[0]
        expected = full[:128] / np.linalg.norm(full[:128])
        np.testing.assert_allclose(cut, expected, atol=1e-5)
    finally:
        plain.close()
        allowed.close()
