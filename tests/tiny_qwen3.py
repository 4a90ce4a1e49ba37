"""A tiny Qwen3 embedding model built at test time: random weights, word-level tokenizer.

Same architecture family, same special end token (151643, also the pad id) as
Qwen3-Embedding, small enough for CPU tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

END_ID = 151643
VOCAB_SIZE = 151669

WORDS = (
    "Instruct Query Given a web search query retrieve relevant passages that answer the "
    "find code for legal documents about cats dogs fish birds rain sun snow wind how to "
    "cook pasta bake bread train model vector search engine index shard node cluster "
    "what is why does when where who which of in on at by with from and or not is are "
    "was be this it an as embedding bridge hybrid semantic keyword ranking fusion quick "
    "brown fox jumps over lazy dog hello world lorem ipsum dolor sit amet"
).split()


def build_tokenizer(append_end: bool = True) -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0}
    for word in WORDS + [":", ".", ",", "?", "!"]:
        vocab.setdefault(word, len(vocab))
    vocab["<|endoftext|>"] = END_ID
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if append_end:
        tok.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", END_ID)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        model_max_length=512,
    )


def build_tiny_qwen3(
    path: Path, append_end: bool = True, seed: int = 0, hidden_size: int = 64
) -> Path:
    """Write a tiny random Qwen3 model and tokenizer to ``path``.

    ``hidden_size`` sets the embedding width (2560 gives Qwen3-Embedding-4B's vectors);
    wide models are stored in bfloat16 to keep the file small.
    """
    config = Qwen3Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        pad_token_id=END_ID,
        eos_token_id=END_ID,
    )
    model = Qwen3Model(config)
    # Explicit, seeded weights: the result must not depend on library init state.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.2, generator=generator)
            else:
                param.fill_(1.0)
    path.mkdir(parents=True, exist_ok=True)
    if hidden_size > 64:
        model = model.to(torch.bfloat16)
    model.save_pretrained(path)
    build_tokenizer(append_end).save_pretrained(path)
    return path
