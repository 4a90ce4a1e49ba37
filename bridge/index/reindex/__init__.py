"""``bridge reindex``: move alias NAME to a new vector dimension, or a new layout (one
vector per document <-> passages), with no downtime, no loss.

The new index ``NAME-dD`` (``NAME-dD-LAYOUT`` when the layout changes, ``meta.layout_tag``)
is filled while the alias keeps serving the old one:

- *truncation*: Qwen3-Embedding vectors are Matryoshka-trained, so the first D values of a
  wider vector of the same model, re-normalised, are its D-dimensional embedding. The
  engine does it in a scripted ``_reindex`` when it has the reindex and painless modules
  (``engine``), else the bridge pages through the old index and bulks (``scroll``). No GPU.
- *re-embed*: the text goes through the embedding service again (a smaller source, another
  model, a new layout, or ``--re-embed``), bridge-side or through the new index's native
  pipeline.

Writes keep going to the old index through the alias. Catch-up passes copy what was
written since the run began (``bridge.indexed_at``, set by ``bridge ingest``), then the
alias moves in one atomic ``_aliases`` call, and a last pass copies what arrived just before
the move. The progress is a checkpoint in the new index's ``_meta.bridge.reindex``: a run
that crashed or was interrupted resumes where it stopped when started again; every copy is
keyed by ``_id``, so nothing is duplicated.

The package: ``facts`` gathers what the engine and service say, ``plan`` decides (no I/O),
``checkpoint`` is the typed progress, ``run`` carries a plan out, with ``copy`` and
``verify``.
"""

from __future__ import annotations

from typing import Literal

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.index.meta import read_meta
from bridge.index.reindex.copy import truncate
from bridge.index.reindex.facts import gather
from bridge.index.reindex.plan import SAME, Plan, Prefer, ReindexError, Request, plan
from bridge.index.reindex.run import Reindexer, Summary


def plan_reindex(
    engine: EngineClient,
    embedder: EmbeddingClient | None,
    alias: str,
    dim: int | None = None,
    prefer: Prefer = "auto",
    delete_old: bool = False,
    passages: dict | None | Literal["same"] = SAME,
) -> Plan:
    """Work out what ``bridge reindex`` would do (nothing is changed). ``dim`` None: the
    alias's; ``passages``: the new layout (None: one vector per document)."""
    current = read_meta(engine, alias)
    if dim is None:
        dim = current.dim if current else 0  # no index: the plan says so
    request = Request(alias, dim, prefer, delete_old, passages)
    return plan(gather(engine, embedder, request, current), request)


__all__ = ["SAME", "Plan", "ReindexError", "Reindexer", "Summary", "plan_reindex", "truncate"]
