"""Hybrid BM25 + kNN search, bodies from the engine's dialect.

The query text is embedded by the bridge in *query* mode (with the model's instruction),
so both ingest modes search the same way. The dialect (``bridge.index.dialects``) gives one
body when the engine fuses BM25 and kNN itself (OpenSearch's ``hybrid`` query), or the two
halves, which the bridge fuses here (RRF, or normalised linear; Elasticsearch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.clients.errors import ClientError
from bridge.index.dialects import dialect_for
from bridge.index.dialects.base import PASSAGE_HITS
from bridge.index.meta import IndexMeta, moved_meta

SearchMode = Literal["hybrid", "bm25", "knn"]
Fusion = Literal["rrf", "linear"]
Normalization = Literal["min_max", "z_score"]


@dataclass
class Passage:
    """A hit's best passage: its offsets in the body and its text."""

    start: int
    end: int
    text: str


@dataclass
class Hit:
    id: str
    score: float
    source: dict
    passage: Passage | None = None  # kNN and hybrid hits of a passage index


@dataclass
class SearchOptions:
    mode: SearchMode = "hybrid"
    k: int = 10
    fusion: Fusion = "rrf"
    weights: tuple[float, float] = (0.3, 0.7)  # (bm25, knn) for linear fusion
    rrf_k: int = 60
    normalization: Normalization = "min_max"  # for linear fusion
    window: int = 100  # candidates per half before fusion
    filter: dict | None = None
    instruction: str | None = None
    text_fields: list[str] | None = None  # BM25 fields (``field^boost``); None: the index's

    @classmethod
    def from_profile(cls, profile: dict | None, **overrides) -> SearchOptions:
        """Options from an index's saved search profile, then explicit overrides."""
        base = dict(profile or {})
        if "weights" in base:
            base["weights"] = tuple(base["weights"])
        base.update({k: v for k, v in overrides.items() if v is not None})
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in base.items() if k in known})


def rrf(rankings: Sequence[Sequence[str]], k: int = 60) -> dict[str, float]:
    """Reciprocal rank fusion: sum of 1 / (k + rank) over the rankings (rank from 1)."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + rank)
    return scores


def normalize_scores(scores: dict[str, float], how: Normalization) -> dict[str, float]:
    """Min-max to [0, 1], or z-score (mean 0, unit deviation) within one result list."""
    if not scores:
        return {}
    values = list(scores.values())
    if how == "z_score":
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        return {d: (v - mean) / std if std > 0 else 0.0 for d, v in scores.items()}
    low, high = min(values), max(values)
    span = high - low
    return {d: (v - low) / span if span > 0 else 1.0 for d, v in scores.items()}


def linear_fusion(
    results: Sequence[dict[str, float]],
    weights: Sequence[float],
    how: Normalization = "min_max",
) -> dict[str, float]:
    """Weighted sum of normalised scores; a document missing from a list gets that list's
    lowest normalised score (0 for min-max)."""
    fused: dict[str, float] = {}
    normalized = [normalize_scores(scores, how) for scores in results]
    every = set().union(*normalized) if normalized else set()
    for scores, weight in zip(normalized, weights, strict=True):
        floor = min(scores.values()) if scores else 0.0
        for doc_id in every:
            fused[doc_id] = fused.get(doc_id, 0.0) + weight * scores.get(doc_id, floor)
    return fused


class HybridSearch:
    def __init__(self, engine: EngineClient, embedder: EmbeddingClient | None, meta: IndexMeta):
        self.engine = engine
        self.embedder = embedder
        self.meta = meta

    def _vector(self, text: str, options: SearchOptions) -> list[float]:
        if self.embedder is None:
            raise ValueError("kNN and hybrid search need an embedding client")
        vec = self.embedder.embed(
            [text], dimensions=self.meta.dim, input_type="query", instruction=options.instruction
        )
        return vec[0].tolist()

    def _bm25(self, text: str, options: SearchOptions) -> dict:
        fields = options.text_fields or self.meta.lexical_fields
        match: dict = {"match": {fields[0]: text}}
        if len(fields) > 1 or "^" in fields[0]:
            match = {"multi_match": {"query": text, "fields": fields, "type": "cross_fields"}}
        if options.filter:
            return {"bool": {"must": match, "filter": options.filter}}
        return match

    def search(self, text: str, options: SearchOptions | None = None) -> list[Hit]:
        """Search through the alias. When ``bridge reindex`` moved it to another dimension
        meanwhile, the query fails; the metadata is read again and the query re-run."""
        try:
            return self._search(text, options or SearchOptions())
        except ClientError:
            fresh = moved_meta(self.engine, self.meta)
            if fresh is None:
                raise
            self.meta = fresh
            return self._search(text, options or SearchOptions())

    def _search(self, text: str, options: SearchOptions) -> list[Hit]:
        if options.mode == "bm25":
            return self._run({"size": options.k, "query": self._bm25(text, options)})
        dialect = dialect_for(self.engine.info())
        vector = self._vector(text, options)
        field = self.meta.knn_field
        nested = self.meta.vector_field if self.meta.passages else None
        if options.mode == "knn":
            body = dialect.knn_body(field, vector, options.k, options.filter, nested)
            return self._run({"size": options.k, **body})
        bodies = dialect.hybrid_bodies(self._bm25(text, options), field, vector, options, nested)
        if len(bodies) == 1:
            return self._run({"size": options.k, **bodies[0]})
        lexical, semantic = (self._run({"size": options.window, **body}) for body in bodies)
        return fuse(lexical, semantic, options)

    def _run(self, body: dict, params: dict | None = None) -> list[Hit]:
        body = {"_source": {"excludes": [self.meta.vector_field]}, **body}
        answer = self.engine.request("POST", f"/{self.meta.alias}/_search", body, params)
        return [
            Hit(h["_id"], h["_score"] or 0.0, h["_source"], self._passage(h))
            for h in answer["hits"]["hits"]
        ]

    def _passage(self, hit: dict) -> Passage | None:
        """The best passage the engine named in ``inner_hits``, with its text."""
        inner = (hit.get("inner_hits") or {}).get(PASSAGE_HITS, {}).get("hits", {}).get("hits")
        if not inner:
            return None
        fields = inner[0].get("fields") or {}
        path = self.meta.vector_field
        start, end = _first(fields, f"{path}.start"), _first(fields, f"{path}.end")
        if start is None or end is None:
            return None
        body = hit["_source"].get(self.meta.text_field)
        return Passage(start, end, body[start:end] if isinstance(body, str) else "")


def _first(fields: dict, name: str) -> int | None:
    """A value from a hit's ``fields`` (nested ones come as a list of objects)."""
    value = fields.get(name)
    if value is None and "." in name:  # {"passages": [{"start": [0]}]} in some versions
        path, leaf = name.rsplit(".", 1)
        objects = fields.get(path) or [{}]
        value = objects[0].get(leaf) if isinstance(objects[0], dict) else None
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if value is not None else None


def fuse(lexical: list[Hit], semantic: list[Hit], options: SearchOptions) -> list[Hit]:
    """Combine two ranked lists in the bridge (RRF or min-max linear); a hit keeps the
    best passage its kNN half found."""
    sources = {h.id: h.source for h in [*semantic, *lexical]}
    passages = {h.id: h.passage for h in semantic}
    if options.fusion == "rrf":
        scores = rrf([[h.id for h in lexical], [h.id for h in semantic]], options.rrf_k)
    else:
        scores = linear_fusion(
            [{h.id: h.score for h in lexical}, {h.id: h.score for h in semantic}],
            options.weights,
            options.normalization,
        )
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: options.k]
    return [Hit(doc_id, score, sources[doc_id], passages.get(doc_id)) for doc_id, score in ranked]
