"""Ingesting documents: JSONL (BEIR ``corpus.jsonl`` too) or Python dicts into an index.

Each batch goes prepare -> embed -> write: ``prepare_item`` turns a document into a
``BulkItem`` (``_id`` is the document's id, else a hash of its content, so a rerun never
duplicates); bridge-side mode embeds the batch through the service (``embed_items``),
native mode leaves that to the index's default pipeline; ``BulkWriter`` writes it, retrying
what the engine answers with 429/5xx. Documents that finally fail are reported (and written
to a dead-letter file when one is given) while the rest goes on.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.clients.errors import ClientError
from bridge.clients.retry import DEFAULT_RETRY_SECONDS
from bridge.index.bulk import BulkItem, BulkWriter, Failure, write_dead_letter
from bridge.index.meta import IndexMeta, moved_meta
from bridge.model.passages import with_title

ID_FIELDS = ("_id", "id", "doc_id")


@dataclass
class IngestSummary:
    indexed: int = 0
    skipped: int = 0  # ids that came again in the same batch
    unchanged: int = 0  # already in the index exactly so: not embedded nor written again
    failed: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False  # Ctrl-C: the batches in flight finished, the rest did not run

    @property
    def docs_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {
            "indexed": self.indexed,
            "skipped": self.skipped,
            "unchanged": self.unchanged,
            "failed": len(self.failed),
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 2),
            "docs_per_second": round(self.docs_per_second, 1),
            "failures": [
                {"line": f.line, "id": f.doc_id, "reason": f.reason} for f in self.failed[:50]
            ],
        }


def read_jsonl(stream: IO[str] | IO[bytes]) -> Iterator[tuple[int, dict | Failure]]:
    """(line number, document) for each line; a bad line yields a ``Failure`` instead."""
    for number, raw in enumerate(stream, start=1):
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                text = raw.decode("utf-8", errors="replace").strip()
                yield number, Failure(number, None, f"not UTF-8: {exc}", raw=text)
                continue
        line = raw.strip()
        if not line:
            continue
        yield number, parse_line(number, line)


def parse_line(number: int | None, line: str) -> dict | Failure:
    """The JSON object on one input line, or a ``Failure`` that keeps the line."""
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as exc:
        why = f"invalid JSON ({exc.msg}, column {exc.colno})"
        return Failure(number, None, why, raw=line)
    if not isinstance(doc, dict):
        return Failure(number, None, "a line must hold a JSON object", raw=line)
    return doc


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def id_of(doc: dict, id_field: str | None = None) -> str | None:
    """The document's own id (``id_field``, else ``_id``, ``id`` or ``doc_id``)."""
    for name in (id_field,) if id_field else ID_FIELDS:
        value = doc.get(name) if name else None
        if value is not None and value != "":
            return str(value)
    return None


def title_of(doc: dict, meta: IndexMeta) -> str | None:
    """The document's title (embedded in front of its body), when it has a text one."""
    title = doc.get(meta.title_field) if meta.title_field else None
    return title if isinstance(title, str) and title else None


def embedded_text(doc: dict, meta: IndexMeta) -> str:
    """The text a single-vector index holds the embedding of (title, newline, body)."""
    return with_title(title_of(doc, meta), str(doc.get(meta.text_field) or ""))


def prepare_item(
    meta: IndexMeta, line: int | None, doc: dict, *, id_field: str | None = None
) -> BulkItem | Failure:
    """The item to write for ``doc`` (without its vector), or why it cannot be written."""
    text = doc.get(meta.text_field)
    if text is not None and not isinstance(text, str):
        kind = type(text).__name__
        why = f"'{meta.text_field}' must be a string, not {kind} ({json.dumps(text)[:40]})"
        return Failure(line, id_of(doc, id_field), why, doc)
    if not text or not text.strip():
        return Failure(line, id_of(doc, id_field), f"missing or empty '{meta.text_field}'", doc)
    title = title_of(doc, meta)
    digest = content_hash(with_title(title, text))
    body = {k: v for k, v in doc.items() if k not in ID_FIELDS and k != meta.vector_field}
    doc_id = id_of(doc, id_field) or digest
    body["doc_id"] = doc_id
    body["bridge"] = {
        "model": meta.model,
        "dim": meta.dim,
        "content_hash": digest,
        "indexed_at": int(time.time() * 1000),
    }
    return BulkItem(doc_id, body, line, text, title)


def embed_items(
    embedder: EmbeddingClient, items: list[BulkItem], meta: IndexMeta, failed: list[Failure]
) -> list[BulkItem]:
    """Add vectors; the items that get one are returned, the others go to ``failed``. A
    request the service refuses (a text too long, say) is split until the culprits are
    alone, so one bad document does not fail its neighbours."""
    try:
        _embed(embedder, items, meta)
    except ClientError as exc:
        if exc.status is not None and 400 <= exc.status < 500 and len(items) > 1:
            half = len(items) // 2
            return embed_items(embedder, items[:half], meta, failed) + embed_items(
                embedder, items[half:], meta, failed
            )
        failed += [Failure(i.line, i.id, f"embedding failed: {exc}", i.body) for i in items]
        return []
    return items


def _embed(embedder: EmbeddingClient, items: list[BulkItem], meta: IndexMeta) -> None:
    """Fill each item's vector field: its passages' vectors, or its one vector. Vectors
    stay float32 arrays: the engine client writes them with float32's shortest digits
    (about half the JSON of the same values as Python floats)."""
    texts, titles = [i.text for i in items], [i.title for i in items]
    if meta.passages:
        split = embedder.embed_passages(
            texts, titles, meta.passages["max_tokens"], meta.passages["overlap"], meta.dim
        )
        for item, passages in zip(items, split, strict=True):
            item.body[meta.vector_field] = [
                {"start": p.start, "end": p.end, "embedding": p.vector} for p in passages
            ]
        return
    vectors = embedder.embed(texts, dimensions=meta.dim, titles=titles)
    for item, vector in zip(items, vectors, strict=True):
        item.body[meta.vector_field] = vector


class Indexer:
    """Writes documents into the index described by ``meta`` (through its alias)."""

    def __init__(
        self,
        engine: EngineClient,
        meta: IndexMeta,
        embedder: EmbeddingClient | None = None,
        *,
        batch_size: int = 64,
        id_field: str | None = None,
        retry_for: float = DEFAULT_RETRY_SECONDS,
        dead_letter: Path | None = None,
        progress: bool = True,
        concurrency: int = 2,
        follow_alias: bool = True,
        skip_unchanged: bool = True,
    ) -> None:
        if meta.mode == "bridge" and embedder is None:
            raise ValueError("bridge-side ingest needs an embedding client")
        self.engine = engine
        self.meta = meta
        self.embedder = embedder
        self.batch_size = batch_size
        self.id_field = id_field
        self.writer = BulkWriter(engine, meta.alias, retry_for=retry_for)
        self.dead_letter = dead_letter
        self.progress = progress
        # Two batches in flight keep the model busy while the engine indexes the other.
        self.concurrency = max(1, concurrency)
        # When bridge reindex moves the alias mid-ingest, write refused items there.
        self.follow_alias = follow_alias
        # A rerun (after Ctrl-C, say) skips what the index already holds exactly so.
        self.skip_unchanged = skip_unchanged

    def _prepare(self, line: int | None, doc: dict) -> BulkItem | Failure:
        return prepare_item(self.meta, line, doc, id_field=self.id_field)

    def ingest(
        self, docs: Iterable[tuple[int | None, dict | Failure]], total: int | None = None
    ) -> IngestSummary:
        """Embed and bulk ``concurrency`` batches at a time; returns the summary."""
        summary = IngestSummary()
        started = time.perf_counter()
        bar = tqdm(total=total, unit="doc", disable=not self.progress, desc=self.meta.alias)
        in_flight: set[Future] = set()

        def merge(done: Iterable[Future]) -> None:
            for future in done:
                part: IngestSummary = future.result()
                summary.indexed += part.indexed
                summary.skipped += part.skipped
                summary.unchanged += part.unchanged
                summary.failed.extend(part.failed)
                bar.update(part.indexed + part.skipped + part.unchanged + len(part.failed))
            bar.set_postfix(indexed=summary.indexed, failed=len(summary.failed))

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="bridge-ingest") as pool:
            try:
                for batch in self._batches(docs, summary, bar):
                    if len(in_flight) >= self.concurrency:
                        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        merge(done)
                    in_flight.add(pool.submit(self._flush, batch))
                merge(wait(in_flight).done)
            except KeyboardInterrupt:
                # Batches being written finish (so the counts are what the index holds);
                # those not started are dropped. A second Ctrl-C stops at once.
                summary.interrupted = True
                merge(wait([f for f in in_flight if not f.cancel()]).done)
            finally:
                bar.close()
        summary.seconds = time.perf_counter() - started
        if self.dead_letter and summary.failed:
            write_dead_letter(self.dead_letter, summary.failed, self.meta.vector_field)
        return summary

    def _batches(
        self, docs: Iterable[tuple[int | None, dict | Failure]], summary: IngestSummary, bar
    ) -> Iterator[list[BulkItem]]:
        batch: list[BulkItem] = []
        for line, doc in docs:
            prepared = doc if isinstance(doc, Failure) else self._prepare(line, doc)
            if isinstance(prepared, Failure):
                summary.failed.append(prepared)
                bar.update(1)
                continue
            batch.append(prepared)
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _flush(self, batch: list[BulkItem]) -> IngestSummary:
        """Embed (bridge mode) and write one batch; returns its own partial summary."""
        part = IngestSummary()
        if self.skip_unchanged:
            batch = self._drop_unchanged(batch, part)
        if self.meta.mode == "bridge":
            assert self.embedder is not None
            batch = embed_items(self.embedder, batch, self.meta, part.failed)
        written = self.writer.write(batch)
        part.indexed += written.written
        part.skipped += written.duplicates
        part.failed += written.failed
        return self._follow_alias(part)

    def _drop_unchanged(self, batch: list[BulkItem], part: IngestSummary) -> list[BulkItem]:
        """The items the index does not already hold exactly so (same content hash, same
        fields); the others count as unchanged. One ``_mget`` a batch, vectors left out."""
        if not batch:
            return batch
        answer = self.engine.request(
            "POST",
            f"/{self.meta.alias}/_mget",
            {"ids": [item.id for item in batch]},
            params={"_source_excludes": self.meta.vector_field},
        )
        stored = {d["_id"]: d["_source"] for d in answer.get("docs", []) if d.get("found")}
        fresh = [item for item in batch if not _same(stored.get(item.id), item.body)]
        part.unchanged += len(batch) - len(fresh)
        return fresh

    def _follow_alias(self, part: IngestSummary) -> IngestSummary:
        """When ``bridge reindex`` moved the alias to another dimension mid-ingest, the
        engine refuses vectors of the old one: embed those documents again for the new
        index and write them there."""
        refused = [f for f in part.failed if f.doc and f.reason.startswith("engine refused")]
        if not refused or not self.follow_alias:
            return part
        fresh = moved_meta(self.engine, self.meta)
        if fresh is None:
            return part
        self.meta = fresh
        part.failed = [f for f in part.failed if f not in refused]
        batch = []
        for failure in refused:
            doc = {k: v for k, v in (failure.doc or {}).items() if k != fresh.vector_field}
            prepared = self._prepare(failure.line, {**doc, "_id": failure.doc_id})
            if isinstance(prepared, Failure):
                part.failed.append(prepared)
            else:
                batch.append(prepared)
        again = self._flush(batch) if batch else IngestSummary()
        part.indexed += again.indexed
        part.skipped += again.skipped
        part.failed.extend(again.failed)
        return part


def _same(stored: dict | None, body: dict) -> bool:
    """Whether a stored document is ``body`` (its stamp of when it was written aside)."""
    if stored is None:
        return False
    if (stored.get("bridge") or {}).get("content_hash") != body["bridge"]["content_hash"]:
        return False
    unstamped = {**stored, "bridge": {**stored["bridge"], "indexed_at": None}}
    return unstamped == {**body, "bridge": {**body["bridge"], "indexed_at": None}}


def ingest_file(
    indexer: Indexer, path: str, show_total: bool = True, dead_letter_input: bool = False
) -> IngestSummary:
    """Ingest a JSONL file (``-`` for standard input), or replay a dead-letter file."""
    reader = read_dead_letter if dead_letter_input else read_jsonl
    if path == "-":
        return indexer.ingest(reader(sys.stdin.buffer))
    total = None
    if show_total:
        with open(path, "rb") as f:
            total = sum(1 for line in f if line.strip())
    with open(path, "rb") as f:
        return indexer.ingest(reader(f), total=total)


def read_dead_letter(stream: IO[bytes]) -> Iterator[tuple[int | None, dict | Failure]]:
    """The documents of a dead-letter file (written by ``Indexer``), to ingest again."""
    for number, entry in read_jsonl(stream):
        if isinstance(entry, Failure):
            yield number, entry
        elif isinstance(entry.get("raw"), str):  # a line that was no document: fixed since?
            yield entry.get("line") or number, parse_line(entry.get("line") or number, entry["raw"])
        elif not isinstance(entry.get("doc"), dict):
            why = "not a dead-letter entry (no 'doc' object or 'raw' line)"
            yield number, Failure(number, None, why)
        else:
            yield entry.get("line") or number, entry["doc"]


def as_docs(items: Iterable[dict[str, Any]]) -> Iterator[tuple[None, dict]]:
    """Adapt plain dicts (the Python API) to ``Indexer.ingest``."""
    for doc in items:
        yield None, doc
