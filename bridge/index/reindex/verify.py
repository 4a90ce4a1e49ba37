"""Checking the new index, before and after the alias moves: counts and sampled vectors."""

from __future__ import annotations

import numpy as np

from bridge.clients.engine import EngineClient
from bridge.index.reindex.copy import Copier, truncate
from bridge.index.reindex.plan import SAMPLE_SIZE, ReindexError


def count(engine: EngineClient, index: str, query: dict | None = None) -> int:
    body = {"query": query} if query else None
    return engine.request("POST", f"/{index}/_count", body)["count"]


def check_counts(copier: Copier, since: int, before_swap: bool) -> tuple[int, int]:
    """The documents of the old and the new index; the new one must not lack any (but
    those written since ``since`` while the alias has not moved yet)."""
    engine, old, new = copier.engine, copier.source.index, copier.target.index
    copier.refresh(old, new)
    source, target = count(engine, old), count(engine, new)
    # Before the move, writes keep landing in the old index; those of the last
    # CLOCK_MARGIN are copied again after the move, so they may still be missing here.
    recent = 0
    if before_swap:
        recent = count(engine, old, {"range": {"bridge.indexed_at": {"gte": since}}})
    if target < source - recent:
        raise ReindexError(
            f"{new} has {target} documents, {old} has {source}: "
            + ("not moving the alias; " if before_swap else "")
            + "run again to copy the rest"
        )
    return source, target


def check_sample(copier: Copier, since: int) -> float | None:
    """Lowest cosine of sampled new vectors against what they must be.

    A document written recently (after ``since``) may be missing or older in the new
    index until the pass after the move; only such a document is excused."""
    body = {
        "size": SAMPLE_SIZE,
        "query": {"function_score": {"query": {"match_all": {}}, "random_score": {}}},
    }
    hits = copier.search(body)
    if not hits:
        return None
    ids = [h["_id"] for h in hits]
    got = copier.engine.request(
        "POST", f"/{copier.target.index}/_mget", {"ids": ids}, params=copier.vector_params()
    )["docs"]
    field_name = copier.target.vector_field
    found = {d["_id"]: d["_source"].get(field_name) for d in got if d.get("found")}
    if copier.plan.method == "re-embed":
        assert copier.embedder is not None
        texts = [copier.embedded_text(h["_source"]) for h in hits]
        want = copier.embedder.embed(texts, dimensions=copier.target.dim)
    else:
        want = np.stack(
            [truncate(h["_source"][copier.source.vector_field], copier.target.dim) for h in hits]
        )
    want = want / np.linalg.norm(want, axis=1, keepdims=True)
    floor = 0.9999 if copier.plan.method != "re-embed" else 0.99
    checked, bad = [], []
    for hit, expected in zip(hits, want, strict=True):
        stored = found.get(hit["_id"])
        cosine = float(truncate(stored, copier.target.dim) @ expected) if stored else None
        if cosine is not None and cosine >= floor:
            checked.append(cosine)
            continue
        written = (hit["_source"].get("bridge") or {}).get("indexed_at") or 0
        if written < since:
            bad.append(f"{hit['_id']} ({'missing' if cosine is None else f'{cosine:.5f}'})")
    if bad:
        raise ReindexError(
            f"sampled documents of {copier.target.index} are missing or differ from what "
            f"they should be (cosine floor {floor}): {', '.join(bad)}; not moving the alias"
        )
    return min(checked) if checked else None
