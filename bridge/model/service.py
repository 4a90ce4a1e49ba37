"""The embedding service: a loaded model, its input rules and its batcher, behind one call.

Knows nothing of HTTP; the server (and in-process users) call ``EmbeddingService.embed``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from bridge.model.batcher import Batcher, BatchObserver
from bridge.model.embedder import Embedder, finish_vectors, pick_devices
from bridge.model.inputs import InputError, InputPreparer, InputType
from bridge.model.memory import release_free_memory
from bridge.model.profile import ModelProfile, load_profile

log = logging.getLogger(__name__)


DEFAULT_MAX_INPUT_TOKENS = 8192
SPLIT_CHARS = 1024  # a request is tokenized in parts of at least this many characters


def default_batch_tokens(device: torch.device) -> int:
    """Padded tokens per batch: small on CPU (cache-bound), large on a GPU."""
    return 32768 if device.type == "cuda" else 1024


@dataclass(frozen=True)
class ServiceOptions:
    model: str = "minilm"
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    cuda_graphs: bool = True  # replay captured graphs for small batches on CUDA
    fused_kernels: bool = True  # Triton kernels in Qwen3's padding-free forward on CUDA
    quantize: str = "none"  # "fp8": FP8 linear layers (GPUs of compute capability 8.9+)
    max_batch_tokens: int | None = None  # None: chosen by device (default_batch_tokens)
    max_input_tokens: int | None = None  # None: 8192, capped at the model's limit
    max_queue_tokens: int | None = None
    allow_truncation: bool = False
    tokenizer_threads: int = max(1, min(8, (os.cpu_count() or 2) // 2))
    revision: str | None = None


@dataclass
class EmbedResult:
    vectors: np.ndarray  # (n, dim) float32
    prompt_tokens: int


class EmbeddingService:
    """Embeds texts or token-id lists with the batcher; safe to share across requests."""

    def __init__(
        self,
        embedders: Embedder | Sequence[Embedder],
        options: ServiceOptions,
        observer: BatchObserver | None = None,
    ) -> None:
        self.embedders = [embedders] if isinstance(embedders, Embedder) else list(embedders)
        embedder = self.embedder = self.embedders[0]
        self.options = options
        self.profile: ModelProfile = embedder.profile
        wanted = options.max_input_tokens or DEFAULT_MAX_INPUT_TOKENS
        self.max_input_tokens = min(wanted, self.profile.model_max_tokens)
        if options.max_input_tokens and options.max_input_tokens > self.profile.model_max_tokens:
            log.warning(
                "--max-input-tokens %d is above the model's limit; using %d",
                options.max_input_tokens,
                self.profile.model_max_tokens,
            )
        self.preparer = InputPreparer(
            self.profile, embedder.tokenizer, self.max_input_tokens, embedder.vocab_size
        )
        on_cpu = embedder.device.type == "cpu"
        self.batcher = Batcher(
            [e.forward for e in self.embedders],  # one worker per replica (GPU)
            max_batch_tokens=options.max_batch_tokens or default_batch_tokens(embedder.device),
            max_queue_tokens=options.max_queue_tokens,
            observer=observer,
            on_idle=release_free_memory if on_cpu else None,
            packed=embedder.packed is not None,
        )
        self._tokenizer_pool = ThreadPoolExecutor(
            max_workers=options.tokenizer_threads, thread_name_prefix="bridge-tokenize"
        )
        self.ready = False

    @classmethod
    def from_options(
        cls, options: ServiceOptions, observer: BatchObserver | None = None
    ) -> EmbeddingService:
        profile = load_profile(options.model, options.revision)
        embedders = [
            Embedder.load(
                profile,
                device,
                options.dtype,
                options.compile,
                options.fused_kernels,
                options.quantize,
            )
            for device in pick_devices(options.device)
        ]
        return cls(embedders, options, observer)

    @property
    def dim_range(self) -> tuple[int, int]:
        return self.profile.allowed_dims(self.options.allow_truncation)

    def check_dimensions(self, dimensions: int | None) -> int:
        """The output dimension for a request; raises ``InputError`` when out of range."""
        low, high = self.dim_range
        if dimensions is None:
            return high
        if not low <= dimensions <= high:
            hint = ""
            if low == high and not self.profile.trained_for_truncation:
                hint = (
                    " (this model is not trained for truncation; start the server with "
                    "--allow-truncation to permit smaller dimensions)"
                )
            raise InputError(
                f"dimensions must be between {low} and {high} for {self.profile.name}, "
                f"got {dimensions}{hint}",
                param="dimensions",
                code="invalid_dimensions",
            )
        return dimensions

    def prepare(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        input_type: InputType = "document",
        instruction: str | None = None,
        truncate: bool = True,
    ) -> list[list[int]]:
        """Tokenize (text) or validate (token ids) one request's inputs."""
        if inputs and not isinstance(inputs[0], str):
            return self.preparer.token_ids(inputs, truncate)  # type: ignore[arg-type]
        return self.preparer.texts(inputs, input_type, instruction, truncate)  # type: ignore[arg-type]

    async def _prepare_in_pool(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        input_type: InputType,
        instruction: str | None,
        truncate: bool,
    ) -> list[list[int]]:
        """Tokenize on the tokenizer threads; a request with several long texts is split
        over them (the tokenizer releases the GIL), so it waits less before its batch."""
        loop = asyncio.get_running_loop()
        pool = self._tokenizer_pool
        chars = sum(len(x) for x in inputs) if inputs and isinstance(inputs[0], str) else 0
        parts = min(len(inputs), self.options.tokenizer_threads, chars // SPLIT_CHARS)
        if parts < 2:
            return await loop.run_in_executor(
                pool, self.prepare, inputs, input_type, instruction, truncate
            )
        size = -(-len(inputs) // parts)
        done = await asyncio.gather(
            *(
                loop.run_in_executor(
                    pool,
                    self.preparer.texts,
                    inputs[i : i + size],
                    input_type,
                    instruction,
                    truncate,
                    i,
                )
                for i in range(0, len(inputs), size)
            )
        )
        return [seq for part in done for seq in part]

    async def embed(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        dimensions: int | None = None,
        input_type: InputType = "document",
        instruction: str | None = None,
        truncate: bool = True,
        normalize: bool = True,
    ) -> EmbedResult:
        """Embed one request's inputs; ``normalize=False`` skips the model's L2 norm."""
        dim = self.check_dimensions(dimensions)
        seqs = await self._prepare_in_pool(inputs, input_type, instruction, truncate)
        pooled = await asyncio.wrap_future(self.batcher.submit(seqs))
        vectors = finish_vectors(pooled, dim, self.profile.normalize and normalize)
        return EmbedResult(vectors, sum(len(s) for s in seqs))

    def embed_sync(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        dimensions: int | None = None,
        input_type: InputType = "document",
        instruction: str | None = None,
        truncate: bool = True,
    ) -> EmbedResult:
        """Blocking variant for scripts and benchmarks (not for use inside an event loop)."""
        dim = self.check_dimensions(dimensions)
        seqs = self.prepare(inputs, input_type, instruction, truncate)
        pooled = self.batcher.submit(seqs).result()
        return EmbedResult(finish_vectors(pooled, dim, self.profile.normalize), sum(map(len, seqs)))

    def warm_up(self) -> None:
        """Real forward passes (every compiled shape class); sets ``ready`` when they succeed.
        Runs once: a second call (another app over the same service) returns at once."""
        if self.ready:
            return
        seqs = self.prepare(["warm-up"])
        # Every replica, not just the one the queue picks; graphs are captured before any
        # other replica's work is in flight.
        if self.options.compile:
            for embedder in self.embedders:
                embedder.warm_up_shapes()
        if self.options.cuda_graphs and self.options.compile:
            # Measured on an H200: capturing every bucket through the compiled model had
            # not finished after 9 minutes of warm-up. Compiled kernels run without them.
            log.info("--compile: CUDA graphs are not captured")
        elif self.options.cuda_graphs:
            for embedder in self.embedders:
                embedder.capture_graphs()
        for embedder in self.embedders:
            embedder.forward(seqs)
        self.embed_sync(["warm-up"])
        self.ready = True

    def close(self) -> None:
        self.batcher.close()
        self._tokenizer_pool.shutdown(wait=False, cancel_futures=True)
