"""``bridge setup``: an index per dimension behind an alias, and its ingest wiring.

Physical index ``NAME-dD`` reached through the alias ``NAME``; the index's ``_meta.bridge``
records the model, dimension, fields, ingest mode and pipeline, so later commands
(ingest, search, reindex) read them instead of asking again. Idempotent.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient, EngineInfo
from bridge.index.templates import rendered

Mode = Literal["auto", "bridge", "native"]


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


def check_service_dimension(embedder: EmbeddingClient, dim: int) -> str:
    """The service must produce exactly ``dim`` values; returns the model name."""
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
    return info.name


def mapping_body(
    info: EngineInfo,
    meta: IndexMeta,
    analyzer: str = "standard",
    index_type: str | None = None,
    shards: int = 1,
    replicas: int = 1,
) -> dict:
    params = {
        "dim": meta.dim,
        "text_field": meta.text_field,
        "vector_field": meta.vector_field,
        "analyzer": analyzer,
        "shards": shards,
        "replicas": replicas,
        "meta": {"bridge": asdict(meta)},
    }
    if info.kind == "opensearch":
        return rendered("mappings", "opensearch", space_type="cosinesimil", **params)
    index_type = index_type or "int8_hnsw"
    if index_type == "bbq_hnsw" and meta.dim < 64:
        raise SetupError(f"bbq_hnsw needs at least 64 dimensions; --dim is {meta.dim}")
    return rendered(
        "mappings", "elasticsearch", similarity="cosine", index_type=index_type, **params
    )


def _endpoint_regex(bridge_url: str) -> str:
    """The narrowest ml-commons trusted-endpoint pattern that admits the bridge."""
    return "^" + re.escape(bridge_url.rstrip("/")) + "/.*$"


def wire_native_opensearch(
    engine: EngineClient,
    meta: IndexMeta,
    bridge_url: str,
    api_key: str | None,
    batch_size: int,
) -> None:
    """ml-commons connector -> remote model -> text_embedding pipeline (default_pipeline)."""
    settings = engine.request("GET", "/_cluster/settings", params={"flat_settings": "true"})
    current = settings.get("persistent", {})
    patterns: list[str] = []
    for key, value in current.items():  # a JSON list, or key.0, key.1, ... entries
        if key.startswith("plugins.ml_commons.trusted_connector_endpoints_regex"):
            patterns.extend(value if isinstance(value, list) else [value])
    wanted = _endpoint_regex(bridge_url)
    persistent: dict = {}
    if wanted not in patterns:
        persistent["plugins.ml_commons.trusted_connector_endpoints_regex"] = [*patterns, wanted]
    host = bridge_url.split("://", 1)[-1].split("/")[0].split(":")[0]
    private = host in {"localhost", "127.0.0.1", "::1"} or host.startswith(
        ("10.", "192.168.", "172.")
    )
    if private:
        persistent["plugins.ml_commons.connector.private_ip_enabled"] = True
    if persistent:
        engine.request("PUT", "/_cluster/settings", {"persistent": persistent})

    name = f"bridge-{meta.index}"
    connector = rendered(
        "pipelines",
        "opensearch-connector",
        name=name,
        bridge_url=bridge_url.rstrip("/"),
        model=meta.model,
        dim=meta.dim,
        dim_text=str(meta.dim),
        api_key=api_key or "none",
    )
    connector_id = engine.request("POST", "/_plugins/_ml/connectors/_create", connector)[
        "connector_id"
    ]
    registered = engine.request(
        "POST",
        "/_plugins/_ml/models/_register",
        {"name": name, "function_name": "remote", "connector_id": connector_id},
        params={"deploy": "true"},
    )
    model_id = registered["model_id"]
    _wait_deployed(engine, model_id)
    pipeline = f"bridge-{meta.index}"
    engine.request(
        "PUT",
        f"/_ingest/pipeline/{pipeline}",
        rendered(
            "pipelines",
            "opensearch-ingest",
            model_id=model_id,
            text_field=meta.text_field,
            vector_field=meta.vector_field,
            dim=meta.dim,
            batch_size=batch_size,
        ),
    )
    engine.request("PUT", f"/{meta.index}/_settings", {"index.default_pipeline": pipeline})
    meta.pipeline, meta.model_id, meta.mode = pipeline, model_id, "native"


def _wait_deployed(engine: EngineClient, model_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = engine.request("GET", f"/_plugins/_ml/models/{model_id}").get("model_state")
        if state == "DEPLOYED":
            return
        if state == "DEPLOY_FAILED":
            break
        time.sleep(0.5)
    raise SetupError(f"ml-commons model {model_id} did not deploy (state {state})")


def setup_index(
    engine: EngineClient,
    embedder: EmbeddingClient,
    alias: str,
    dim: int,
    mode: Mode = "auto",
    bridge_url: str | None = None,
    api_key: str | None = None,
    text_field: str = "text",
    vector_field: str = "embedding",
    analyzer: str = "standard",
    index_type: str | None = None,
    shards: int = 1,
    replicas: int = 1,
    batch_size: int = 32,
) -> tuple[IndexMeta, list[str]]:
    """Create (or find) ``alias-dD`` and its wiring; returns its metadata and notes."""
    notes: list[str] = []
    info = engine.info()
    model = check_service_dimension(embedder, dim)
    index = physical_name(alias, dim)

    chosen: Literal["bridge", "native"]
    if mode == "bridge":
        chosen = "bridge"
    elif info.kind == "opensearch":
        chosen = "native"
    else:
        # Elasticsearch calls out from an ingest pipeline only with an inference endpoint,
        # which needs an Enterprise or trial license.
        if mode == "native" or info.license not in {"enterprise", "trial"}:
            reason = (
                f"Elasticsearch {info.version} has a {info.license} license: its ingest "
                "pipelines cannot call the bridge (inference endpoints need Enterprise "
                "or trial)"
            )
            if mode == "native":
                raise SetupError(reason + "; use --mode bridge")
            notes.append(reason + "; using bridge-side ingest (bridge ingest)")
        chosen = "bridge"
        if info.license in {"enterprise", "trial"} and mode != "bridge":
            notes.append(
                "native ingest through an Elasticsearch inference endpoint is not built yet; "
                "using bridge-side ingest"
            )
    if chosen == "native" and not bridge_url:
        raise SetupError("--bridge-url is needed for native ingest (the engine calls it)")

    existing = read_meta(engine, index)
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
        meta = IndexMeta(alias, dim, model, text_field, vector_field)
        body = mapping_body(info, meta, analyzer, index_type, shards, replicas)
        engine.request("PUT", f"/{index}", body)
        notes.append(f"created {index}")

    if chosen == "native" and meta.mode != "native":
        wire_native_opensearch(engine, meta, bridge_url or "", api_key, batch_size)
        notes.append(f"ingest pipeline {meta.pipeline} (model {meta.model_id}) is the default")
    write_meta(engine, meta)
    _point_alias(engine, alias, index, notes)
    return meta, notes


def _point_alias(engine: EngineClient, alias: str, index: str, notes: list[str]) -> None:
    current = engine.request("GET", f"/_alias/{alias}", missing_ok=True) or {}
    if index in current:
        return
    if current:
        notes.append(
            f"alias {alias} points at {', '.join(current)}; left as is "
            f"(bridge reindex moves it to {index})"
        )
        return
    if engine.exists(f"/{alias}") and not current:
        raise SetupError(f"an index named {alias} exists; the bridge needs {alias} as an alias")
    engine.request(
        "POST",
        "/_aliases",
        {"actions": [{"add": {"index": index, "alias": alias, "is_write_index": True}}]},
    )
    notes.append(f"alias {alias} -> {index}")
