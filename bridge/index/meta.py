"""What the bridge records about an index (``_meta.bridge``), read and written in one place.

Physical index ``NAME-dD`` is reached through the alias ``NAME``; its metadata names the
model, dimension, fields, ingest mode and pipeline, so later commands read them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Literal

from bridge.clients.engine import EngineClient


class SetupError(RuntimeError):
    """The index cannot be set up as asked; the message says why and what to do."""


def physical_name(alias: str, dim: int) -> str:
    return f"{alias}-d{dim}"


@dataclass
class IndexMeta:
    """What the bridge remembers about an index (stored in ``_meta.bridge``)."""

    alias: str
    dim: int
    model: str
    text_field: str = "text"
    vector_field: str = "embedding"
    mode: Literal["bridge", "native"] = "bridge"
    pipeline: str | None = None
    model_id: str | None = None
    created_at: float = field(default_factory=time.time)
    search_profile: dict | None = None
    reindex: dict | None = None  # checkpoint of a running ``bridge reindex`` into this index

    @property
    def index(self) -> str:
        return physical_name(self.alias, self.dim)

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
