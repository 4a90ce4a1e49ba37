"""Elasticsearch: ``dense_vector`` mappings, bridge-side ingest, kNN fused in the bridge.

Its ingest pipelines call out only through an inference endpoint (Enterprise or trial
license), which the bridge does not wire yet, so ``--mode native`` is refused with the
reason; ``wire_native_ingest`` is where that wiring will go. Hybrid search runs the BM25
and kNN halves separately and the bridge fuses them, which works with a basic license.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Literal

from bridge.index.dialects.base import Dialect, IngestMode
from bridge.index.meta import SetupError
from bridge.index.templates import rendered

if TYPE_CHECKING:
    from bridge.index.meta import IndexMeta
    from bridge.index.search import SearchOptions

_CALLOUT_LICENSES = {"enterprise", "trial"}


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
        return rendered(
            "mappings",
            "elasticsearch",
            similarity="cosine",
            index_type=index_type,
            dim=meta.dim,
            text_field=meta.text_field,
            vector_field=meta.vector_field,
            analyzer=analyzer,
            shards=shards,
            replicas=replicas,
            meta={"bridge": asdict(meta)},
        )

    def choose_ingest(self, mode: Literal["auto", "native"]) -> tuple[IngestMode, list[str]]:
        info = self.info
        notes: list[str] = []
        if mode == "native" or info.license not in _CALLOUT_LICENSES:
            reason = (
                f"Elasticsearch {info.version} has a {info.license} license: its ingest "
                "pipelines cannot call the bridge (inference endpoints need Enterprise "
                "or trial)"
            )
            if mode == "native":
                raise SetupError(reason + "; use --mode bridge")
            notes.append(reason + "; using bridge-side ingest (bridge ingest)")
        if info.license in _CALLOUT_LICENSES:
            notes.append(
                "native ingest through an Elasticsearch inference endpoint is not built yet; "
                "using bridge-side ingest"
            )
        return "bridge", notes

    def knn_body(self, field: str, vector: list[float], k: int, filter: dict | None) -> dict:
        knn: dict = {
            "field": field,
            "query_vector": vector,
            "k": k,
            "num_candidates": max(k * 2, 100),
        }
        if filter:
            knn["filter"] = filter
        return {"knn": knn}

    def hybrid_bodies(
        self, lexical: dict, field: str, vector: list[float], options: SearchOptions
    ) -> list[dict]:
        return [
            {"query": lexical},
            self.knn_body(field, vector, options.window, options.filter),
        ]

    def vector_source_params(self) -> dict | None:
        # Elasticsearch 9 leaves vectors out of _source unless asked; older ones answer 400
        # to the parameter and the caller drops it.
        return {"_source_exclude_vectors": "false"}
