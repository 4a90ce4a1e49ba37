"""The protocol every engine dialect implements: mapping, ingest wiring, queries, reindex."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict
from typing import TYPE_CHECKING, Literal

from bridge.clients.engine import EngineClient, EngineInfo
from bridge.index.meta import SetupError
from bridge.index.templates import rendered

if TYPE_CHECKING:
    from bridge.index.meta import IndexMeta
    from bridge.index.search import SearchOptions

IngestMode = Literal["bridge", "native"]
PASSAGE_HITS = "best_passage"  # the inner_hits name of a hit's best passage


def passage_inner_hits(nested: str) -> dict:
    """The best passage of each hit, offsets only."""
    return {
        "name": PASSAGE_HITS,
        "size": 1,
        "_source": False,
        "fields": [f"{nested}.start", f"{nested}.end"],
    }


def render_mapping(
    template: str, meta: IndexMeta, analyzer: str, shards: int, replicas: int, **engine_params
) -> dict:
    """The engine's mapping template filled from ``meta`` and the index settings; with
    passages, the vector moves into nested passage objects with their offsets."""
    body = rendered(
        "mappings",
        template,
        dim=meta.dim,
        text_field=meta.text_field,
        vector_field=meta.vector_field,
        analyzer=analyzer,
        shards=shards,
        replicas=replicas,
        meta={"bridge": asdict(meta)},
        **engine_params,
    )
    properties = body["mappings"]["properties"]
    if meta.title_field and meta.title_field not in properties:
        properties[meta.title_field] = {"type": "text", "analyzer": analyzer}
    if meta.passages:
        offset = {"type": "integer", "index": False}
        properties[meta.vector_field] = {
            "type": "nested",
            "properties": {
                "embedding": properties[meta.vector_field],
                "start": offset,
                "end": offset,
            },
        }
    return body


class Dialect(ABC):
    """What differs between engines; everything else is shared REST."""

    def __init__(self, info: EngineInfo) -> None:
        self.info = info

    # -- index ------------------------------------------------------------------------
    @abstractmethod
    def mapping_body(
        self,
        meta: IndexMeta,
        analyzer: str,
        index_type: str | None,
        shards: int,
        replicas: int,
    ) -> dict:
        """The body of ``PUT /INDEX`` for ``meta`` (settings, mappings, ``_meta``)."""

    # -- ingest -----------------------------------------------------------------------
    @abstractmethod
    def choose_ingest(
        self, engine: EngineClient, mode: Literal["auto", "native"]
    ) -> tuple[IngestMode, list[str]]:
        """The ingest mode for ``--mode auto|native`` and notes on the choice; raises
        ``SetupError`` when native ingest is asked for and cannot be had."""

    def wire_native_ingest(
        self,
        engine: EngineClient,
        meta: IndexMeta,
        bridge_url: str,
        api_key: str | None,
        batch_size: int,
    ) -> None:
        """Make the engine embed at ingest (a default pipeline that calls the bridge) and
        record it in ``meta``."""
        raise SetupError(f"native ingest is not built for {self.info.kind}; use --mode bridge")

    # -- search -----------------------------------------------------------------------
    @abstractmethod
    def knn_body(
        self,
        field: str,
        vector: list[float],
        k: int,
        filter: dict | None,
        nested: str | None = None,
    ) -> dict:
        """A search body (without ``size``) whose hits are the ``k`` nearest documents.
        ``nested``: the path of passage objects holding ``field``; a document then scores
        as its best passage, which the hit's ``inner_hits`` names (``PASSAGE_HITS``)."""

    @abstractmethod
    def hybrid_bodies(
        self,
        lexical: dict,
        field: str,
        vector: list[float],
        options: SearchOptions,
        nested: str | None = None,
    ) -> list[dict]:
        """One body when the engine fuses BM25 and kNN itself; two (lexical, semantic)
        when the bridge fuses their results."""

    # -- reindex ----------------------------------------------------------------------
    def vector_source_params(self) -> dict | None:
        """Query parameters that make ``_search`` return vectors in ``_source``."""
        return None

    def has_scripted_reindex(self, engine: EngineClient) -> bool:
        """Whether every node has the reindex and painless modules (``_reindex`` with a
        script), so truncation runs on the engine."""
        answer = engine.request(
            "GET", "/_nodes/plugins", params={"filter_path": "nodes.*.modules.name"}
        )
        names: list[set[str]] = []
        for node in (answer or {}).get("nodes", {}).values():
            names.append({m["name"] for m in node.get("modules", [])})
        modules = set.intersection(*names) if names else set()
        return {"reindex", "lang-painless"} <= modules
