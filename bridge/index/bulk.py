"""Writing documents with ``_bulk``: typed items in, per-item results out.

``BulkWriter.write`` sends a batch to one index (or alias) and answers, for every item,
whether the engine wrote it and if not why. Items the engine answers with 429 or 5xx,
answers 2xx without a ``created``/``updated`` result (dropped in its ingest pipeline, or
lost there) or leaves out of its answer are sent again with
backoff while the time budget lasts; what still fails is a ``Failure`` with its reason,
which ``write_dead_letter`` can keep for a later ``bridge ingest --retry-dead-letter``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridge.clients.engine import EngineClient
from bridge.clients.errors import ClientError
from bridge.clients.retry import DEFAULT_RETRY_SECONDS, backoff_seconds

WRITTEN = ("created", "updated")  # the results of an item the engine did write


@dataclass
class BulkItem:
    """One document to write: its ``_id``, the body sent, and where it came from."""

    id: str
    body: dict
    line: int | None = None  # input line, for reports
    text: str = ""  # the body the embedding step embeds (never sent to the engine) ...
    title: str | None = None  # ... under this title


@dataclass
class Failure:
    """A document that was not written, and why."""

    line: int | None
    doc_id: str | None
    reason: str
    doc: dict | None = None
    raw: str | None = None  # the input line, when it could not be read as a document


@dataclass
class BulkResult:
    written: int = 0
    duplicates: int = 0  # items whose _id came again later in the same batch
    failed: list[Failure] = field(default_factory=list)


def item_reason(error: dict | None) -> str:
    """An engine's per-item error with its causes: ``type: reason (cause: reason)``."""
    parts = []
    while isinstance(error, dict) and len(parts) < 3:
        parts.append(f"{error.get('type')}: {error.get('reason')}")
        error = error.get("caused_by")
    return " (".join(parts) + ")" * (len(parts) - 1)


class BulkWriter:
    """Writes batches into ``index``, retrying what can be retried within ``retry_for``."""

    def __init__(
        self,
        engine: EngineClient,
        index: str,
        *,
        pipeline: str | None = None,
        retry_for: float = DEFAULT_RETRY_SECONDS,
    ) -> None:
        self.engine = engine
        self.index = index
        self.params = {"pipeline": pipeline} if pipeline else None
        self.retry_for = retry_for

    def write(self, items: Sequence[BulkItem]) -> BulkResult:
        result = BulkResult()
        pending = {item.id: item for item in items}
        result.duplicates = len(items) - len(pending)
        started = time.monotonic()
        attempt = 0
        while pending:
            attempt += 1
            wait = backoff_seconds(attempt)
            final = time.monotonic() - started + wait > self.retry_for
            pending = self._send(pending, result, final=final)
            if pending:
                time.sleep(wait)
        return result

    def _send(
        self, pending: dict[str, BulkItem], result: BulkResult, final: bool
    ) -> dict[str, BulkItem]:
        """One ``_bulk`` call; returns the items to send again."""
        lines: list[dict] = []
        for item in pending.values():
            lines += [{"index": {"_index": self.index, "_id": item.id}}, item.body]
        try:
            answer = self.engine.bulk(lines, self.params)
        except ClientError as exc:
            if final:
                result.failed += [
                    _failure(item, f"bulk failed: {exc}") for item in pending.values()
                ]
                return {}
            return pending
        retry: dict[str, BulkItem] = {}
        unanswered = dict(pending)
        for entry in answer.get("items", []):
            outcome = next(iter(entry.values()))
            item = unanswered.pop(outcome.get("_id"), None)
            if item is None:
                continue
            status = outcome.get("status", 500)
            # Written means 2xx with result created/updated. "noop": the ingest pipeline
            # dropped the document; OpenSearch 3.6 also answers a bare 200 (no result) for
            # one whose ml_inference call lost its connection. Neither was written.
            dropped = status < 300 and outcome.get("result") not in WRITTEN
            if status < 300 and not dropped:
                result.written += 1
            elif (status == 429 or status >= 500 or dropped) and not final:
                retry[item.id] = item
            elif dropped:
                why = f"{status} without a write (result {outcome.get('result')!r})"
                result.failed.append(_failure(item, f"dropped by the ingest pipeline: {why}"))
            else:
                reason = item_reason(outcome.get("error")) or str(status)
                result.failed.append(_failure(item, f"engine refused: {reason}"))
        for item in unanswered.values():  # not in the answer: not written
            if final:
                result.failed.append(_failure(item, "the engine did not answer for it"))
            else:
                retry[item.id] = item
        return retry


def _failure(item: BulkItem, reason: str) -> Failure:
    return Failure(item.line, item.id, reason, item.body)


def write_dead_letter(path: Path, failures: Iterable[Failure], vector_field: str) -> None:
    """Append the failed documents (as given, without vector and stamps) with reasons; a
    line that was no document keeps its text as ``raw``, to be fixed there and replayed."""
    with path.open("a", encoding="utf-8") as out:
        for failure in failures:
            if failure.raw is not None:
                entry = {"line": failure.line, "reason": failure.reason, "raw": failure.raw}
                out.write(json.dumps(entry) + "\n")
                continue
            doc = dict(failure.doc or {})
            doc.pop(vector_field, None)
            doc.pop("bridge", None)
            if failure.doc_id and "_id" not in doc:
                doc["_id"] = failure.doc_id
            out.write(json.dumps({"line": failure.line, "reason": failure.reason, "doc": doc}))
            out.write("\n")
