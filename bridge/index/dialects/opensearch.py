"""OpenSearch: ``knn_vector`` mappings, native ingest through ml-commons, engine-side hybrid.

Native ingest is a connector to the bridge -> a remote model -> an ``ml_inference``
pipeline set as the index's default pipeline. Hybrid search is one ``hybrid`` query with an
inline search pipeline (RRF or normalised linear combination).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TYPE_CHECKING, Literal

from bridge.clients.addresses import host_is_private
from bridge.clients.engine import EngineClient
from bridge.index.dialects.base import Dialect, IngestMode, passage_inner_hits, render_mapping
from bridge.index.meta import SetupError
from bridge.index.templates import rendered

if TYPE_CHECKING:
    from bridge.index.meta import IndexMeta
    from bridge.index.search import SearchOptions

log = logging.getLogger(__name__)


class OpenSearch(Dialect):
    def mapping_body(
        self,
        meta: IndexMeta,
        analyzer: str,
        index_type: str | None,
        shards: int,
        replicas: int,
    ) -> dict:
        body = render_mapping(
            "opensearch", meta, analyzer, shards, replicas, space_type="cosinesimil"
        )
        if meta.passages:
            # OpenSearch 3 keeps vectors out of the stored _source ("derived source") and
            # puts them back when reading; a reindex script sees placeholders in nested
            # passages instead of their vectors. Stored as they are, truncation works.
            body["settings"]["index"]["knn.derived_source.enabled"] = False
        return body

    def choose_ingest(
        self, engine: EngineClient, mode: Literal["auto", "native"]
    ) -> tuple[IngestMode, list[str]]:
        return "native", []

    def wire_native_ingest(
        self,
        engine: EngineClient,
        meta: IndexMeta,
        bridge_url: str,
        api_key: str | None,
        batch_size: int,
    ) -> None:
        """ml-commons connector -> remote model -> ``ml_inference`` pipeline
        (default_pipeline). The bridge splits and embeds, as in bridge-side ingest, so a
        document gets the same passages and vectors in both modes (OpenSearch's
        ``text_chunking`` counts another tokenizer's tokens)."""
        _trust_bridge(engine, bridge_url)
        name = f"bridge-{meta.index}"
        connector = rendered(
            "pipelines",
            "opensearch-connector",
            name=name,
            bridge_url=bridge_url.rstrip("/"),
            dim=meta.dim,
            api_key=api_key or "none",
            request_body=_request_body(meta),
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
                title_field=meta.title_field or "no title",
                # mustache: the title's text, or "" when the document has none
                title_value="{{{" + meta.title_field + "}}}" if meta.title_field else "",
                vector_field=meta.vector_field,
                output_path="data[0].passages" if meta.passages else "data[0].embedding",
                dim=meta.dim,
            ),
        )
        engine.request("PUT", f"/{meta.index}/_settings", {"index.default_pipeline": pipeline})
        meta.pipeline, meta.model_id, meta.mode = pipeline, model_id, "native"

    def knn_body(
        self,
        field: str,
        vector: list[float],
        k: int,
        filter: dict | None,
        nested: str | None = None,
    ) -> dict:
        knn: dict = {"vector": vector, "k": k}
        if not nested:
            if filter:
                knn["filter"] = filter
            return {"query": {"knn": {field: knn}}}
        # A document scores as its best passage. The filter names document fields, which
        # the passages (nested documents) do not have: it applies to the documents found.
        query: dict = {
            "nested": {
                "path": nested,
                "score_mode": "max",
                "query": {"knn": {field: knn}},
                "inner_hits": passage_inner_hits(nested),
            }
        }
        if filter:
            query = {"bool": {"must": query, "filter": filter}}
        return {"query": query}

    def hybrid_bodies(
        self,
        lexical: dict,
        field: str,
        vector: list[float],
        options: SearchOptions,
        nested: str | None = None,
    ) -> list[dict]:
        if options.fusion == "rrf":
            processor = {
                "score-ranker-processor": {
                    "combination": {"technique": "rrf", "rank_constant": options.rrf_k}
                }
            }
        else:
            processor = {
                "normalization-processor": {
                    "normalization": {"technique": options.normalization},
                    "combination": {
                        "technique": "arithmetic_mean",
                        "parameters": {"weights": list(options.weights)},
                    },
                }
            }
        semantic = self.knn_body(field, vector, options.window, options.filter, nested)["query"]
        return [
            {
                "query": {
                    "hybrid": {
                        "pagination_depth": options.window,
                        "queries": [lexical, semantic],
                    }
                },
                "search_pipeline": {"phase_results_processors": [processor]},
            }
        ]


def _request_body(meta: IndexMeta) -> str:
    """The connector's request: one document (ml_inference calls once per document) under
    its title; ml-commons fills the ``${parameters.*}`` strings JSON-escaped."""
    body = {
        "input": ["${parameters.input}"],
        "titles": ["${parameters.titles}"],
        "model": meta.model,
        "dimensions": meta.dim,
        "input_type": "document",
        "encoding_format": "float",
    }
    if meta.passages:
        body["passages"] = meta.passages
    return json.dumps(body)


def _endpoint_regex(bridge_url: str) -> str:
    """The narrowest ml-commons trusted-endpoint pattern that admits the bridge."""
    return "^" + re.escape(bridge_url.rstrip("/")) + "/.*$"


def _trust_bridge(engine: EngineClient, bridge_url: str) -> None:
    """Let ml-commons connectors call ``bridge_url`` (trusted endpoints, private IPs)."""
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
    private, why = host_is_private(bridge_url)
    if private:
        log.info("ml-commons may call private addresses: %s", why)
        persistent["plugins.ml_commons.connector.private_ip_enabled"] = True
    if persistent:
        engine.request("PUT", "/_cluster/settings", {"persistent": persistent})


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
