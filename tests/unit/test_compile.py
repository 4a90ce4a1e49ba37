"""--compile (torch.compile) gives the same vectors as the eager model."""

from __future__ import annotations

import numpy as np

from conftest import make_service

TEXTS = ["cats", "the quick brown fox jumps over the lazy dog", "rain and snow and wind"]


def test_compiled_equals_eager(tiny_qwen3_dir):
    eager = make_service(tiny_qwen3_dir)
    compiled = make_service(tiny_qwen3_dir, compile=True)
    try:
        compiled.warm_up()
        assert compiled.ready
        for texts in (TEXTS, TEXTS[:1], TEXTS[1:]):
            a = eager.embed_sync(texts, dimensions=48).vectors
            b = compiled.embed_sync(texts, dimensions=48).vectors
            assert ((a * b).sum(1) >= 0.9999).all()
            np.testing.assert_allclose(a, b, atol=2e-3)
    finally:
        eager.close()
        compiled.close()
