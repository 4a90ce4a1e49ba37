"""Copying the old index into the new one: the engine's scripted ``_reindex``, or pages read
in ``doc_id`` order, truncated (Matryoshka) or re-embedded, and written with the bulk writer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

import numpy as np
from tqdm import tqdm

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.clients.errors import ClientError
from bridge.index.bulk import BulkItem, BulkResult, BulkWriter, Failure
from bridge.index.dialects import dialect_for
from bridge.index.ingest import embed_items, prepare_item
from bridge.index.reindex.plan import Plan, ReindexError

REEMBED_BATCH = 64  # documents per embedding request when re-embedding

# Truncates the vector, or each passage's vector (a list of objects with "embedding").
TRUNCATE_SCRIPT = """
def v = ctx._source[params.field];
if (v == null || v.isEmpty()) { throw new IllegalArgumentException(
  'document ' + ctx._id + ' has no vector'); }
List vectors = new ArrayList();
if (v[0] instanceof Map) { for (def p : v) { vectors.add(p); } }
else { Map one = new HashMap(); one.embedding = v; vectors.add(one); }
for (def holder : vectors) {
  def e = holder.embedding;
  if (e == null || e.size() < params.dim) { throw new IllegalArgumentException(
    'document ' + ctx._id + ' has no vector of at least ' + params.dim + ' values'); }
  double norm = 0;
  List out = new ArrayList();
  for (int i = 0; i < params.dim; i++) {
    double x = ((Number) e[i]).doubleValue(); out.add(x); norm += x * x; }
  norm = Math.sqrt(norm);
  for (int i = 0; i < params.dim; i++) { out.set(i, out.get(i) / norm); }
  holder.embedding = out;
}
ctx._source[params.field] = v[0] instanceof Map ? v : vectors[0].embedding;
if (ctx._source.bridge instanceof Map) { ctx._source.bridge.dim = params.dim; }
"""


class Copier:
    """Reads ``plan.source`` and writes ``plan.target`` (created beforehand)."""

    def __init__(
        self, engine: EngineClient, embedder: EmbeddingClient | None, plan: Plan, batch_size: int
    ) -> None:
        self.engine = engine
        self.embedder = embedder
        self.plan = plan
        self.batch_size = batch_size
        self.source = plan.source
        self.target = plan.target
        self._vector_source_params = dialect_for(engine.info()).vector_source_params()

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

    def on_engine(self, task: str | None, remember: Callable[[str], None], bar: tqdm) -> int:
        """Truncate in the engine's scripted ``_reindex`` (re-attaching to ``task`` when the
        engine still knows it; ``remember`` saves a new one); returns the documents copied."""
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
            remember(task)
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
        return response.get("created", 0) + response.get("updated", 0)

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
            hits = self.search(body)
            if not hits:
                return
            yield hits
            after = hits[-1]["sort"][0]
            if after is None:
                raise ReindexError(
                    f"documents without a doc_id in {self.source.index}: they cannot be "
                    "paged; re-ingest them with bridge ingest"
                )

    def vector_params(self) -> dict | None:
        """What makes ``_search`` and ``_mget`` return vectors (the dialect's parameters)."""
        return self._vector_source_params

    def search(self, body: dict) -> list[dict]:
        params = self.vector_params() if self.plan.method != "re-embed" else None
        try:
            answer = self.engine.request("POST", f"/{self.source.index}/_search", body, params)
        except ClientError as exc:
            if params and exc.status == 400 and any(name in str(exc) for name in params):
                self._vector_source_params = None  # an older engine: not needed
                return self.search(body)
            raise
        return answer["hits"]["hits"]

    def _as_docs(self, hits: list[dict]) -> list[dict]:
        docs = []
        for hit in hits:
            doc = {**hit["_source"], "_id": hit["_id"]}
            if self.plan.method != "re-embed":
                value = doc.get(self.source.vector_field)
                truncated = truncate_stored(value, self.target.dim)
                if truncated is not None:
                    doc[self.source.vector_field] = truncated
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
                value = doc.get(field_name)
                vectors = stored_vectors(value)
                if not vectors or any(len(v) != self.target.dim for v in vectors):
                    failed.append(Failure(None, item.id, f"no {self.target.dim}-value vector"))
                    continue
                item.body[field_name] = value
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

    def pages_copied(
        self, since: int | None, after: str | None = None
    ) -> Iterator[tuple[int, str | None]]:
        """Copy every page after ``after`` (or those written since ``since``); yields the
        documents copied and the page's last ``doc_id`` (the cursor to resume from)."""
        query: dict = {"match_all": {}}
        if since is not None:
            query = {"range": {"bridge.indexed_at": {"gte": since}}}
        for hits in self._pages(query, after):
            cursor = hits[-1]["sort"][0]
            if since is not None:  # catch-up: what the new index already holds is skipped
                hits = self._not_yet_copied(hits)
            yield (self._copy(hits) if hits else 0), cursor

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

    def refresh(self, *indices: str) -> None:
        self.engine.request("POST", f"/{','.join(indices)}/_refresh")

    def copy_since(self, since: int) -> int:
        """Copy what was written to the old index since ``since`` (ms) and is not there."""
        self.refresh(self.source.index)
        return sum(copied for copied, _ in self.pages_copied(since))

    def copy_missing(self) -> int:
        """Once the alias has moved the old index no longer changes: copy every id it has
        and the new index lacks (whatever the writers' clocks said)."""
        self.refresh(self.source.index, self.target.index)
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
                hits = self.search({"size": len(missing), "query": {"ids": {"values": missing}}})
                copied += self._copy(hits)
        return copied


def stored_vectors(value: object) -> list[list[float]]:
    """The vectors of a stored vector field: one vector, or each passage's."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [p.get("embedding") or [] for p in value]
    return [value] if isinstance(value, list) and value else []


def truncate_stored(value: object, dim: int) -> object | None:
    """A stored vector field with every vector truncated to ``dim`` (None: not possible)."""
    vectors = stored_vectors(value)
    if not vectors or any(len(v) < dim for v in vectors):
        return None
    if isinstance(value, list) and isinstance(value[0], dict):
        return [{**p, "embedding": truncate(p["embedding"], dim).tolist()} for p in value]
    return truncate(value, dim).tolist()


def truncate(vector, dim: int) -> np.ndarray:
    """The first ``dim`` values, re-normalised to unit length (Matryoshka)."""
    head = np.asarray(vector[:dim], dtype=np.float32)
    norm = float(np.linalg.norm(head))
    if norm == 0:
        raise ReindexError("a zero vector cannot be re-normalised")
    return head / norm
