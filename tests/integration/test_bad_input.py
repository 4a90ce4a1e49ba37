"""Bad input through ``bridge ingest``: each bad document gets a clear reason, the rest lands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.index.ingest import Indexer, as_docs
from bridge.index.setup import setup_index
from bridge.server.app import ServerSettings

from conftest import live_server, make_service

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def small_body_server(tiny_qwen3_dir):
    """The service with a 64 KiB request limit, so one huge document overflows it."""
    service = make_service(tiny_qwen3_dir, max_batch_tokens=512)
    with live_server(service, ServerSettings(max_request_bytes=64 * 1024)) as server:
        yield server


def test_ingest_cli_reports_each_bad_line(opensearch_url, small_body_server, tmp_path):
    engine = EngineClient(opensearch_url)
    with EmbeddingClient(small_body_server.url) as embedder:
        setup_index(engine, embedder, "bad-input", 64, "bridge", replicas=0)
    good = [{"_id": f"ok{i}", "text": f"cats and dogs {i}"} for i in range(20)]
    lines = [json.dumps(d).encode() for d in good[:10]]
    lines += [
        b'{"_id": "broken", "text": "no closing brace"',  # line 11: malformed JSON
        b'{"_id": "no-text", "title": "only a title"}',  # 12: missing field
        b'{"_id": "latin1", "text": "caf\xe9"}',  # 13: not UTF-8
        json.dumps({"_id": "huge", "text": "cats dogs " * 20000}).encode(),  # 14: 200 kB
        b"[1, 2, 3]",  # 15: not an object
        json.dumps({"_id": "blank", "text": "   "}).encode(),  # 16: empty text
    ]
    lines += [json.dumps(d).encode() for d in good[10:]]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    dead = tmp_path / "dead.jsonl"

    env = {
        **os.environ,
        "BRIDGE_ENGINE_URL": opensearch_url,
        "BRIDGE_URL": small_body_server.url,
        "BRIDGE_RETRY_FOR": "5",
    }
    cmd = [sys.executable, "-m", "bridge.cli", "ingest", str(path), "--index", "bad-input"]
    done = subprocess.run(
        [*cmd, "--batch-size", "8", "--dead-letter", str(dead)],
        env=env,
        capture_output=True,
        timeout=300,
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 2, (out, err)  # some failed, some indexed
    assert "indexed 20" in out and "failed 6" in out, out
    for where, reason in [
        ("line 11", "invalid JSON"),
        ("line 12", "missing or empty 'text'"),
        ("line 13", "not UTF-8"),
        ("line 14", "413"),
        ("line 15", "JSON object"),
        ("line 16", "missing or empty 'text'"),
    ]:
        assert any(where in e and reason in e for e in err.splitlines()), (where, err)
    assert engine.request("GET", "/bad-input/_count")["count"] == 20
    # The huge document is in the dead-letter file, whole, with its reason.
    entries = [json.loads(x) for x in dead.read_text().splitlines()]
    huge = next(e for e in entries if e.get("doc", {}).get("_id") == "huge")
    assert "413" in huge["reason"] and len(huge["doc"]["text"]) == len("cats dogs " * 20000)
    raw = {e["line"]: e["raw"] for e in entries if "raw" in e}  # lines that were no document
    assert sorted(raw) == [11, 13, 15] and raw[13] == '{"_id": "latin1", "text": "caf\ufffd"}'
    assert raw[15] == "[1, 2, 3]"


def test_wrong_dimension_at_the_engine_is_a_clear_failure(opensearch_url, qwen3_server):
    engine = EngineClient(opensearch_url)
    embedder = EmbeddingClient(qwen3_server.url)
    meta, _ = setup_index(engine, embedder, "wrong-dim", 64, "bridge", replicas=0)
    lying = replace(meta, dim=32)  # metadata that disagrees with the mapping
    indexer = Indexer(engine, lying, embedder, progress=False, retry_for=2, follow_alias=False)
    summary = indexer.ingest(as_docs([{"_id": f"w{i}", "text": "cats"} for i in range(3)]))
    assert summary.indexed == 0 and len(summary.failed) == 3
    assert all("engine refused" in f.reason and "dimension" in f.reason for f in summary.failed)
