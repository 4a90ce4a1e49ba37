"""Wiring an Elasticsearch index to the plugin: pipeline body, default_pipeline, node check."""

from __future__ import annotations

from typing import Protocol

from bridge.clients.engine import EngineClient
from bridge.plugin.build import PLUGIN_NAME

PROCESSOR = "bridge_embedding"


class PluginMissing(RuntimeError):
    """Some ingest node lacks the plugin; native ingest would fail there."""


class IndexTarget(Protocol):
    """What the wiring reads from the index metadata (bridge.index.setup.IndexMeta fits)."""

    dim: int
    model: str
    text_field: str
    vector_field: str
    title_field: str | None
    passages: dict | None


def pipeline_body(
    meta: IndexTarget,
    service_urls: list[str],
    *,
    batch_size: int = 64,
    linger_ms: int = 5,
    timeout_ms: int = 30000,
) -> dict:
    """The ingest pipeline: title and body sent as bridge-side ingest sends them, so the
    bridge makes the same passages and vectors."""
    passages = meta.passages or {"max_tokens": 0, "overlap": 0}
    return {
        "description": f"{meta.model} vectors ({meta.dim} dims) from the embedding bridge",
        "processors": [
            {
                PROCESSOR: {
                    "url": list(service_urls),
                    "model": meta.model,
                    "dimensions": meta.dim,
                    "input_type": "document",
                    "field": meta.text_field,
                    "title_field": meta.title_field or "",
                    "passage_tokens": passages["max_tokens"],
                    "passage_overlap": passages["overlap"],
                    "target_field": meta.vector_field,
                    "batch_size": batch_size,
                    "linger_ms": linger_ms,
                    "timeout_ms": timeout_ms,
                }
            }
        ],
    }


def nodes_without_plugin(engine: EngineClient) -> list[str]:
    """Names of the ingest nodes that lack the plugin (empty: native ingest works)."""
    nodes = engine.request("GET", "/_nodes/plugins")["nodes"]
    return sorted(
        node["name"]
        for node in nodes.values()
        if "ingest" in node.get("roles", ["ingest"])
        and PLUGIN_NAME not in {p["name"] for p in node.get("plugins", [])}
    )


def wire_native(
    engine: EngineClient, index: str, meta: IndexTarget, service_urls: list[str], **options
) -> str:
    """Puts the pipeline and makes it ``index``'s default_pipeline; returns its name.

    Raises ``PluginMissing`` (nothing changed) when an ingest node lacks the plugin."""
    missing = nodes_without_plugin(engine)
    if missing:
        raise PluginMissing(
            f"the {PLUGIN_NAME} plugin is missing on ingest node(s) {', '.join(missing)}: "
            "build it with `bridge plugin build --version <cluster version>`, install it on "
            "every ingest node (docs/elasticsearch-plugin.md), or use bridge-side ingest"
        )
    name = f"{index}-bridge-embedding"
    engine.request("PUT", f"/_ingest/pipeline/{name}", pipeline_body(meta, service_urls, **options))
    engine.request("PUT", f"/{index}/_settings", {"index": {"default_pipeline": name}})
    return name
