"""What the bridge records about an index (``_meta.bridge``), read and written in one place.

Physical index ``NAME-dD`` is reached through the alias ``NAME``; its metadata names the
model, dimension, fields, ingest mode and pipeline, so later commands read them. An index
that ``bridge reindex`` filled with another layout than its source's (passages instead of
one vector, or another window) is ``NAME-dD-LAYOUT`` (``layout_tag``), so both coexist.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Literal

from bridge.clients.engine import EngineClient


class SetupError(RuntimeError):
    """The index cannot be set up as asked; the message says why and what to do."""


def physical_name(alias: str, dim: int, layout: str = "") -> str:
    """``NAME-dD``, or ``NAME-dD-LAYOUT`` with a layout tag."""
    return f"{alias}-d{dim}" + (f"-{layout}" if layout else "")


def layout_tag(passages: dict | None) -> str:
    """The name tag of a layout: ``p256o32`` for passages of 256 tokens with 32 shared,
    ``single`` for one vector per document."""
    if not passages:
        return "single"
    return f"p{passages['max_tokens']}o{passages['overlap']}"


def describe_layout(passages: dict | None) -> str:
    """A layout in words."""
    if not passages:
        return "one vector per document"
    return f"passages of {passages['max_tokens']} tokens, {passages['overlap']} shared"


TITLE_BOOST = 1.0  # BM25 weight of the title against the body (docs/search.md: measured)


@dataclass
class IndexMeta:
    """What the bridge remembers about an index (stored in ``_meta.bridge``).

    With ``passages`` (``{"max_tokens": N, "overlap": M}``) each document holds a list of
    passage vectors in ``vector_field`` (nested objects ``start``, ``end``, ``embedding``);
    without (indexes made before passages, or ``--passage-tokens 0``), one vector."""

    alias: str
    dim: int
    model: str
    text_field: str = "text"
    vector_field: str = "embedding"
    title_field: str | None = "title"  # embedded in front of the body, searched by BM25
    passages: dict | None = None
    bm25_fields: list[str] | None = None  # ``field^boost``; None: title^TITLE_BOOST, body
    mode: Literal["bridge", "native"] = "bridge"
    pipeline: str | None = None
    model_id: str | None = None
    created_at: float = field(default_factory=time.time)
    search_profile: dict | None = None
    reindex: dict | None = None  # checkpoint of a running ``bridge reindex`` into this index
    layout: str = ""  # the name's layout tag ("": NAME-dD, whatever the layout)

    @property
    def index(self) -> str:
        return physical_name(self.alias, self.dim, self.layout)

    @property
    def knn_field(self) -> str:
        """The field kNN searches: the passages' vectors, or the one vector."""
        return f"{self.vector_field}.embedding" if self.passages else self.vector_field

    @property
    def lexical_fields(self) -> list[str]:
        """The fields BM25 searches, with their boosts."""
        if self.bm25_fields:
            return list(self.bm25_fields)
        if self.title_field:
            return [f"{self.title_field}^{TITLE_BOOST:g}", self.text_field]
        return [self.text_field]

    @classmethod
    def from_mapping(cls, mapping: dict) -> IndexMeta | None:
        raw = (mapping.get("mappings", {}).get("_meta") or {}).get("bridge")
        if not raw:
            return None
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


def read_meta(engine: EngineClient, name: str) -> IndexMeta | None:
    """The bridge metadata of the index behind alias (or index) ``name``."""
    mapping = engine.request("GET", f"/{name}/_mapping", missing_ok=True)
    if not mapping:
        return None
    metas = [IndexMeta.from_mapping(m) for m in mapping.values()]
    metas = [m for m in metas if m is not None]
    return metas[0] if metas else None


def moved_meta(engine: EngineClient, meta: IndexMeta) -> IndexMeta | None:
    """The metadata now behind ``meta.alias`` when the alias has moved to another index
    (``bridge reindex``); None when it has not."""
    fresh = read_meta(engine, meta.alias)
    return fresh if fresh is not None and fresh.index != meta.index else None


def write_meta(engine: EngineClient, meta: IndexMeta) -> None:
    engine.request("PUT", f"/{meta.index}/_mapping", {"_meta": {"bridge": asdict(meta)}})
