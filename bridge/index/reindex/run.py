"""Carrying out a reindex ``Plan``: create the new index, fill it, catch up, check, swap.

Every step saves its progress in the ``Checkpoint`` (the new index's
``_meta.bridge.reindex``), so ``Reindexer.run`` resumes where an interrupted run stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from tqdm import tqdm

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.clients.errors import ClientError
from bridge.index.bulk import BulkItem, BulkResult, BulkWriter, Failure
from bridge.index.dialects import dialect_for
from bridge.index.ingest import default_text_fields, embed_items, joined_text, prepare_item
from bridge.index.meta import SetupError, write_meta
from bridge.index.reindex.checkpoint import Checkpoint, Phase
from bridge.index.reindex.plan import SAMPLE_SIZE, Plan, ReindexError

# Writers stamp bridge.indexed_at with their own clock: catch-up looks this far back.
CLOCK_MARGIN_MS = 30_000
CATCH_UP_PASSES = 3
REEMBED_BATCH = 64  # documents per embedding request when re-embedding

TRUNCATE_SCRIPT = """
def v = ctx._source[params.field];
if (v == null || v.size() < params.dim) { throw new IllegalArgumentException(
  'document ' + ctx._id + ' has no vector of at least ' + params.dim + ' values'); }
double norm = 0;
List out = new ArrayList();
for (int i = 0; i < params.dim; i++) {
  double x = ((Number) v[i]).doubleValue(); out.add(x); norm += x * x; }
norm = Math.sqrt(norm);
for (int i = 0; i < params.dim; i++) { out.set(i, out.get(i) / norm); }
ctx._source[params.field] = out;
if (ctx._source.bridge instanceof Map) { ctx._source.bridge.dim = params.dim; }
"""


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
        self._vector_source_params = self.dialect.vector_source_params()

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
            self.summary.caught_up += self._copy_since(self._since)
            self.summary.caught_up += self._copy_missing()
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

    def _create_target(self) -> None:
        settings = self.engine.request("GET", f"/{self.source.index}/_settings")
        index_settings = next(iter(settings.values()))["settings"]["index"]
        mapping = self.engine.request("GET", f"/{self.source.index}/_mapping")
        props = next(iter(mapping.values()))["mappings"].get("properties", {})
        text_props = props.get(self.source.text_field, {})
        vector_props = props.get(self.source.vector_field, {})
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
            self.dialect.wire_native_ingest(
                self.engine, self.target, self.bridge_url, self.api_key, self.batch_size
            )
        write_meta(self.engine, self.target)

    @cached_property
    def _writer(self) -> BulkWriter:
        """The writer into the new index; first used after ``_create_target``."""
        # Vectors that are already there must not go through the embedding pipeline.
        skip_pipeline = self.plan.method != "re-embed" and self.target.mode == "native"
        return BulkWriter(
            self.engine,
            self.target.index,
            pipeline="_none" if skip_pipeline else None,
            retry_for=self.engine.retry_for,
        )

    def _embedded_text(self, doc: dict) -> str:
        """What the new index's vectors are embeddings of (the pipeline embeds the text
        field alone; bridge-side ingest the joined text fields)."""
        if self.target.mode == "native":
            return str(doc.get(self.target.text_field) or "")
        return joined_text(doc, default_text_fields(self.target))

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
                self._fill_on_engine(bar)
            else:
                for copied in self._copy_pages(None, resume=True):
                    bar.update(copied)
        finally:
            bar.close()

    def _fill_on_engine(self, bar: tqdm) -> None:
        task = self.state.task
        if task:
            status = self.engine.request("GET", f"/_tasks/{task}", missing_ok=True)
            if status is None:
                task = None  # the engine forgot it (restart): copy again, keyed by _id
        if not task:
            dest: dict = {"index": self.target.index, "op_type": "index"}
            if self.target.mode == "native":
                dest["pipeline"] = "_none"
            answer = self.engine.request(
                "POST",
                "/_reindex",
                {
                    "source": {"index": self.source.index, "size": self.batch_size},
                    "dest": dest,
                    "script": {
                        "lang": "painless",
                        "source": TRUNCATE_SCRIPT,
                        "params": {"field": self.source.vector_field, "dim": self.target.dim},
                    },
                },
                params={"wait_for_completion": "false", "slices": "auto"},
            )
            task = answer["task"]
            self._save(task=task)
        while True:
            status = self.engine.request("GET", f"/_tasks/{task}")
            progress = status.get("task", {}).get("status", {})
            done = progress.get("created", 0) + progress.get("updated", 0)
            bar.total = max(bar.total or 0, progress.get("total", 0))
            bar.update(max(0, done - bar.n))
            if status.get("completed"):
                break
            time.sleep(0.5)
        if status.get("error"):
            raise ReindexError(f"the engine's _reindex failed: {status['error']}")
        failures = status.get("response", {}).get("failures", [])
        if failures:
            first = failures[0].get("cause", failures[0])
            raise ReindexError(
                f"the engine's _reindex failed for {len(failures)} documents, first: {first}"
            )
        response = status.get("response", {})
        self.summary.copied += response.get("created", 0) + response.get("updated", 0)
        self._save(copied=self.summary.copied)

    def _pages(
        self, query: dict, after: str | None, size: int | None = None, ids_only: bool = False
    ) -> Iterator[list[dict]]:
        """Pages of the old index's documents in ``doc_id`` order, after ``after``."""
        body: dict = {"size": size or self.batch_size, "query": query, "sort": [{"doc_id": "asc"}]}
        if ids_only:
            body["_source"] = False
        elif self.plan.method == "re-embed":
            body["_source"] = {"excludes": [self.source.vector_field]}
        while True:
            if after is not None:
                body["search_after"] = [after]
            hits = self._search(body)
            if not hits:
                return
            yield hits
            after = hits[-1]["sort"][0]
            if after is None:
                raise ReindexError(
                    f"documents without a doc_id in {self.source.index}: they cannot be "
                    "paged; re-ingest them with bridge ingest"
                )

    def _vector_params(self) -> dict | None:
        """What makes ``_search`` and ``_mget`` return vectors (the dialect's parameters)."""
        return self._vector_source_params

    def _search(self, body: dict) -> list[dict]:
        params = self._vector_params() if self.plan.method != "re-embed" else None
        try:
            answer = self.engine.request("POST", f"/{self.source.index}/_search", body, params)
        except ClientError as exc:
            if params and exc.status == 400 and any(name in str(exc) for name in params):
                self._vector_source_params = None  # an older engine: not needed
                return self._search(body)
            raise
        return answer["hits"]["hits"]

    def _as_docs(self, hits: list[dict]) -> list[dict]:
        docs = []
        for hit in hits:
            doc = {**hit["_source"], "_id": hit["_id"]}
            if self.plan.method != "re-embed":
                vector = doc.get(self.source.vector_field)
                if isinstance(vector, list) and len(vector) >= self.target.dim:
                    doc[self.source.vector_field] = truncate(vector, self.target.dim).tolist()
            docs.append(doc)
        return docs

    def _items(self, hits: list[dict], failed: list[Failure]) -> list[BulkItem]:
        """The new index's items for these old-index hits: the writer's own write time is
        kept (it versions the copy), and the vector truncated unless re-embedding."""
        truncating = self.plan.method != "re-embed"
        field_name = self.target.vector_field
        items = []
        for doc in self._as_docs(hits):
            item = prepare_item(self.target, None, doc)
            if isinstance(item, Failure):
                failed.append(item)
                continue
            stamp = (doc.get("bridge") or {}).get("indexed_at")
            if isinstance(stamp, int):
                item.body["bridge"]["indexed_at"] = stamp
            if truncating:
                vector = doc.get(field_name)
                if not isinstance(vector, list) or len(vector) != self.target.dim:
                    failed.append(Failure(None, item.id, f"no {self.target.dim}-value vector"))
                    continue
                item.body[field_name] = vector
            items.append(item)
        return items

    def _embed_and_write(self, items: list[BulkItem]) -> BulkResult:
        failed: list[Failure] = []
        if self.plan.method == "re-embed" and self.target.mode == "bridge":
            assert self.embedder is not None
            items = embed_items(self.embedder, items, self.target, failed)
        result = self._writer.write(items)
        result.failed = failed + result.failed
        return result

    def _copy(self, hits: list[dict]) -> int:
        """Write these old-index hits into the new index (truncated or re-embedded)."""
        failed: list[Failure] = []
        items = self._items(hits, failed)
        # Re-embedding: batches of 64, two in flight, so the model and the engine overlap.
        size = len(items) if self.plan.method != "re-embed" else REEMBED_BATCH
        batches = [items[i : i + size] for i in range(0, len(items), size)]
        with ThreadPoolExecutor(2, thread_name_prefix="bridge-reindex") as pool:
            results = list(pool.map(self._embed_and_write, batches))
        for result in results:
            failed += result.failed
        if failed:
            first = failed[0]
            raise ReindexError(
                f"{len(failed)} documents could not be written to {self.target.index} "
                f"(first: {first.doc_id}: {first.reason}); the checkpoint is before them: "
                "fix the cause and run again"
            )
        return sum(result.written for result in results)

    def _copy_pages(self, since: int | None, resume: bool = False) -> Iterator[int]:
        """Copy every page (or those written since ``since``); yields counts per page."""
        query: dict = {"match_all": {}}
        if since is not None:
            query = {"range": {"bridge.indexed_at": {"gte": since}}}
        after = self.state.cursor if resume else None
        for hits in self._pages(query, after):
            if since is not None:  # catch-up: what the new index already holds is skipped
                hits = self._not_yet_copied(hits)
            copied = self._copy(hits) if hits else 0
            if resume:
                self.summary.copied += copied
                self._save(cursor=hits[-1]["sort"][0], copied=self.state.copied + copied)
            yield copied

    def _not_yet_copied(self, hits: list[dict]) -> list[dict]:
        """The hits the new index lacks, or holds in an older version: a catch-up pass
        re-embeds only what changed, and never overwrites a newer write made there after
        the alias moved. Versions are the writers' ``bridge.indexed_at`` (copies keep it);
        documents without one are compared by content."""
        answer = self.engine.request(
            "POST",
            f"/{self.target.index}/_mget",
            {"ids": [h["_id"] for h in hits]},
            params={"_source_excludes": self.target.vector_field},
        )
        held = {d["_id"]: d["_source"] for d in answer["docs"] if d.get("found")}
        skip = {self.source.vector_field, "bridge"}

        def stamp(source: dict) -> int | None:
            value = (source.get("bridge") or {}).get("indexed_at")
            return value if isinstance(value, int) else None

        wanted = []
        for hit in hits:
            there = held.get(hit["_id"])
            if there is None:
                wanted.append(hit)
                continue
            new, old = stamp(hit["_source"]), stamp(there)
            if new is not None and old is not None:
                if new > old:
                    wanted.append(hit)
            elif {k: v for k, v in there.items() if k not in skip} != {
                k: v for k, v in hit["_source"].items() if k not in skip
            }:
                wanted.append(hit)
        return wanted

    def _refresh(self, *indices: str) -> None:
        self.engine.request("POST", f"/{','.join(indices)}/_refresh")

    def _copy_since(self, since: int) -> int:
        self._refresh(self.source.index)
        return sum(self._copy_pages(since))

    def _copy_missing(self) -> int:
        """Once the alias has moved the old index no longer changes: copy every id it has
        and the new index lacks (whatever the writers' clocks said)."""
        self._refresh(self.source.index, self.target.index)
        copied = 0
        for page in self._pages({"match_all": {}}, None, size=5000, ids_only=True):
            ids = [h["_id"] for h in page]
            found = self.engine.request(
                "POST",
                f"/{self.target.index}/_search",
                {"size": len(ids), "_source": False, "query": {"ids": {"values": ids}}},
            )["hits"]["hits"]
            missing = sorted(set(ids) - {h["_id"] for h in found})
            if missing:
                hits = self._search({"size": len(missing), "query": {"ids": {"values": missing}}})
                copied += self._copy(hits)
        return copied

    def _catch_up_until_quiet(self) -> None:
        for _ in range(CATCH_UP_PASSES):
            mark = int(time.time() * 1000)
            copied = self._copy_since(self._since)
            self.summary.caught_up += copied
            self._save(since=mark - CLOCK_MARGIN_MS)
            if copied == 0:
                break

    def _finish_target_settings(self) -> None:
        interval = self.state.refresh_interval
        self.engine.request(
            "PUT", f"/{self.target.index}/_settings", {"index": {"refresh_interval": interval}}
        )
        self._refresh(self.target.index)

    def _count(self, index: str, query: dict | None = None) -> int:
        body = {"query": query} if query else None
        return self.engine.request("POST", f"/{index}/_count", body)["count"]

    def _verify(self, before_swap: bool) -> None:
        """Counts (and, before the move, sampled vectors) must agree."""
        self._refresh(self.source.index, self.target.index)
        source, target = self._count(self.source.index), self._count(self.target.index)
        self.summary.source_count, self.summary.target_count = source, target
        # Before the move, writes keep landing in the old index; those of the last
        # CLOCK_MARGIN are copied again after the move, so they may still be missing here.
        recent = 0
        if before_swap:
            recent = self._count(
                self.source.index, {"range": {"bridge.indexed_at": {"gte": self._since}}}
            )
        if target < source - recent:
            raise ReindexError(
                f"{self.target.index} has {target} documents, {self.source.index} has {source}: "
                + ("not moving the alias; " if before_swap else "")
                + "run again to copy the rest"
            )
        if before_swap:
            self.summary.sample_min_cosine = self._check_sample()

    def _check_sample(self) -> float | None:
        """Lowest cosine of sampled new vectors against what they must be.

        A document written recently (after ``since``) may be missing or older in the new
        index until the pass after the move; only such a document is excused."""
        body = {
            "size": SAMPLE_SIZE,
            "query": {"function_score": {"query": {"match_all": {}}, "random_score": {}}},
        }
        hits = self._search(body)
        if not hits:
            return None
        ids = [h["_id"] for h in hits]
        got = self.engine.request(
            "POST", f"/{self.target.index}/_mget", {"ids": ids}, params=self._vector_params()
        )["docs"]
        field_name = self.target.vector_field
        found = {d["_id"]: d["_source"].get(field_name) for d in got if d.get("found")}
        if self.plan.method == "re-embed":
            assert self.embedder is not None
            texts = [self._embedded_text(h["_source"]) for h in hits]
            want = self.embedder.embed(texts, dimensions=self.target.dim)
        else:
            want = np.stack(
                [truncate(h["_source"][self.source.vector_field], self.target.dim) for h in hits]
            )
        want = want / np.linalg.norm(want, axis=1, keepdims=True)
        floor = 0.9999 if self.plan.method != "re-embed" else 0.99
        checked, bad = [], []
        for hit, expected in zip(hits, want, strict=True):
            stored = found.get(hit["_id"])
            cosine = float(truncate(stored, self.target.dim) @ expected) if stored else None
            if cosine is not None and cosine >= floor:
                checked.append(cosine)
                continue
            written = (hit["_source"].get("bridge") or {}).get("indexed_at") or 0
            if written < self._since:
                bad.append(f"{hit['_id']} ({'missing' if cosine is None else f'{cosine:.5f}'})")
        if bad:
            raise ReindexError(
                f"sampled documents of {self.target.index} are missing or differ from what "
                f"they should be (cosine floor {floor}): {', '.join(bad)}; not moving the alias"
            )
        return min(checked) if checked else None

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


def truncate(vector, dim: int) -> np.ndarray:
    """The first ``dim`` values, re-normalised to unit length (Matryoshka)."""
    head = np.asarray(vector[:dim], dtype=np.float32)
    norm = float(np.linalg.norm(head))
    if norm == 0:
        raise ReindexError("a zero vector cannot be re-normalised")
    return head / norm
