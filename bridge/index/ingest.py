"""Ingesting documents: JSONL (BEIR ``corpus.jsonl`` too) or Python dicts into an index.

Bridge-side mode embeds each batch through the service and bulks the vectors; native mode
bulks plain documents and lets the index's default pipeline embed them. ``_id`` is the
document's id, else a hash of its content, so a rerun never duplicates. Items the engine
rejects with 429/5xx are retried; documents that finally fail are reported (and written
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
from bridge.clients.retry import DEFAULT_RETRY_SECONDS, backoff_seconds
from bridge.index.meta import IndexMeta, moved_meta

ID_FIELDS = ("_id", "id", "doc_id")


@dataclass
class Failure:
    line: int | None
    doc_id: str | None
    reason: str
    doc: dict | None = None


@dataclass
class IngestSummary:
    indexed: int = 0
    skipped: int = 0
    failed: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def docs_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {
            "indexed": self.indexed,
            "skipped": self.skipped,
            "failed": len(self.failed),
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
                yield number, Failure(number, None, f"not UTF-8: {exc}")
                continue
        line = raw.strip()
        if not line:
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, Failure(number, None, f"invalid JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(doc, dict):
            yield number, Failure(number, None, "a line must hold a JSON object")
            continue
        yield number, doc


def item_reason(error: dict | None) -> str:
    """An engine's per-item error with its causes: ``type: reason (cause: reason)``."""
    parts = []
    while isinstance(error, dict) and len(parts) < 3:
        parts.append(f"{error.get('type')}: {error.get('reason')}")
        error = error.get("caused_by")
    return " (".join(parts) + ")" * (len(parts) - 1)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
        text_fields: tuple[str, ...] | None = None,
        retry_for: float = DEFAULT_RETRY_SECONDS,
        dead_letter: Path | None = None,
        progress: bool = True,
        concurrency: int = 2,
        target: str | None = None,
        keep_vectors: bool = False,
        keep_stamps: bool = False,
        pipeline: str | None = None,
    ) -> None:
        if meta.mode == "bridge" and embedder is None and not keep_vectors:
            raise ValueError("bridge-side ingest needs an embedding client")
        self.engine = engine
        self.meta = meta
        self.embedder = embedder
        self.batch_size = batch_size
        self.id_field = id_field
        # BEIR corpora have "title" and "text": both go into what is embedded.
        self.text_fields = text_fields or ("title", meta.text_field)
        self.retry_for = retry_for
        self.dead_letter = dead_letter
        self.progress = progress
        # Two batches in flight keep the model busy while the engine indexes the other.
        self.concurrency = max(1, concurrency)
        # Reindexing writes into the new physical index (not the alias), may bring its
        # own vectors (truncated from wider ones), and may bypass the default pipeline.
        self.target = target or meta.alias
        self.keep_vectors = keep_vectors
        # A reindex copy keeps the document's own write time: it versions the copy.
        self.keep_stamps = keep_stamps
        self.bulk_params = {"pipeline": pipeline} if pipeline else None

    def embed_text(self, doc: dict) -> str:
        """What gets embedded: title and text in bridge mode; the engine's pipeline
        (native mode) embeds the text field alone."""
        if self.meta.mode == "native":
            return str(doc.get(self.meta.text_field) or "")
        return self._joined_text(doc)

    def _joined_text(self, doc: dict) -> str:
        parts = [doc[f] for f in self.text_fields if isinstance(doc.get(f), str) and doc[f]]
        return "\n".join(dict.fromkeys(parts))

    def _prepare(self, line: int | None, doc: dict) -> tuple[str, dict] | Failure:
        text = doc.get(self.meta.text_field)
        if not isinstance(text, str) or not text.strip():
            return Failure(
                line, self._id_of(doc), f"missing or empty '{self.meta.text_field}'", doc
            )
        embed_text = self._joined_text(doc)
        vector = doc.get(self.meta.vector_field)
        if self.keep_vectors and (not isinstance(vector, list) or len(vector) != self.meta.dim):
            return Failure(line, self._id_of(doc), f"no {self.meta.dim}-value vector", doc)
        body = {k: v for k, v in doc.items() if k not in ID_FIELDS and k != self.meta.vector_field}
        if self.keep_vectors:
            body[self.meta.vector_field] = vector
        doc_id = self._id_of(doc) or content_hash(embed_text)
        body["doc_id"] = doc_id
        body["bridge"] = {
            "model": self.meta.model,
            "dim": self.meta.dim,
            "content_hash": content_hash(embed_text),
            "indexed_at": self._stamp(doc),
        }
        body["_embed_text"] = embed_text
        return doc_id, body

    def _stamp(self, doc: dict) -> int:
        if self.keep_stamps:
            stamp = (doc.get("bridge") or {}).get("indexed_at")
            if isinstance(stamp, int):
                return stamp
        return int(time.time() * 1000)

    def _id_of(self, doc: dict) -> str | None:
        fields = (self.id_field,) if self.id_field else ID_FIELDS
        for name in fields:
            value = doc.get(name) if name else None
            if value is not None and value != "":
                return str(value)
        return None

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
                summary.failed.extend(part.failed)
                bar.update(part.indexed + part.skipped + len(part.failed))
            bar.set_postfix(indexed=summary.indexed, failed=len(summary.failed))

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="bridge-ingest") as pool:
            try:
                for batch in self._batches(docs, summary, bar):
                    if len(in_flight) >= self.concurrency:
                        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        merge(done)
                    in_flight.add(pool.submit(self._flush, batch))
                merge(wait(in_flight).done)
            finally:
                bar.close()
        summary.seconds = time.perf_counter() - started
        if self.dead_letter and summary.failed:
            self._write_dead_letter(summary.failed)
        return summary

    def _batches(
        self, docs: Iterable[tuple[int | None, dict | Failure]], summary: IngestSummary, bar
    ) -> Iterator[list[tuple[int | None, str, dict]]]:
        batch: list[tuple[int | None, str, dict]] = []
        for line, doc in docs:
            prepared = doc if isinstance(doc, Failure) else self._prepare(line, doc)
            if isinstance(prepared, Failure):
                summary.failed.append(prepared)
                bar.update(1)
                continue
            batch.append((line, *prepared))
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _flush(self, batch: list[tuple[int | None, str, dict]]) -> IngestSummary:
        """Embed (bridge mode) and bulk one batch; returns its own partial summary."""
        part = IngestSummary()
        texts = [body.pop("_embed_text") for _, _, body in batch]
        if self.meta.mode == "bridge" and not self.keep_vectors:
            batch = self._embed(batch, texts, part)
        pending = {doc_id: (line, body) for line, doc_id, body in batch}
        part.skipped += len(batch) - len(pending)
        started = time.monotonic()
        attempt = 0
        while pending:
            attempt += 1
            wait = backoff_seconds(attempt)
            final = time.monotonic() - started + wait > self.retry_for
            pending = self._bulk_once(pending, part, final=final)
            if pending:
                time.sleep(wait)
        return self._follow_alias(part)

    def _follow_alias(self, part: IngestSummary) -> IngestSummary:
        """When ``bridge reindex`` moved the alias to another dimension mid-ingest, the
        engine refuses vectors of the old one: embed those documents again for the new
        index and write them there."""
        refused = [f for f in part.failed if f.doc and f.reason.startswith("engine refused")]
        if not refused or self.target != self.meta.alias:
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
                batch.append((failure.line, *prepared))
        again = self._flush(batch) if batch else IngestSummary()
        part.indexed += again.indexed
        part.skipped += again.skipped
        part.failed.extend(again.failed)
        return part

    def _embed(
        self, batch: list[tuple[int | None, str, dict]], texts: list[str], part: IngestSummary
    ) -> list[tuple[int | None, str, dict]]:
        """Add vectors; the documents that get one are returned. A request the service
        refuses (a text too long, say) is split until the culprits are alone, so one bad
        document does not fail its neighbours."""
        assert self.embedder is not None
        try:
            vectors = self.embedder.embed(texts, dimensions=self.meta.dim)
        except ClientError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and len(batch) > 1:
                half = len(batch) // 2
                return self._embed(batch[:half], texts[:half], part) + self._embed(
                    batch[half:], texts[half:], part
                )
            for line, doc_id, body in batch:
                part.failed.append(Failure(line, doc_id, f"embedding failed: {exc}", body))
            return []
        for (_, _, body), vector in zip(batch, vectors, strict=True):
            body[self.meta.vector_field] = vector.tolist()
        return batch

    def _bulk_once(
        self, pending: dict[str, tuple[int | None, dict]], summary: IngestSummary, final: bool
    ) -> dict[str, tuple[int | None, dict]]:
        lines: list[dict] = []
        for doc_id, (_, body) in pending.items():
            lines += [{"index": {"_index": self.target, "_id": doc_id}}, body]
        try:
            answer = self.engine.bulk(lines, self.bulk_params)
        except ClientError as exc:
            if final:
                for doc_id, (line, body) in pending.items():
                    summary.failed.append(Failure(line, doc_id, f"bulk failed: {exc}", body))
                return {}
            return pending
        retry: dict[str, tuple[int | None, dict]] = {}
        unanswered = dict(pending)
        for item in answer.get("items", []):
            result = next(iter(item.values()))
            doc_id = result.get("_id")
            status = result.get("status", 500)
            if unanswered.pop(doc_id, None) is None:
                continue
            # "noop": the ingest pipeline dropped the document; it was not written
            dropped = result.get("result") == "noop"
            if status < 300 and not dropped:
                summary.indexed += 1
            elif (status == 429 or status >= 500 or dropped) and not final:
                retry[doc_id] = pending[doc_id]
            else:
                reason = "dropped by the ingest pipeline" if dropped else None
                reason = reason or item_reason(result.get("error")) or str(status)
                line, body = pending[doc_id]
                summary.failed.append(Failure(line, doc_id, f"engine refused: {reason}", body))
        for doc_id, (line, body) in unanswered.items():  # not in the answer: not written
            if final:
                summary.failed.append(
                    Failure(line, doc_id, "the engine did not answer for it", body)
                )
            else:
                retry[doc_id] = (line, body)
        return retry

    def _write_dead_letter(self, failures: list[Failure]) -> None:
        assert self.dead_letter is not None
        with self.dead_letter.open("a", encoding="utf-8") as out:
            for f in failures:
                doc = dict(f.doc or {})
                doc.pop(self.meta.vector_field, None)
                doc.pop("bridge", None)
                if f.doc_id and "_id" not in doc:
                    doc["_id"] = f.doc_id
                out.write(json.dumps({"line": f.line, "reason": f.reason, "doc": doc}) + "\n")


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
        elif not isinstance(entry.get("doc"), dict):
            yield number, Failure(number, None, "not a dead-letter entry (no 'doc' object)")
        else:
            yield entry.get("line") or number, entry["doc"]


def as_docs(items: Iterable[dict[str, Any]]) -> Iterator[tuple[None, dict]]:
    """Adapt plain dicts (the Python API) to ``Indexer.ingest``."""
    for doc in items:
        yield None, doc
