"""The embedding service: a loaded model, its input rules and its batcher, behind one call.

Knows nothing of HTTP; the server (and in-process users) call ``EmbeddingService.embed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from bridge.model.batcher import Batcher, BatchObserver
from bridge.model.embedder import Embedder, finish_vectors, pick_devices
from bridge.model.errors import TooLarge
from bridge.model.families import load_profile
from bridge.model.inputs import InputError, InputPreparer, InputType
from bridge.model.memory import release_free_memory
from bridge.model.options import (
    CPU_BATCH_TOKENS,
    DEFAULT_MAX_INPUT_TOKENS,
    GPU_BATCH_TOKENS,
    ServiceOptions,
)
from bridge.model.passages import PassageSpec, PassageSplitter, with_title
from bridge.model.profile import ModelProfile

log = logging.getLogger(__name__)


TOKEN_IDS_REFUSED = (
    "input holds token ids, and this server takes text: clients such as LangChain's "
    "OpenAIEmbeddings send tiktoken ids by default, which this model would embed as "
    "different words. Send text (LangChain: OpenAIEmbeddings(..., "
    "check_embedding_ctx_length=False)); if these are the served model's own token ids, "
    "start bridge serve with --allow-token-ids"
)
SPLIT_CHARS = 1024  # a request is tokenized in parts of at least this many characters
# A request of at most this many characters is tokenized on the event loop itself (tens
# of microseconds): the hop to a tokenizer thread and back would cost more than that.
INLINE_CHARS = 512


def default_batch_tokens(device: torch.device) -> int:
    """Tokens per batch: small on CPU (cache-bound), large on a GPU."""
    return GPU_BATCH_TOKENS if device.type == "cuda" else CPU_BATCH_TOKENS


@dataclass
class EmbedResult:
    vectors: np.ndarray  # (n, dim) float32
    prompt_tokens: int


@dataclass
class PassageResult:
    """Each input's passages: spans in its body, and one vector per passage."""

    spans: list[list[tuple[int, int]]]  # per input, (start, end) code-point offsets
    vectors: np.ndarray  # (total passages, dim), inputs' passages one after another
    prompt_tokens: int

    def per_input(self) -> list[list[tuple[int, int, np.ndarray]]]:
        out, row = [], 0
        for spans in self.spans:
            out.append([(s, e, self.vectors[row + k]) for k, (s, e) in enumerate(spans)])
            row += len(spans)
        return out


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
        self.splitter = PassageSplitter(
            self.preparer.with_offsets, self.preparer.document_ids, self.max_input_tokens
        )
        on_cpu = embedder.device.type == "cpu"
        self.batcher = Batcher(
            [e.launch for e in self.embedders],  # one worker per replica (GPU)
            max_batch_tokens=options.max_batch_tokens or default_batch_tokens(embedder.device),
            max_queue_tokens=options.max_queue_tokens,
            observer=observer,
            on_idle=release_free_memory if on_cpu else None,
            packed=embedder.packed is not None,
            queue_seconds=options.queue_seconds,
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
            if not self.options.allow_token_ids:
                raise InputError(TOKEN_IDS_REFUSED, code="token_ids_not_accepted")
            return self.preparer.token_ids(inputs, truncate)  # type: ignore[arg-type]
        return self.preparer.texts(inputs, input_type, instruction, truncate)  # type: ignore[arg-type]

    async def _prepare_in_pool(
        self,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        input_type: InputType,
        instruction: str | None,
        truncate: bool,
    ) -> list[list[int]]:
        """Tokenize on the tokenizer threads (a short request on the event loop); a request
        with several long texts is split over them (the tokenizer releases the GIL), so it
        waits less before its batch."""
        loop = asyncio.get_running_loop()
        pool = self._tokenizer_pool
        chars = sum(len(x) for x in inputs) if inputs and isinstance(inputs[0], str) else 0
        if 0 < chars <= INLINE_CHARS:
            return self.prepare(inputs, input_type, instruction, truncate)
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
        deadline: float | None = None,
        titles: Sequence[str | None] | None = None,
    ) -> EmbedResult:
        """Embed one request's inputs; ``normalize=False`` skips the model's L2 norm;
        ``deadline`` (``time.monotonic()``): drop it unembedded if still queued then;
        ``titles``: each document text is embedded under its title (``with_title``)."""
        dim = self.check_dimensions(dimensions)
        if titles is not None:
            inputs = [with_title(t, x) for t, x in zip(titles, self._texts(inputs), strict=True)]
        seqs = await self._prepare_in_pool(inputs, input_type, instruction, truncate)
        # Cancelling this await (the client left) cancels the batcher's future: the
        # request is then dropped from the queue instead of computed for nobody.
        pooled = await asyncio.wrap_future(self.batcher.submit(seqs, deadline))
        vectors = finish_vectors(pooled, dim, self.profile.normalize and normalize)
        return EmbedResult(vectors, sum(len(s) for s in seqs))

    async def embed_passages(
        self,
        texts: Sequence[str],
        spec: PassageSpec,
        titles: Sequence[str | None] | None = None,
        dimensions: int | None = None,
        deadline: float | None = None,
        max_passages: int | None = None,
    ) -> PassageResult:
        """Split each document text into passages (under its title) and embed them all."""
        dim = self.check_dimensions(dimensions)
        texts = self._texts(texts)
        titles = list(titles) if titles is not None else [None] * len(texts)
        loop = asyncio.get_running_loop()
        split = await loop.run_in_executor(
            self._tokenizer_pool, self.splitter.split, texts, titles, spec
        )
        seqs = [p.ids for passages in split for p in passages]
        if max_passages is not None and len(seqs) > max_passages:
            raise TooLarge(
                f"the inputs make {len(seqs)} passages; the limit per request is "
                f"{max_passages}: send fewer or shorter documents per request",
                param="input",
                code="too_many_passages",
            )
        pooled = await asyncio.wrap_future(self.batcher.submit(seqs, deadline))
        vectors = finish_vectors(pooled, dim, self.profile.normalize)
        spans = [[(p.start, p.end) for p in passages] for passages in split]
        return PassageResult(spans, vectors, sum(map(len, seqs)))

    @staticmethod
    def _texts(inputs: Sequence[str] | Sequence[Sequence[int]]) -> list[str]:
        """Titles and passages apply to text inputs only."""
        if inputs and not isinstance(inputs[0], str):
            raise InputError(
                "titles and passages need text inputs, not token ids", code="text_required"
            )
        return list(inputs)  # type: ignore[arg-type]

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
        self._calibrate(seqs[0][0])
        self.embed_sync(["warm-up"])
        self.ready = True

    def _calibrate(self, token: int) -> None:
        """Time one full batch, so the queue limit (seconds of work) and Retry-After start
        from this machine's real throughput. The second run is timed: the first pays
        one-off costs (allocator growth, kernel selection)."""
        length = min(256, self.max_input_tokens)
        batch = [[token] * length for _ in range(max(1, self.batcher.max_batch_tokens // length))]
        embedder = self.embedders[0]
        embedder.forward(batch)
        started = time.perf_counter()
        embedder.forward(batch)
        self.batcher.record_rate(length * len(batch), time.perf_counter() - started)
        log.info(
            "measured %.0f tokens/s; queue limit %d tokens (%.0f s of work)",
            self.batcher.throughput,
            self.batcher.max_queue_tokens,
            self.batcher.queue_seconds,
        )

    def close(self) -> None:
        self.batcher.close()
        self._tokenizer_pool.shutdown(wait=False, cancel_futures=True)
