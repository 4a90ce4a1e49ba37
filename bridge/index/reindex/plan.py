"""Choosing what ``bridge reindex`` does: a pure function of facts gathered beforehand.

``plan(facts, request)`` does no I/O: every method choice and every refusal is decided
from ``Facts`` (see ``facts.gather``), so each can be tested without an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from bridge.clients.embedding import ModelInfo
from bridge.index.meta import IndexMeta, describe_layout, layout_tag, physical_name
from bridge.index.reindex.checkpoint import Checkpoint

Method = Literal["engine", "scroll", "re-embed"]
Prefer = Literal["auto", "from-vectors", "re-embed"]
SAME: Literal["same"] = "same"  # Request.passages: keep the source's layout

SAMPLE_SIZE = 20  # documents whose vectors are checked before and after the swap


class ReindexError(RuntimeError):
    """The reindex cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Request:
    alias: str
    dim: int
    prefer: Prefer = "auto"
    delete_old: bool = False
    # The new layout: ``{"max_tokens", "overlap"}``, None for one vector per document.
    passages: dict | None | Literal["same"] = SAME

    def layout(self, source: IndexMeta) -> dict | None:
        """The new index's passages (None: one vector per document)."""
        return source.passages if self.passages == SAME else self.passages

    def converts(self, source: IndexMeta) -> bool:
        """The layout changes: the bodies are split (or joined) and embedded again."""
        return self.layout(source) != source.passages

    def target_name(self, source: IndexMeta) -> str:
        """``NAME-dD`` with the source's layout tag, or the new layout's when it changes
        (so a converted index and its source coexist at one dimension)."""
        layout = layout_tag(self.layout(source)) if self.converts(source) else source.layout
        return physical_name(self.alias, self.dim, layout)


@dataclass
class Facts:
    """What the planner needs from the engine and the embedding service."""

    current: IndexMeta | None  # the metadata behind the alias
    alias_indices: set[str]  # the physical indices the alias points at
    target: IndexMeta | None  # the metadata of the new index, if it exists
    target_exists: bool  # the new index exists (with or without bridge metadata)
    resumed_source: IndexMeta | None  # the source named by the current index's checkpoint
    counts: dict[str, int]  # documents per index the plan may read from
    service: ModelInfo | None  # the embedding service's model, if it answered
    service_error: str | None  # why not, when it did not
    scripted_reindex: bool  # the engine can truncate in a scripted _reindex
    now: float  # epoch seconds, the new index's created_at


@dataclass
class Plan:
    alias: str
    source: IndexMeta
    target: IndexMeta
    method: Method
    reason: str
    documents: int
    delete_old: bool
    resume: Checkpoint | None = None
    notes: list[str] = field(default_factory=list)
    replace_empty: bool = False  # the new index exists, empty: dropped before it is created

    def lines(self) -> list[str]:
        how = {
            "engine": "truncate + re-normalise on the engine (scripted _reindex), no GPU work",
            "scroll": "truncate + re-normalise in the bridge (paged read + bulk), no GPU work",
            "re-embed": "re-embed the text through the embedding service",
        }[self.method]
        lines = [
            f"alias {self.alias}: {self.source.index} ({self.source.dim} dims, "
            f"{self.documents} documents) -> {self.target.index} ({self.target.dim} dims)",
            f"method: {self.method}: {how} ({self.reason})",
        ]
        if self.source.passages != self.target.passages:
            lines.append(
                f"layout: {describe_layout(self.source.passages)} -> "
                f"{describe_layout(self.target.passages)} (each body split again and every "
                f"passage embedded; kNN then scores a document by its best passage)"
            )
        if self.resume:
            lines.append(
                f"resume: phase {self.resume.phase.value}, {self.resume.copied} copied so far"
            )
        if self.source.mode == "native":
            lines.append(f"ingest pipeline for {self.target.index} (native mode, as the source)")
        lines += [
            "catch-up: documents written meanwhile (bridge.indexed_at) are copied before and "
            "after the alias moves",
            f"checks: document counts and {SAMPLE_SIZE} sampled vectors",
            f"alias {self.alias} moves atomically to {self.target.index}; {self.source.index} is "
            + ("deleted" if self.delete_old else "kept (delete it later, or pass --delete-old)"),
        ]
        return lines + [f"note: {n}" for n in self.notes]


def truncation_problem(
    source: IndexMeta, dim: int, info: ModelInfo | None, service_error: str | None
) -> str | None:
    """Why the wider vectors cannot simply be truncated to ``dim`` (None: they can)."""
    if source.dim <= dim:
        return f"{source.dim}-dimensional vectors cannot give {dim}"
    if info is None:
        return (
            f"the service cannot confirm that {source.model} allows {dim} dimensions "
            f"({service_error})"
        )
    if info.name != source.model:
        return f"the service serves {info.name!r}, the vectors are from {source.model!r}"
    if not info.min_dimension <= dim <= info.max_dimension:
        return range_problem(info, dim)
    return None


def range_problem(info: ModelInfo, dim: int) -> str:
    """Why the service cannot give ``dim`` values, and the way out when there is one."""
    why = f"{info.name} gives {info.min_dimension}..{info.max_dimension} dimensions, not {dim}"
    if dim < info.min_dimension == info.native_dimension:
        why += (
            f" ({info.name} is not trained for shorter vectors; to truncate anyway, restart "
            "the service with bridge serve --allow-truncation, then run this again)"
        )
    return why


def _source_and_resumed(facts: Facts, request: Request) -> tuple[IndexMeta, IndexMeta | None]:
    """The index to copy from, and the new index's metadata when resuming a run."""
    alias, current = request.alias, facts.current
    if current is None:
        raise ReindexError(f"{alias} was not set up by the bridge (or does not exist)")
    if current.index not in facts.alias_indices:
        raise ReindexError(f"{alias} is not an alias of {current.index}; run bridge setup")
    if current.reindex:  # the alias moved to the new index, the run stopped before the end
        source = facts.resumed_source
        if source is None:
            raise ReindexError(f"{current.reindex['source']} is gone; nothing to resume")
        if request.target_name(source) == current.index:
            return source, current
        raise ReindexError(
            f"a reindex of {alias} from {source.index} into {current.index} stopped after "
            "the alias moved: run it again as it was started, to finish it"
        )
    target_name = request.target_name(current)
    if current.index == target_name:
        raise ReindexError(
            f"{alias} already serves {request.dim}-dimensional vectors, "
            f"{describe_layout(current.passages)}"
        )
    existing = facts.target
    if existing is not None and (existing.reindex or {}).get("source") == current.index:
        return current, existing
    if facts.target_exists and not empty_leftover(facts, target_name):
        raise ReindexError(
            f"{target_name} already exists (kept from an earlier run?): it would be stale; "
            f"drop it (bridge indexes {alias} --drop {target_name}) and run again"
        )
    return current, None


def empty_leftover(facts: Facts, name: str) -> bool:
    """``name`` was made by the bridge (``bridge setup`` at that dimension, say), holds
    nothing and no run is filling it: the reindex replaces it with the index it would
    create. An index the bridge did not make is never replaced."""
    made = facts.target is not None and not facts.target.reindex
    return made and facts.target_exists and facts.counts.get(name) == 0


def plan(facts: Facts, request: Request) -> Plan:
    """What ``bridge reindex`` will do, or a ``ReindexError`` saying why it cannot."""
    source, existing = _source_and_resumed(facts, request)
    dim, prefer, info = request.dim, request.prefer, facts.service
    problem = truncation_problem(source, dim, info, facts.service_error)
    notes: list[str] = []
    method: Method
    resume = Checkpoint.from_stored(existing.reindex) if existing and existing.reindex else None
    converts = request.converts(source)
    if resume is not None:
        method, reason = resume.method, "resuming the interrupted run"  # type: ignore[assignment]
    elif converts:
        if prefer == "from-vectors":
            raise ReindexError(
                f"--from-vectors is not possible: {describe_layout(source.passages)} -> "
                f"{describe_layout(request.layout(source))} needs the text embedded again"
            )
        method = "re-embed"
        reason = "a new layout: the bodies are split into passages again and embedded"
    elif prefer == "re-embed":
        method, reason = "re-embed", "--re-embed"
    elif problem is None or (prefer == "from-vectors" and info is None and source.dim > dim):
        if problem:
            notes.append(problem + "; truncating anyway (--from-vectors)")
        reason = (
            f"the service gives {info.name} at {dim} dimensions as the first {dim} values "
            f"of its {source.dim}, re-normalised"
            if info is not None
            else "--from-vectors"
        )
        if facts.scripted_reindex:
            method = "engine"
        else:
            method = "scroll"
            reason += "; the engine lacks the reindex/painless modules, so the bridge truncates"
    elif prefer == "from-vectors":
        fix = "" if "--allow-truncation" in str(problem) else "; use --re-embed"
        raise ReindexError(f"--from-vectors is not possible: {problem}{fix}")
    else:
        method, reason = "re-embed", str(problem)
    if method == "re-embed" or source.mode == "native":
        if info is None:
            why = "to re-embed" if method == "re-embed" else "the new index embeds at ingest"
            raise ReindexError(f"the embedding service is needed ({why}): {facts.service_error}")
        if not info.min_dimension <= dim <= info.max_dimension:
            raise ReindexError(range_problem(info, dim))
    model = info.name if (method == "re-embed" and info is not None) else source.model
    target = existing or replace(
        source,
        dim=dim,
        model=model,
        passages=request.layout(source),
        layout=layout_tag(request.layout(source)) if converts else source.layout,
        mode="bridge",
        pipeline=None,
        model_id=None,
        created_at=facts.now,
        reindex=None,
    )
    documents = facts.counts[source.index]
    replace_empty = existing is None and empty_leftover(facts, target.index)
    if replace_empty:
        notes.append(f"{target.index} exists and is empty: it is replaced")
    return Plan(
        request.alias, source, target, method, reason, documents, request.delete_old, resume,
        notes, replace_empty,
    )  # fmt: skip
