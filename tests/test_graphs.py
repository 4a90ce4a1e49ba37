"""Bucket choice of the CUDA-graph cache (the replay itself needs a GPU: bench/gpu.py)."""

from __future__ import annotations

import torch

from bridge.model.graphs import DEFAULT_MAX_TOKENS, MAX_WASTE, GraphCache, buckets


def test_buckets_fit_the_budget_largest_first():
    pairs = buckets()
    assert all(r * w <= DEFAULT_MAX_TOKENS for r, w in pairs)
    sizes = [r * w for r, w in pairs]
    assert sizes == sorted(sizes, reverse=True)
    assert (1, 16) in pairs and (32, 128) in pairs and (8, 512) in pairs


def cache_with_all_buckets() -> GraphCache:
    cache = GraphCache(lambda *a: None, torch.device("cpu"), 0, True, True)  # type: ignore[arg-type]
    cache.graphs = dict.fromkeys(buckets())  # type: ignore[arg-type]
    return cache


def test_smallest_fitting_bucket():
    cache = cache_with_all_buckets()
    assert cache.bucket_for(1, 9) == (1, 16)
    assert cache.bucket_for(10, 129) == (10, 144)
    assert cache.bucket_for(5, 17) == (6, 32)
    assert cache.bucket_for(33, 16) is None  # more rows than any bucket
    assert cache.bucket_for(1, 600) is None  # longer than any bucket


def test_too_much_padding_runs_eagerly():
    cache = cache_with_all_buckets()
    # 9 rows x 500 tokens fits no bucket within the budget; 7 x 129 fits (8, 144) = 1.3x.
    assert cache.run([[1] * 500] * 9) is None
    key = cache.bucket_for(7, 129)
    assert key == (8, 144) and key[0] * key[1] <= MAX_WASTE * 7 * 129


def test_pad_batch_left_and_right_with_filler_rows():
    from bridge.model.graphs import pad_batch, position_ids

    ids, mask = pad_batch([[5, 6], [7]], 4, 0, left=True, rows=3)
    assert ids.tolist() == [[0, 0, 5, 6], [0, 0, 0, 7], [0, 0, 0, 0]]
    assert mask.tolist() == [[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1]]
    assert position_ids(mask).tolist() == [[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    ids, mask = pad_batch([[5, 6], [7]], 3, 0, left=False)
    assert ids.tolist() == [[5, 6, 0], [7, 0, 0]] and mask.tolist() == [[1, 1, 0], [1, 0, 0]]
