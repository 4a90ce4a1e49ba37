"""``bridge eval``: retrieval quality on BEIR-format data, and fusion tuning.

Metrics follow trec_eval: nDCG@10 with linear gains (the qrels grade) and log2 discount,
the ideal ranking built from all judged relevant documents; recall@100 over documents
with grade > 0; MRR@10 the reciprocal rank of the first relevant document in the top 10
(0 when none). Queries without a relevant document in the qrels are skipped, as BEIR does.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bridge.index.search import (
    Hit,
    HybridSearch,
    SearchOptions,
    linear_fusion,
    rrf,
)

Qrels = dict[str, dict[str, int]]
Run = dict[str, list[str]]


def load_queries(path: Path) -> dict[str, str]:
    queries = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                queries[str(q["_id"])] = q["text"]
    return queries


def load_qrels(path: Path) -> Qrels:
    """BEIR ``qrels/*.tsv`` (header ``query-id corpus-id score``) or TREC ``qid 0 did rel``."""
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) == 1:
                row = row[0].split()
            if not row or row[0] in ("query-id", "query_id", "qid"):
                continue
            qid, did, grade = (row[0], row[2], row[3]) if len(row) == 4 else row[:3]
            qrels.setdefault(qid, {})[did] = int(float(grade))
    return qrels


def judged_queries(queries: dict[str, str], qrels: Qrels) -> tuple[dict[str, str], Qrels, int]:
    """The queries that have both a text and judgements, their qrels, and how many judged
    queries were skipped for having no text (BEIR subsets often ship such qrels)."""
    both = [q for q in qrels if q in queries]
    return {q: queries[q] for q in both}, {q: qrels[q] for q in both}, len(qrels) - len(both)


def ndcg_at(ranking: Sequence[str], judged: dict[str, int], k: int = 10) -> float:
    dcg = sum(
        judged.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranking[:k], start=1)
    )
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranking: Sequence[str], judged: dict[str, int], k: int = 100) -> float:
    relevant = {d for d, g in judged.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


def mrr_at(ranking: Sequence[str], judged: dict[str, int], k: int = 10) -> float:
    for rank, doc in enumerate(ranking[:k], start=1):
        if judged.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


@dataclass
class Scores:
    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    queries: int


def evaluate(run: Run, qrels: Qrels) -> Scores:
    judged_queries = [q for q, judged in qrels.items() if any(g > 0 for g in judged.values())]
    n = len(judged_queries)
    if n == 0:
        return Scores(0.0, 0.0, 0.0, 0)
    ndcg = sum(ndcg_at(run.get(q, []), qrels[q]) for q in judged_queries) / n
    recall = sum(recall_at(run.get(q, []), qrels[q]) for q in judged_queries) / n
    mrr = sum(mrr_at(run.get(q, []), qrels[q]) for q in judged_queries) / n
    return Scores(ndcg, recall, mrr, n)


@dataclass
class Halves:
    """Each query's BM25 and kNN result lists, fetched once and fused many times."""

    lexical: dict[str, list[Hit]]
    semantic: dict[str, list[Hit]]


def fetch_halves(search: HybridSearch, queries: dict[str, str], depth: int = 100) -> Halves:
    lexical, semantic = {}, {}
    for qid, text in queries.items():
        lexical[qid] = search.search(text, SearchOptions(mode="bm25", k=depth))
        semantic[qid] = search.search(text, SearchOptions(mode="knn", k=depth))
    return Halves(lexical, semantic)


def fused_run(halves: Halves, profile: dict, depth: int = 100) -> Run:
    run: Run = {}
    for qid, lexical in halves.lexical.items():
        semantic = halves.semantic[qid]
        if profile["fusion"] == "rrf":
            scores = rrf([[h.id for h in lexical], [h.id for h in semantic]], profile["rrf_k"])
        else:
            scores = linear_fusion(
                [{h.id: h.score for h in lexical}, {h.id: h.score for h in semantic}],
                profile["weights"],
                profile["normalization"],
            )
        run[qid] = [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))][:depth]
    return run


def candidate_profiles() -> Iterable[dict]:
    for k in (5, 10, 20, 40, 60, 100):
        yield {"mode": "hybrid", "fusion": "rrf", "rrf_k": k}
    for normalization in ("min_max", "z_score"):
        for step in range(11):
            w = round(step / 10, 1)
            yield {
                "mode": "hybrid",
                "fusion": "linear",
                "normalization": normalization,
                "weights": [round(1 - w, 1), w],
            }


def tune(halves: Halves, qrels: Qrels) -> tuple[dict, Scores, list[tuple[dict, Scores]]]:
    """Every candidate fusion scored by nDCG@10; returns the best, its scores, and all."""
    tried = [(p, evaluate(fused_run(halves, p), qrels)) for p in candidate_profiles()]
    best, best_scores = max(tried, key=lambda ps: (ps[1].ndcg_at_10, ps[1].recall_at_100))
    return best, best_scores, tried


def mode_runs(halves: Halves, modes: Sequence[str], hybrid_profile: dict) -> dict[str, Run]:
    runs: dict[str, Run] = {}
    for mode in modes:
        if mode == "bm25":
            runs[mode] = {q: [h.id for h in hits] for q, hits in halves.lexical.items()}
        elif mode == "knn":
            runs[mode] = {q: [h.id for h in hits] for q, hits in halves.semantic.items()}
        else:
            runs[mode] = fused_run(halves, hybrid_profile)
    return runs


def scores_table(results: dict[str, Scores]) -> str:
    lines = [f"{'mode':<24} {'nDCG@10':>8} {'R@100':>8} {'MRR@10':>8} {'queries':>8}"]
    for mode, s in results.items():
        lines.append(
            f"{mode:<24} {s.ndcg_at_10:8.4f} {s.recall_at_100:8.4f} {s.mrr_at_10:8.4f} "
            f"{s.queries:8d}"
        )
    return "\n".join(lines)


def as_json(results: dict[str, Scores]) -> dict:
    return {mode: asdict(s) for mode, s in results.items()}
