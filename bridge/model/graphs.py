"""CUDA graphs for small packed batches: a short query costs one graph replay instead of
hundreds of kernel launches from Python.

A bucket is (tokens, longest sequence): captured once at warm-up over static packed
inputs (``packed.pack`` with a filler sequence and ``SLOTS`` pooled rows). A batch with
at most ``SLOTS`` sequences is packed into the smallest bucket that holds its tokens and
its longest sequence, copied into the static inputs, and replayed. Larger batches keep
the GPU busy on their own and run eagerly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bridge.model.packed import PackedBatch, pack

log = logging.getLogger(__name__)

# Measured on an H200 (bench/gpu_kernels.py): a 16-token query takes 12 ms eagerly (the
# Python side of ~450 kernel launches) and 3.4 ms replayed; ten texts of 129 tokens take
# 17.5 ms eagerly when nothing else wants the CPU, and a replay costs in proportion to
# the bucket's padding (19.3 ms in a 1,408-token bucket), hence steps of 16 to 64 tokens.
TOKENS = (*range(16, 513, 16), *range(544, 1025, 32), *range(1088, 2049, 64))
LENGTHS = (64, 256, 1024)  # classes of the longest sequence attention is sized for
SLOTS = 32  # sequences one replay holds
DEFAULT_MAX_TOKENS = 2048

PooledForward = Callable[[PackedBatch], torch.Tensor]  # -> (slots, hidden) float32


def buckets(max_tokens: int = DEFAULT_MAX_TOKENS) -> list[tuple[int, int]]:
    """(tokens, longest) pairs, largest first: per token count, each length class below
    it and the count itself."""
    pairs = []
    for tokens in TOKENS:
        if tokens <= max_tokens:
            pairs += [(tokens, n) for n in LENGTHS if n < tokens] + [(tokens, tokens)]
    return sorted(pairs, reverse=True)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: PackedBatch
    staging: PackedBatch  # pinned host memory a batch goes through, one copy to ``inputs``
    pooled: torch.Tensor


class GraphCache:
    """Captured packed forward passes of one model on one GPU, keyed by bucket."""

    def __init__(
        self,
        forward: PooledForward,
        device: torch.device,
        pad_id: int,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self.forward = forward
        self.device = device
        self.pad_id = pad_id
        self.max_tokens = max_tokens
        self.graphs: dict[tuple[int, int], _Graph] = {}

    def capture_all(self) -> None:
        """Capture every bucket (largest first, so smaller ones reuse its memory pool)."""
        with torch.cuda.device(self.device):  # graphs, streams and pool on this GPU
            torch.cuda.synchronize()
            pool = torch.cuda.graph_pool_handle()
            # torch.cuda.graph's default capture stream is one per process, made on the
            # first GPU that captured: each GPU needs its own.
            stream = torch.cuda.Stream(self.device)
            for tokens, longest in buckets(self.max_tokens):
                self.graphs[(tokens, longest)] = self._capture(tokens, longest, pool, stream)
        log.info("captured %d CUDA graphs on %s", len(self.graphs), self.device)

    def _capture(self, tokens: int, longest: int, pool, stream) -> _Graph:
        # Static inputs: one filler sequence until a replay copies a batch in.
        static = pack([], self.pad_id, tokens, SLOTS).to(self.device)
        static.max_len = longest
        warm = torch.cuda.Stream(self.device)
        warm.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(warm), torch.inference_mode():
            self.forward(static)  # lazy initialisation outside the capture
        torch.cuda.current_stream(self.device).wait_stream(warm)
        graph = torch.cuda.CUDAGraph()
        # thread_local: work other threads put on the GPU meanwhile is not an error.
        with (
            torch.inference_mode(),
            torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local"),
        ):
            pooled = self.forward(static)
        return _Graph(graph, static, static.staging(), pooled)

    def bucket_for(self, tokens: int, longest: int, sequences: int) -> tuple[int, int] | None:
        if sequences > SLOTS:
            return None
        best = None
        for t, n in self.graphs:
            if t >= tokens and n >= longest and (best is None or (t, n) < best):
                best = (t, n)
        return best

    def run(self, batch: list[list[int]]) -> np.ndarray | None:
        """Pooled vectors of ``batch`` by replaying a graph; None when no bucket fits."""
        key = self.bucket_for(sum(map(len, batch)), max(map(len, batch)), len(batch))
        if key is None:
            return None
        g = self.graphs[key]
        with torch.cuda.device(self.device):
            # the staging memory is free again: the last run waited for its rows
            pack(batch, self.pad_id, key[0], SLOTS).copy_into(g.inputs, g.staging)
            g.graph.replay()
            return g.pooled[: len(batch)].cpu().numpy()
