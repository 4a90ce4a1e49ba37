"""``bridge setup``: an index per dimension behind an alias, and its ingest wiring.

Physical index ``NAME-dD`` reached through the alias ``NAME``; the index's ``_meta.bridge``
records the model, dimension, fields, ingest mode and pipeline, so later commands
(ingest, search, reindex) read them instead of asking again. Idempotent.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.clients.errors import ClientError
from bridge.index.dialects import dialect_for
from bridge.index.dialects.base import IngestMode
from bridge.index.meta import IndexMeta, SetupError, physical_name, read_meta, write_meta
from bridge.model.passages import DEFAULT_PASSAGE_TOKENS, PassageSpec

Mode = Literal["auto", "bridge", "native"]
DEFAULT_PASSAGES = PassageSpec.of(DEFAULT_PASSAGE_TOKENS)

# Documents per embedding request of a native pipeline (setup's and reindex's wiring).
PIPELINE_BATCH_SIZE = 32


def check_service_dimension(
    embedder: EmbeddingClient, dim: int, passages: PassageSpec | None = None
) -> str:
    """The service must produce exactly ``dim`` values (and passages, when asked for);
    returns the model name."""
    info = embedder.model_info()
    if not info.min_dimension <= dim <= info.max_dimension:
        raise SetupError(
            f"the embedding service ({info.name}) produces {info.min_dimension}.."
            f"{info.max_dimension} dimensions, not {dim}; pick --dim in that range"
        )
    probe = embedder.embed(["dimension check"], dimensions=dim)
    if probe.shape[1] != dim:
        raise SetupError(
            f"asked the service for {dim} dimensions and got {probe.shape[1]}: "
            "the mapping and the service disagree"
        )
    if passages:
        try:
            embedder.embed_passages(["passage check"], None, **asdict(passages), dimensions=dim)
        except ClientError as exc:
            raise SetupError(
                f"the embedding service cannot split documents into passages ({exc}); "
                "upgrade it, or set up one vector per document (--passage-tokens 0)"
            ) from exc
    return info.name


def setup_index(
    engine: EngineClient,
    embedder: EmbeddingClient,
    alias: str,
    dim: int,
    mode: Mode = "auto",
    bridge_url: str | None = None,
    api_key: str | None = None,
    text_field: str = "text",
    vector_field: str | None = None,
    analyzer: str = "standard",
    index_type: str | None = None,
    shards: int = 1,
    replicas: int | None = None,
    batch_size: int = PIPELINE_BATCH_SIZE,
    title_field: str | None = "title",
    passages: PassageSpec | None = DEFAULT_PASSAGES,
    bm25_fields: list[str] | None = None,
) -> tuple[IndexMeta, list[str]]:
    """Create (or find) ``alias-dD`` and its wiring; returns its metadata and notes.
    ``replicas`` None: 1 where the cluster has two data nodes or more, else 0.
    ``passages`` None: one vector per document; ``vector_field`` None: ``passages``, or
    ``embedding`` for one vector."""
    notes: list[str] = []
    info = engine.info()
    current = engine.request("GET", f"/_alias/{alias}", missing_ok=True) or {}
    if not current and engine.exists(f"/{alias}"):  # checked before anything is created
        raise SetupError(
            f"an index named {alias} exists; the bridge needs {alias} as an alias: "
            "pick another --index, or reindex that index into the bridge's"
        )
    model = check_service_dimension(embedder, dim, passages)
    index = physical_name(alias, dim)

    dialect = dialect_for(info)
    chosen: IngestMode = "bridge"
    if mode != "bridge":
        chosen, choice_notes = dialect.choose_ingest(engine, mode)
        notes.extend(choice_notes)
    if chosen == "native" and not bridge_url:
        raise SetupError("--bridge-url is needed for native ingest (the engine calls it)")

    existing = read_meta(engine, index)
    created = False
    if existing is not None:
        meta = existing
        if meta.model != model:
            raise SetupError(
                f"{index} holds vectors of model {meta.model!r}, the service serves "
                f"{model!r}: use another index name or reindex"
            )
        notes.append(f"{index} exists; kept")
    else:
        if engine.exists(f"/{index}"):
            raise SetupError(f"{index} exists but was not made by the bridge; not touching it")
        meta = IndexMeta(
            alias,
            dim,
            model,
            text_field,
            vector_field or ("passages" if passages else "embedding"),
            title_field=title_field or None,
            passages=asdict(passages) if passages else None,
            bm25_fields=bm25_fields,
        )
        if passages:
            notes.append(
                f"passage vectors: at most {passages.max_tokens} model tokens each, "
                f"{passages.overlap} shared ({meta.knn_field})"
            )
        if replicas is None:
            replicas = _default_replicas(engine, notes)
        body = dialect.mapping_body(meta, analyzer, index_type, shards, replicas)
        engine.request("PUT", f"/{index}", body)
        created = True
        notes.append(f"created {index}")

    try:
        if chosen == "native" and meta.mode != "native":
            dialect.wire_native_ingest(engine, meta, bridge_url or "", api_key, batch_size)
            notes.append(f"ingest pipeline {meta.pipeline} (model {meta.model_id}) is the default")
        write_meta(engine, meta)
        _point_alias(engine, alias, index, current, notes)
    except BaseException:
        if created:  # a failed setup leaves nothing behind
            engine.request("DELETE", f"/{index}", missing_ok=True)
            if meta.pipeline:
                engine.request("DELETE", f"/_ingest/pipeline/{meta.pipeline}", missing_ok=True)
        raise
    return meta, notes


def _default_replicas(engine: EngineClient, notes: list[str]) -> int:
    """One replica where a second data node can hold it; none on a one-node cluster,
    where a replica could never be placed and the index would stay yellow."""
    data_nodes = int(engine.request("GET", "/_cluster/health").get("number_of_data_nodes", 1))
    replicas = min(1, max(0, data_nodes - 1))
    notes.append(
        f"{replicas} replica{'s' if replicas != 1 else ''} ({data_nodes} data "
        f"node{'s' if data_nodes != 1 else ''}; --replicas sets another number)"
    )
    return replicas


def _point_alias(
    engine: EngineClient, alias: str, index: str, current: dict, notes: list[str]
) -> None:
    """Point ``alias`` at ``index`` unless it points elsewhere (``current``: what the alias
    held when setup began; an index named like it was refused then)."""
    if index in current:
        return
    if current:
        notes.append(
            f"alias {alias} points at {', '.join(current)}; left as is "
            f"(bridge reindex moves it to {index})"
        )
        return
    engine.request(
        "POST",
        "/_aliases",
        {"actions": [{"add": {"index": index, "alias": alias, "is_write_index": True}}]},
    )
    notes.append(f"alias {alias} -> {index}")
