"""The Indexer counts a document as indexed only when the engine says it wrote it
(a stub engine: the real engines' bulk answers are covered by the engine tests)."""

from __future__ import annotations

from bridge.index.ingest import Indexer, as_docs
from bridge.index.meta import IndexMeta


class StubEngine:
    """Answers each bulk from a script: per call, doc id -> (status, result) or absent."""

    def __init__(self, script: list[dict[str, tuple[int, str]]]) -> None:
        self.script = script
        self.sent: list[list[str]] = []

    def bulk(self, lines: list[dict], params: dict | None = None) -> dict:
        ids = [line["index"]["_id"] for line in lines[::2]]
        self.sent.append(ids)
        plan = self.script[min(len(self.sent), len(self.script)) - 1]
        items = [
            {"index": {"_id": i, "status": plan[i][0], "result": plan[i][1]}}
            for i in ids
            if i in plan
        ]
        return {"errors": False, "items": items}

    def request(self, method: str, path: str, body: dict | None = None, **kw) -> dict | None:
        if path.endswith("/_mget"):
            return {"docs": [{"_id": i, "found": False} for i in (body or {})["ids"]]}
        return None  # no index metadata: the alias has not moved


META = IndexMeta(alias="docs", dim=4, model="m", mode="native", pipeline="p")
DOCS = [{"_id": i, "text": f"text {i}"} for i in "abc"]


def test_dropped_and_unanswered_documents_are_sent_again():
    engine = StubEngine(
        [
            {"a": (201, "created"), "b": (200, "noop")},  # b dropped by the pipeline, c absent
            {"b": (201, "created"), "c": (201, "created")},
        ]
    )
    summary = Indexer(engine, META, progress=False, retry_for=30).ingest(as_docs(DOCS))  # type: ignore[arg-type]
    assert summary.indexed == 3 and summary.failed == []
    assert engine.sent == [["a", "b", "c"], ["b", "c"]]


def test_a_document_still_dropped_at_the_end_is_a_failure_with_its_reason():
    engine = StubEngine([{"a": (201, "created"), "b": (200, "noop")}])
    summary = Indexer(engine, META, progress=False, retry_for=0).ingest(as_docs(DOCS))  # type: ignore[arg-type]
    assert summary.indexed == 1
    reasons = {f.doc_id: f.reason for f in summary.failed}
    assert "dropped by the ingest pipeline" in reasons["b"]
    assert "did not answer" in reasons["c"]
