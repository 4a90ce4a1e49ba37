"""Tokenization: the preparer's own batch encoder gives exactly the tokenizer's ids, and a
request tokenized in parts on several threads gives the same result."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from transformers import AutoTokenizer

from bridge.model.families import load_profile
from bridge.model.inputs import InputError, InputPreparer

from conftest import make_service

TEXTS = [
    "cats and dogs",
    "Ünïcödé — ✓ text, with punctuation!? and   spaces",
    "how to cook pasta " * 40,
    "x",
]


@pytest.mark.parametrize("which", ["tiny_qwen3_dir", "tiny_qwen3_no_end_dir", "minilm"])
def test_backend_encoder_equals_the_tokenizer(which, request):
    model = "minilm" if which == "minilm" else str(request.getfixturevalue(which))
    profile = load_profile(model)
    tokenizer = AutoTokenizer.from_pretrained(profile.path)
    preparer = InputPreparer(profile, tokenizer, max_input_tokens=10_000)
    assert preparer._encode_batch is not None  # the fast path is the one under test
    want = tokenizer(TEXTS, add_special_tokens=True, truncation=False)["input_ids"]
    assert preparer._encode(TEXTS) == want
    # truncation settings of the shared tokenizer do not leak into ours
    tokenizer(TEXTS, truncation=True, max_length=4)
    assert preparer._encode(TEXTS) == want


def test_long_requests_are_tokenized_in_parts_with_the_same_result(tiny_qwen3_dir):
    service = make_service(tiny_qwen3_dir, tokenizer_threads=4)
    try:
        texts = [("cats and dogs " * 50) + str(i) for i in range(6)]  # ~4,200 characters
        split = asyncio.run(service.embed(texts))
        whole = service.embed_sync(texts)
        assert np.allclose(split.vectors, whole.vectors, atol=1e-6)
        assert split.prompt_tokens == whole.prompt_tokens
        texts[5] = "   "
        with pytest.raises(InputError, match=r"input\[5\] is an empty string"):
            asyncio.run(service.embed(texts))
    finally:
        service.close()
