"""The preparer's own batch encoder gives exactly the tokenizer's ids."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from bridge.model.inputs import InputPreparer
from bridge.model.profile import load_profile

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
