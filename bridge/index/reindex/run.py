"""Carrying out a reindex ``Plan``: create the new index, fill it, catch up, check, swap.

Every step saves its progress in the ``Checkpoint`` (the new index's
``_meta.bridge.reindex``), so ``Reindexer.run`` resumes where an interrupted run stopped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tqdm import tqdm

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.index.dialects import dialect_for
from bridge.index.meta import SetupError, write_meta
from bridge.index.reindex.checkpoint import Checkpoint, Phase
from bridge.index.reindex.copy import Copier
from bridge.index.reindex.plan import Plan, ReindexError
from bridge.index.reindex.verify import check_counts, check_sample
from bridge.index.setup import PIPELINE_BATCH_SIZE, check_service_dimension
from bridge.model.passages import PassageSpec

# Writers stamp bridge.indexed_at with their own clock: catch-up looks this far back.
CLOCK_MARGIN_MS = 30_000
CATCH_UP_PASSES = 3


@dataclass
class Summary:
    copied: int = 0
    caught_up: int = 0
    source_count: int = 0
    target_count: int = 0
    sample_min_cosine: float | None = None
    seconds: float = 0.0

    @property
    def docs_per_second(self) -> float:
        return self.copied / self.seconds if self.seconds else 0.0


class Reindexer:
    """Carries out a ``Plan``; ``run`` is safe to call again after a crash."""

    def __init__(
        self,
        engine: EngineClient,
        embedder: EmbeddingClient | None,
        plan: Plan,
        *,
        batch_size: int = 256,
        bridge_url: str | None = None,
        api_key: str | None = None,
        progress: bool = True,
    ) -> None:
        self.engine = engine
        self.embedder = embedder
        self.plan = plan
        self.batch_size = batch_size
        self.bridge_url = bridge_url
        self.api_key = api_key
        self.progress = progress
        self.source = plan.source
        self.target = plan.target
        self.summary = Summary()
        self._checkpoint: Checkpoint | None = None
        self.dialect = dialect_for(engine.info())
        self.copier = Copier(engine, embedder, plan, batch_size)

    # -- checkpoint -------------------------------------------------------------------
    @property
    def state(self) -> Checkpoint:
        assert self._checkpoint is not None
        return self._checkpoint

    def _save(self, **changes) -> None:
        for name, value in changes.items():
            setattr(self.state, name, value)
        self.target.reindex = self.state.stored()
        write_meta(self.engine, self.target)

    @property
    def _since(self) -> int:
        """Catch-up start (set when the fill ends)."""
        assert self.state.since is not None
        return self.state.since

    # -- steps --------------------------------------------------------------------------
    def run(self) -> Summary:
        started = time.perf_counter()
        if self.target.reindex is None:
            self._create_target()
        assert self.target.reindex is not None
        self._checkpoint = Checkpoint.from_stored(self.target.reindex)
        if self.state.phase is Phase.FILL:
            self._fill()
            self._save(phase=Phase.CATCH_UP, since=self.state.started_at - CLOCK_MARGIN_MS)
        if self.state.phase is Phase.CATCH_UP:
            self._catch_up_until_quiet()
            self._finish_target_settings()
            self._verify(before_swap=True)
            self._swap_alias()
        if self.state.phase is Phase.SWAPPED:
            time.sleep(1.0)  # bulks that resolved the alias just before the move land first
            self.summary.caught_up += self.copier.copy_since(self._since)
            self.summary.caught_up += self.copier.copy_missing()
            self._verify(before_swap=False)
            self.target.reindex = None
            write_meta(self.engine, self.target)
            if self.plan.delete_old:
                self.engine.request("DELETE", f"/{self.source.index}", missing_ok=True)
                if self.source.pipeline:
                    self.engine.request(
                        "DELETE", f"/_ingest/pipeline/{self.source.pipeline}", missing_ok=True
                    )
        self.summary.seconds = time.perf_counter() - started
        return self.summary

    def _drop_empty_target(self) -> None:
        """The plan found NAME-dD empty (made by ``bridge setup``): drop it, unless it has
        received documents since."""
        name = self.target.index
        count = self.engine.request("GET", f"/{name}/_count", missing_ok=True)
        if count and count["count"]:
            raise ReindexError(f"{name} received {count['count']} documents since the plan")
        self.engine.request("DELETE", f"/{name}", missing_ok=True)

    def _check_passages(self) -> None:
        """A new passage layout needs a service that splits documents (and the right width)."""
        passages = self.target.passages
        if passages == self.source.passages or not passages or self.embedder is None:
            return
        try:
            check_service_dimension(self.embedder, self.target.dim, PassageSpec(**passages))
        except SetupError as exc:
            raise ReindexError(str(exc)) from exc

    def _create_target(self) -> None:
        self._check_passages()
        if self.plan.replace_empty:
            self._drop_empty_target()
        settings = self.engine.request("GET", f"/{self.source.index}/_settings")
        index_settings = next(iter(settings.values()))["settings"]["index"]
        mapping = self.engine.request("GET", f"/{self.source.index}/_mapping")
        props = next(iter(mapping.values()))["mappings"].get("properties", {})
        text_props = props.get(self.source.text_field, {})
        vector_props = props.get(self.source.vector_field, {})
        if vector_props.get("type") == "nested":  # passages: the vector inside
            vector_props = vector_props.get("properties", {}).get("embedding", {})
        self.target.reindex = Checkpoint(
            source=self.source.index,
            method=self.plan.method,
            phase=Phase.FILL,
            started_at=int(time.time() * 1000),
            refresh_interval=index_settings.get("refresh_interval"),
        ).stored()
        try:
            body = self.dialect.mapping_body(
                self.target,
                analyzer=text_props.get("analyzer", "standard"),
                index_type=(vector_props.get("index_options") or {}).get("type"),
                shards=int(index_settings.get("number_of_shards", 1)),
                replicas=int(index_settings.get("number_of_replicas", 1)),
            )
        except SetupError as exc:
            raise ReindexError(str(exc)) from exc
        body["settings"]["index"]["refresh_interval"] = "-1"  # faster fill; restored after
        self.engine.request("PUT", f"/{self.target.index}", body)
        if self.source.mode == "native":
            if not self.bridge_url:
                raise ReindexError("--bridge-url is needed: the new index embeds at ingest")
            # The pipeline batches as setup's does, not by the copy's page size (--batch).
            self.dialect.wire_native_ingest(
                self.engine, self.target, self.bridge_url, self.api_key, PIPELINE_BATCH_SIZE
            )
        write_meta(self.engine, self.target)

    def _fill(self) -> None:
        bar = tqdm(
            total=self.plan.documents,
            initial=self.state.copied,
            unit="doc",
            desc=f"{self.source.index} -> {self.target.index}",
            disable=not self.progress,
        )
        try:
            if self.plan.method == "engine":
                copied = self.copier.on_engine(self.state.task, self._remember_task, bar)
                self.summary.copied += copied
                self._save(copied=self.summary.copied)
            else:
                for copied, cursor in self.copier.pages_copied(None, self.state.cursor):
                    self.summary.copied += copied
                    self._save(cursor=cursor, copied=self.state.copied + copied)
                    bar.update(copied)
        finally:
            bar.close()

    def _catch_up_until_quiet(self) -> None:
        for _ in range(CATCH_UP_PASSES):
            mark = int(time.time() * 1000)
            copied = self.copier.copy_since(self._since)
            self.summary.caught_up += copied
            self._save(since=mark - CLOCK_MARGIN_MS)
            if copied == 0:
                break

    def _finish_target_settings(self) -> None:
        interval = self.state.refresh_interval
        self.engine.request(
            "PUT", f"/{self.target.index}/_settings", {"index": {"refresh_interval": interval}}
        )
        self.copier.refresh(self.target.index)

    def _remember_task(self, task: str) -> None:
        self._save(task=task)

    def _verify(self, before_swap: bool) -> None:
        """Counts (and, before the move, sampled vectors) must agree."""
        counts = check_counts(self.copier, self._since, before_swap)
        self.summary.source_count, self.summary.target_count = counts
        if before_swap:
            self.summary.sample_min_cosine = check_sample(self.copier, self._since)

    def _swap_alias(self) -> None:
        alias = self.plan.alias
        mark = int(time.time() * 1000)
        self.engine.request(
            "POST",
            "/_aliases",
            {
                "actions": [
                    {"remove": {"index": self.source.index, "alias": alias}},
                    {"add": {"index": self.target.index, "alias": alias, "is_write_index": True}},
                ]
            },
        )
        self._save(phase=Phase.SWAPPED, since=min(self._since, mark - CLOCK_MARGIN_MS))
