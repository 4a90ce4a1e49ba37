"""Checking the new index, before and after the alias moves: counts and sampled vectors."""

from __future__ import annotations

import numpy as np

from bridge.clients.engine import EngineClient
from bridge.index.ingest import embedded_text, title_of
from bridge.index.reindex.copy import Copier, stored_vectors, truncate
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
    want = _expected(copier, [h["_source"] for h in hits])
    floor = 0.9999 if copier.plan.method != "re-embed" else 0.99
    checked, bad = [], []
    for hit, expected in zip(hits, want, strict=True):
        stored = stored_vectors(found.get(hit["_id"]))
        cosine = None
        if stored and len(stored) == len(expected):
            cosine = min(
                float(truncate(s, copier.target.dim) @ e)
                for s, e in zip(stored, expected, strict=True)
            )
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


def _expected(copier: Copier, sources: list[dict]) -> list[np.ndarray]:
    """What each sampled document's vectors must be in the new index (unit rows)."""
    target = copier.target
    if copier.plan.method != "re-embed":
        out = []
        for source in sources:
            vectors = stored_vectors(source.get(copier.source.vector_field))
            out.append(np.stack([truncate(v, target.dim) for v in vectors]))
        return out
    assert copier.embedder is not None
    if target.passages:
        split = copier.embedder.embed_passages(
            [str(s.get(target.text_field) or "") for s in sources],
            [title_of(s, target) for s in sources],
            target.passages["max_tokens"],
            target.passages["overlap"],
            target.dim,
        )
        return [np.stack([p.vector for p in passages]) for passages in split]
    texts = [embedded_text(s, target) for s in sources]
    return list(copier.embedder.embed(texts, dimensions=target.dim)[:, None, :])
