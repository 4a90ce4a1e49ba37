"""Retrieval metrics and fusion, checked against values computed by hand."""

from __future__ import annotations

import math

import pytest

from bridge.index.evaluate import evaluate, judged_queries, mrr_at, ndcg_at, recall_at
from bridge.index.search import linear_fusion, normalize_scores, rrf


def test_ndcg_recall_mrr_by_hand():
    judged = {"a": 2, "b": 1, "c": 0}
    ranking = ["c", "a", "x", "b"]
    # DCG = 2/log2(3) + 1/log2(5) = 1.26186 + 0.43068; IDCG = 2/log2(2) + 1/log2(3) = 2.63093
    assert ndcg_at(ranking, judged) == pytest.approx(1.6925361 / 2.6309298, abs=1e-6)
    assert recall_at(ranking, judged) == 1.0
    assert recall_at(ranking[:2], judged) == 0.5
    assert mrr_at(ranking, judged) == 0.5
    assert mrr_at(["x", "y"], judged) == 0.0
    assert ndcg_at(["a", "b"], judged) == pytest.approx(1.0)


def test_cutoffs_apply():
    judged = {"z": 1}
    ranking = [f"d{i}" for i in range(10)] + ["z"]
    assert ndcg_at(ranking, judged, 10) == 0.0 and mrr_at(ranking, judged, 10) == 0.0
    assert recall_at(ranking, judged, 100) == 1.0


def test_queries_without_relevant_documents_are_skipped():
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}}
    run = {"q1": ["a"], "q2": ["b"]}
    scores = evaluate(run, qrels)
    assert scores.queries == 1 and scores.ndcg_at_10 == 1.0 and scores.mrr_at_10 == 1.0


def test_judged_queries_without_text_are_skipped_not_zero():
    # BEIR subsets ship qrels for more queries than queries.jsonl holds.
    queries = {"q1": "first", "q3": "unjudged"}
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q4": {"c": 1}}
    texts, judged, skipped = judged_queries(queries, qrels)
    assert texts == {"q1": "first"} and judged == {"q1": {"a": 1}} and skipped == 2
    scores = evaluate({"q1": ["a"]}, judged)
    assert scores.queries == 1 and scores.ndcg_at_10 == 1.0


def test_rrf_by_hand():
    scores = rrf([["a", "b"], ["b", "c"]], k=60)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61) and scores["c"] == pytest.approx(1 / 62)


def test_linear_fusion_min_max_and_z_score():
    lexical = {"a": 10.0, "b": 5.0, "c": 0.0}
    semantic = {"b": 0.9, "d": 0.5}
    fused = linear_fusion([lexical, semantic], [0.5, 0.5], "min_max")
    assert fused["b"] == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)
    assert fused["a"] == pytest.approx(0.5) and fused["d"] == pytest.approx(0.0)
    z = normalize_scores(lexical, "z_score")
    std = math.sqrt(((5.0) ** 2 + 0 + 5.0**2) / 3)
    assert z["a"] == pytest.approx(5.0 / std) and z["b"] == pytest.approx(0.0)
    fused_z = linear_fusion([lexical, semantic], [1.0, 0.0], "z_score")
    assert max(fused_z, key=fused_z.get) == "a"
