"""The options of the embedding service and their defaults: the one place they are written.

No torch import, so the CLI can read these defaults without loading a model stack.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

DEFAULT_MODEL = "Qwen/Qwen3-Embedding-4B"
DEFAULT_MAX_INPUT_TOKENS = 8192
# Token budget of one batch by device: small on CPU (cache-bound), large on a GPU.
GPU_BATCH_TOKENS = 32768
CPU_BATCH_TOKENS = 1024


@dataclass(frozen=True)
class ServiceOptions:
    """How ``bridge serve`` (or an in-process ``EmbeddingService``) loads and runs a model."""

    model: str = DEFAULT_MODEL  # hub id, local directory, or the alias 'minilm'
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    cuda_graphs: bool = True  # replay captured graphs for small batches on CUDA
    fused_kernels: bool = True  # Triton kernels in Qwen3's padding-free forward on CUDA
    quantize: str = "none"  # "fp8": FP8 linear layers (GPUs of compute capability 8.9+)
    max_batch_tokens: int | None = None  # None: GPU_BATCH_TOKENS on CUDA, CPU_BATCH_TOKENS on CPU
    max_input_tokens: int | None = None  # None: DEFAULT_MAX_INPUT_TOKENS, capped at the model's
    max_queue_tokens: int | None = None  # None: queue_seconds of work at the measured rate
    queue_seconds: float = 30.0  # default queue bound, in seconds of work
    allow_truncation: bool = False
    # Token-id input: refused unless asked, since some clients (LangChain's
    # OpenAIEmbeddings by default) send another tokenizer's ids: wrong vectors, no error.
    allow_token_ids: bool = False
    tokenizer_threads: int = max(1, min(8, (os.cpu_count() or 2) // 2))
    revision: str | None = None


def default_of(cls: type, name: str) -> Any:
    """The default of dataclass field ``name`` (the CLI shows and uses exactly this)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    raise KeyError(f"{cls.__name__} has no field {name!r} with a default")
