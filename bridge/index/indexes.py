"""``bridge indexes``: the physical indexes of an alias (``NAME-dD``, and ``NAME-dD-LAYOUT``
that a reindex to another layout makes), and dropping old ones.

``setup`` at another dimension and ``reindex`` without ``--delete-old`` keep the index the
alias left; this lists them (dimension, model, documents, which one is live) and drops
those the alias no longer uses. The live index and one a reindex is filling are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.clients.engine import EngineClient
from bridge.index.meta import IndexMeta, SetupError


@dataclass
class PhysicalIndex:
    name: str
    dim: int
    meta: IndexMeta | None  # None: named like the bridge's, not made by it
    documents: int
    live: bool  # the alias points at it

    @property
    def filling(self) -> bool:
        """A ``bridge reindex`` is filling it (its checkpoint is stored)."""
        return self.meta is not None and bool(self.meta.reindex)


def physical_indexes(engine: EngineClient, alias: str) -> list[PhysicalIndex]:
    """Every ``alias-dD`` and ``alias-dD-LAYOUT`` index, by dimension."""
    pattern = re.compile(rf"{re.escape(alias)}-d(\d+)(-(single|p\d+o\d+))?")
    mappings = engine.request("GET", f"/{alias}-d*/_mapping", missing_ok=True) or {}
    live = set(engine.request("GET", f"/_alias/{alias}", missing_ok=True) or {})
    found = []
    for name, mapping in mappings.items():
        matched = pattern.fullmatch(name)
        if matched is None:
            continue
        count = engine.request("GET", f"/{name}/_count")["count"]
        meta = IndexMeta.from_mapping(mapping)
        found.append(PhysicalIndex(name, int(matched[1]), meta, count, name in live))
    return sorted(found, key=lambda p: (p.dim, p.name))


def drop_index(engine: EngineClient, alias: str, name: str) -> str:
    """Delete ``name`` (one of ``alias``'s old indexes) and its ingest pipeline; returns
    what was dropped. Refuses the live index, one being filled, and any other index."""
    found = {p.name: p for p in physical_indexes(engine, alias)}
    index = found.get(name)
    if index is None:
        known = ", ".join(found) or "none"
        raise SetupError(f"{name} is not an index of {alias} (its indexes: {known})")
    if index.live:
        raise SetupError(
            f"{name} is live ({alias} points at it): move the alias first (bridge reindex)"
        )
    if index.filling:
        raise SetupError(
            f"a bridge reindex is filling {name}: let it finish, or run it again to resume"
        )
    engine.request("DELETE", f"/{name}")
    dropped = f"{name} ({index.documents} documents)"
    pipeline = index.meta.pipeline if index.meta else None
    if pipeline and not any(p.meta and p.meta.pipeline == pipeline for p in found.values()
                            if p.name != name):  # fmt: skip
        engine.request("DELETE", f"/_ingest/pipeline/{pipeline}", missing_ok=True)
        dropped += f" and its ingest pipeline {pipeline}"
    return dropped
