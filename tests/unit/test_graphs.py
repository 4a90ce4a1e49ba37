"""Bucket choice of the CUDA-graph cache (the replay itself needs a GPU: bench/gpu.py)."""

from __future__ import annotations

import torch

from bridge.model.embedder import pad_batch
from bridge.model.families.qwen3 import Qwen3Family
from bridge.model.graphs import DEFAULT_MAX_TOKENS, SLOTS, GraphCache, buckets


def test_buckets_cover_token_counts_and_length_classes():
    pairs = buckets()
    assert pairs == sorted(pairs, reverse=True)
    assert all(longest <= tokens <= DEFAULT_MAX_TOKENS for tokens, longest in pairs)
    assert (16, 16) in pairs and (1280, 256) in pairs and (2048, 2048) in pairs
    assert len(pairs) == len(set(pairs)) < 200  # captured at start-up: keep it short


def cache_with_all_buckets() -> GraphCache:
    cache = GraphCache(lambda b: None, torch.device("cpu"), 0)  # type: ignore[arg-type]
    cache.graphs = dict.fromkeys(buckets())  # type: ignore[arg-type]
    return cache


def test_smallest_fitting_bucket():
    cache = cache_with_all_buckets()
    assert cache.bucket_for(9, 9, 1) == (16, 16)
    assert cache.bucket_for(10 * 129, 129, 10) == (1344, 256)  # ten texts of 129 tokens
    assert cache.bucket_for(300, 40, 12) == (304, 64)
    assert cache.bucket_for(64, 2, SLOTS + 1) is None  # more texts than slots
    assert cache.bucket_for(DEFAULT_MAX_TOKENS + 1, 100, 30) is None  # runs eagerly


def test_pad_batch_left_and_right():
    ids, mask = pad_batch([[5, 6], [7]], 4, 0, left=True)
    assert ids.tolist() == [[0, 0, 5, 6], [0, 0, 0, 7]]
    assert mask.tolist() == [[0, 0, 1, 1], [0, 0, 0, 1]]
    assert Qwen3Family().position_ids(mask).tolist() == [[0, 0, 0, 1], [0, 0, 0, 0]]
    ids, mask = pad_batch([[5, 6], [7]], 3, 0, left=False)
    assert ids.tolist() == [[5, 6, 0], [7, 0, 0]] and mask.tolist() == [[1, 1, 0], [1, 0, 0]]
