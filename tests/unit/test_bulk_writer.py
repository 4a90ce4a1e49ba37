"""BulkWriter against a stub engine: per-item outcomes, retries, and the dead letter."""

from __future__ import annotations

import json

from bridge.clients.errors import ClientError
from bridge.index.bulk import BulkItem, BulkWriter, Failure, write_dead_letter


class ScriptedEngine:
    """Answers each ``_bulk`` call with the next entry of a script: an exception to raise,
    or doc id -> (status, result, error) for the items it answers."""

    def __init__(self, script: list) -> None:
        self.script = script
        self.calls: list[tuple[list[str], dict | None]] = []

    def bulk(self, lines: list[dict], params: dict | None = None) -> dict:
        ids = [line["index"]["_id"] for line in lines[::2]]
        self.calls.append((ids, params))
        step = self.script[min(len(self.calls), len(self.script)) - 1]
        if isinstance(step, Exception):
            raise step
        items = []
        for doc_id in ids:
            if doc_id in step:
                status, result, error = step[doc_id]
                items.append(
                    {"index": {"_id": doc_id, "status": status, "result": result, "error": error}}
                )
        return {"items": items}


def items(*ids: str) -> list[BulkItem]:
    return [BulkItem(i, {"text": i}, line=n) for n, i in enumerate(ids, start=1)]


def test_429_and_5xx_items_are_sent_again_and_written():
    engine = ScriptedEngine(
        [
            {"a": (201, "created", None), "b": (429, None, None), "c": (503, None, None)},
            {"b": (201, "created", None), "c": (200, "updated", None)},
        ]
    )
    result = BulkWriter(engine, "idx", retry_for=30).write(items("a", "b", "c"))  # type: ignore[arg-type]
    assert result.written == 3 and result.failed == []
    assert [ids for ids, _ in engine.calls] == [["a", "b", "c"], ["b", "c"]]


def test_a_refused_item_fails_with_the_engine_reason_and_is_not_retried():
    error = {
        "type": "mapper_parsing_exception",
        "reason": "failed to parse",
        "caused_by": {"type": "illegal_argument_exception", "reason": "wrong dimension"},
    }
    engine = ScriptedEngine([{"a": (400, None, error), "b": (201, "created", None)}])
    result = BulkWriter(engine, "idx", retry_for=30).write(items("a", "b"))  # type: ignore[arg-type]
    assert result.written == 1 and len(engine.calls) == 1
    [failure] = result.failed
    assert failure.doc_id == "a" and failure.line == 1 and failure.doc == {"text": "a"}
    assert failure.reason == (
        "engine refused: mapper_parsing_exception: failed to parse "
        "(illegal_argument_exception: wrong dimension)"
    )


def test_a_failing_bulk_call_fails_every_item_when_the_budget_is_spent():
    engine = ScriptedEngine([ClientError("connection refused", None)])
    result = BulkWriter(engine, "idx", retry_for=0).write(items("a", "b"))  # type: ignore[arg-type]
    assert result.written == 0
    assert [f.doc_id for f in result.failed] == ["a", "b"]
    assert all("bulk failed: connection refused" in f.reason for f in result.failed)


def test_a_failing_bulk_call_is_retried_within_the_budget():
    engine = ScriptedEngine([ClientError("busy", 503), {"a": (201, "created", None)}])
    result = BulkWriter(engine, "idx", retry_for=30).write(items("a"))  # type: ignore[arg-type]
    assert result.written == 1 and len(engine.calls) == 2


def test_duplicate_ids_in_a_batch_are_written_once_and_counted():
    engine = ScriptedEngine([{"a": (201, "created", None)}])
    batch = [BulkItem("a", {"v": 1}), BulkItem("a", {"v": 2})]
    result = BulkWriter(engine, "idx").write(batch)  # type: ignore[arg-type]
    assert result.written == 1 and result.duplicates == 1
    assert engine.calls == [(["a"], None)]


def test_the_pipeline_is_passed_to_every_call():
    engine = ScriptedEngine([{"a": (201, "created", None)}])
    BulkWriter(engine, "idx", pipeline="_none").write(items("a"))  # type: ignore[arg-type]
    assert engine.calls == [(["a"], {"pipeline": "_none"})]


def test_dead_letter_keeps_the_document_without_vector_and_stamps(tmp_path):
    path = tmp_path / "dead.jsonl"
    doc = {"text": "t", "embedding": [0.1], "bridge": {"dim": 1}}
    write_dead_letter(path, [Failure(7, "x", "engine refused: no", doc)], "embedding")
    [entry] = [json.loads(line) for line in path.read_text().splitlines()]
    assert entry == {"line": 7, "reason": "engine refused: no", "doc": {"text": "t", "_id": "x"}}


def test_a_2xx_without_a_write_is_sent_again():
    """OpenSearch 3.6 answers a bare 200 (no result) for a document whose ml_inference call
    lost its connection, and "noop" for one a pipeline dropped: neither was written."""
    engine = ScriptedEngine(
        [
            {"a": (200, None, None), "b": (200, "noop", None), "c": (201, "created", None)},
            {"a": (201, "created", None), "b": (201, "created", None)},
        ]
    )
    result = BulkWriter(engine, "idx", retry_for=30).write(items("a", "b", "c"))  # type: ignore[arg-type]
    assert result.written == 3 and result.failed == []
    assert engine.calls[1][0] == ["a", "b"]
    final = ScriptedEngine([{"a": (200, None, None)}])
    [failure] = BulkWriter(final, "idx", retry_for=0).write(items("a")).failed  # type: ignore[arg-type]
    assert "without a write" in failure.reason
