"""Gathering, in one place, what the reindex planner needs from the engine and the service."""

from __future__ import annotations

import time

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.clients.errors import ClientError
from bridge.index.dialects import dialect_for
from bridge.index.meta import IndexMeta, physical_name, read_meta
from bridge.index.reindex.plan import Facts, Request


def gather(
    engine: EngineClient,
    embedder: EmbeddingClient | None,
    request: Request,
    current: IndexMeta | None,
) -> Facts:
    """Read the facts for ``request`` (nothing is changed); ``current``: the metadata
    behind the alias."""
    alias = request.alias
    behind = engine.request("GET", f"/_alias/{alias}", missing_ok=True) or {}
    resumed_source = None
    if current is not None and current.reindex:  # the alias moved before the run ended
        resumed_source = read_meta(engine, current.reindex["source"])
    source = resumed_source or current
    target_name = request.target_name(source) if source else physical_name(alias, request.dim)
    target_exists = engine.exists(f"/{target_name}")
    names = [meta.index for meta in (current, resumed_source) if meta is not None]
    counts = {
        name: engine.request("GET", f"/{name}/_count")["count"]
        for name in names + ([target_name] if target_exists else [])
    }
    service, service_error = None, None
    if embedder is None:
        service_error = "no embedding service given"
    else:
        try:
            service = embedder.model_info()
        except ClientError as exc:
            service_error = str(exc)
    return Facts(
        current=current,
        alias_indices=set(behind),
        target=read_meta(engine, target_name),
        target_exists=target_exists,
        resumed_source=resumed_source,
        counts=counts,
        service=service,
        service_error=service_error,
        scripted_reindex=dialect_for(engine.info()).has_scripted_reindex(engine),
        now=time.time(),
    )
