"""One module per engine dialect; ``dialect_for`` picks it once from the detected engine."""

from __future__ import annotations

from bridge.clients.engine import EngineInfo
from bridge.index.dialects.base import Dialect
from bridge.index.dialects.elasticsearch import Elasticsearch
from bridge.index.dialects.opensearch import OpenSearch

_DIALECTS: dict[str, type[Dialect]] = {"elasticsearch": Elasticsearch, "opensearch": OpenSearch}


def dialect_for(info: EngineInfo) -> Dialect:
    """The dialect of the engine that ``info`` describes (from ``EngineClient.info``)."""
    return _DIALECTS[info.kind](info)


__all__ = ["Dialect", "dialect_for"]
