"""Elasticsearch: ``dense_vector`` mappings, bridge-side ingest, kNN fused in the bridge.

Native ingest, with any licence, goes through the bridge's own ingest plugin
(``plugins/elasticsearch``, ``bridge/plugin``): its ``bridge_embedding`` processor in the
index's default pipeline calls the bridge. Without the plugin on every ingest node,
``auto`` falls back to bridge-side ingest. Hybrid search runs the BM25 and kNN halves
separately and the bridge fuses them, which works with a basic licence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from bridge.clients.engine import EngineClient
from bridge.index.dialects.base import Dialect, IngestMode, passage_inner_hits, render_mapping
from bridge.index.meta import SetupError
from bridge.plugin.build import PLUGIN_NAME
from bridge.plugin.pipeline import PluginMissing, nodes_without_plugin, wire_native

if TYPE_CHECKING:
    from bridge.index.meta import IndexMeta
    from bridge.index.search import SearchOptions


class Elasticsearch(Dialect):
    def mapping_body(
        self,
        meta: IndexMeta,
        analyzer: str,
        index_type: str | None,
        shards: int,
        replicas: int,
    ) -> dict:
        index_type = index_type or "int8_hnsw"
        if index_type == "bbq_hnsw" and meta.dim < 64:
            raise SetupError(f"bbq_hnsw needs at least 64 dimensions; --dim is {meta.dim}")
        return render_mapping(
            "elasticsearch", meta, analyzer, shards, replicas,
            similarity="cosine", index_type=index_type,
        )  # fmt: skip

    def choose_ingest(
        self, engine: EngineClient, mode: Literal["auto", "native"]
    ) -> tuple[IngestMode, list[str]]:
        """Native when every ingest node has the bridge's ingest plugin (any licence)."""
        missing = nodes_without_plugin(engine)
        if not missing:
            return "native", [f"the {PLUGIN_NAME} plugin is on every ingest node"]
        reason = (
            f"the {PLUGIN_NAME} plugin is missing on ingest node(s) {', '.join(missing)} "
            "(bridge plugin build, then install it on every ingest node: "
            "docs/elasticsearch-plugin.md)"
        )
        if mode == "native":
            raise SetupError(reason + "; or use --mode bridge")
        return "bridge", [reason + "; using bridge-side ingest (bridge ingest)"]

    def wire_native_ingest(
        self,
        engine: EngineClient,
        meta: IndexMeta,
        bridge_url: str,
        api_key: str | None,
        batch_size: int,
    ) -> None:
        """The plugin's pipeline as the index's default_pipeline. Its bridge key is not in
        the pipeline (anyone who reads pipelines would see it): the plugin reads the
        keystore setting ``bridge.api_key`` on each node."""
        try:
            meta.pipeline = wire_native(
                engine, meta.index, meta, [bridge_url.rstrip("/")], batch_size=batch_size
            )
        except PluginMissing as exc:
            raise SetupError(str(exc)) from exc
        meta.mode = "native"

    def knn_body(
        self,
        field: str,
        vector: list[float],
        k: int,
        filter: dict | None,
        nested: str | None = None,
    ) -> dict:
        knn: dict = {
            "field": field,
            "query_vector": vector,
            "k": k,
            "num_candidates": max(k * 2, 100),
        }
        if filter:
            knn["filter"] = filter
        if nested:  # a nested kNN scores a document by its best passage
            knn["inner_hits"] = passage_inner_hits(nested)
        return {"knn": knn}

    def hybrid_bodies(
        self,
        lexical: dict,
        field: str,
        vector: list[float],
        options: SearchOptions,
        nested: str | None = None,
    ) -> list[dict]:
        return [
            {"query": lexical},
            self.knn_body(field, vector, options.window, options.filter, nested),
        ]

    def vector_source_params(self) -> dict | None:
        # Elasticsearch 9 leaves vectors out of _source unless asked; older ones answer 400
        # to the parameter and the caller drops it.
        return {"_source_exclude_vectors": "false"}
