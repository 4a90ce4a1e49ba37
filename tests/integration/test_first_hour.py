"""What a new user meets in the first hour, on a real OpenSearch and a real bridge server
(minilm, truncation allowed): reruns, Ctrl-C, dead letters, setup and reindex at other
dimensions, and the indexes they leave behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient
from bridge.clients.errors import ClientError
from bridge.index import setup as setup_steps
from bridge.index.setup import setup_index

from conftest import corpus, live_server, make_service

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def bridge_url():
    service = make_service("minilm", allow_truncation=True, max_batch_tokens=4096)
    with live_server(service) as server:
        yield server.url


@pytest.fixture()
def cli(opensearch_url, bridge_url):
    def run(*args: str):
        urls = ["--engine-url", opensearch_url, "--bridge-url", bridge_url]
        return CliRunner().invoke(main, [*args, *urls])

    return run


def count(engine: EngineClient, alias: str) -> int:
    engine.request("POST", f"/{alias}/_refresh")
    return engine.request("GET", f"/{alias}/_count")["count"]


def write_jsonl(path, docs: list[dict], extra: bytes = b"") -> None:
    path.write_bytes(b"".join(json.dumps(d).encode() + b"\n" for d in docs) + extra)


def test_rerun_skips_unchanged_and_dead_letters_keep_bad_lines(cli, tmp_path, opensearch_url):
    assert cli("setup", "--index", "fh-rerun", "--dim", "384", "--mode", "bridge").exit_code == 0
    docs = corpus(6, "rerun")
    source = tmp_path / "docs.jsonl"
    write_jsonl(source, docs, b'{"_id": "broken", "text": "no end\n\xff\xfe caf\xe9\n')
    dead = tmp_path / "dead.jsonl"
    first = cli("ingest", str(source), "--index", "fh-rerun", "--dead-letter", str(dead))
    assert first.exit_code == 2, first.output  # 6 indexed, 2 bad lines
    assert "indexed 6, skipped 0 duplicate ids, failed 2" in first.output
    assert f"failed documents are in {dead}" in first.output

    entries = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [e["line"] for e in entries] == [7, 8]
    assert entries[0]["raw"] == '{"_id": "broken", "text": "no end'  # kept: can be fixed
    assert entries[1]["raw"] == "\ufffd\ufffd caf\ufffd" and "not UTF-8" in entries[1]["reason"]

    again = cli("ingest", str(source), "--index", "fh-rerun")
    assert again.exit_code == 2 and "indexed 0, 6 unchanged, skipped" in again.output

    docs[2]["text"] += " and one more sentence"
    docs[4]["lang"] = "en"  # same text, another field: not unchanged either
    write_jsonl(source, docs)
    changed = cli("ingest", str(source), "--index", "fh-rerun", "--json")
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.stdout)["indexed"] == 2
    assert json.loads(changed.stdout)["unchanged"] == 4
    forced = cli("ingest", str(source), "--index", "fh-rerun", "--force", "--json")
    assert json.loads(forced.stdout)["indexed"] == 6

    fixed = [{**e, "raw": e["raw"] + ' bracket"}'} if e["line"] == 7 else e for e in entries]
    dead.write_text("".join(json.dumps(e) + "\n" for e in fixed))
    replay = cli("ingest", str(dead), "--index", "fh-rerun", "--retry-dead-letter", "--json")
    assert replay.exit_code == 2, replay.output  # the fixed line is in; the other still fails
    assert json.loads(replay.stdout)["indexed"] == 1
    engine = EngineClient(opensearch_url)
    assert count(engine, "fh-rerun") == 7
    assert engine.request("GET", "/fh-rerun/_doc/broken")["_source"]["text"] == "no end bracket"


def test_ctrl_c_says_what_was_done_and_a_rerun_resumes(cli, tmp_path, opensearch_url, bridge_url):
    assert cli("setup", "--index", "fh-abort", "--dim", "384", "--mode", "bridge").exit_code == 0
    docs = corpus(1200, "abort")
    source = tmp_path / "many.jsonl"
    write_jsonl(source, docs)
    env = {**os.environ, "BRIDGE_ENGINE_URL": opensearch_url, "BRIDGE_BRIDGE_URL": bridge_url}
    cmd = [sys.executable, "-m", "bridge.cli", "ingest", str(source), "--index", "fh-abort",
           "--batch-size", "16"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    engine = EngineClient(opensearch_url)
    deadline = time.monotonic() + 120
    while count(engine, "fh-abort") < 64 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = (b.decode() for b in proc.communicate(timeout=120))
    assert proc.returncode == 130, (out, err)
    assert "Aborted!" not in err and "Traceback" not in err, err
    indexed = int(out.split("indexed ")[1].split(",")[0])
    assert 64 <= indexed < len(docs), out
    assert "run the same command again to resume" in err
    assert count(engine, "fh-abort") == indexed  # what it said is what the index holds

    rest = cli("ingest", str(source), "--index", "fh-abort", "--json")
    assert rest.exit_code == 0, rest.output
    summary = json.loads(rest.stdout)
    assert summary["unchanged"] == indexed and summary["indexed"] == len(docs) - indexed
    assert count(engine, "fh-abort") == len(docs)


def test_setup_at_another_dim_then_reindex_then_drop_the_old_one(cli, tmp_path, opensearch_url):
    assert cli("setup", "--index", "fh-dims", "--dim", "128", "--mode", "bridge").exit_code == 0
    engine = EngineClient(opensearch_url)
    nothing = cli("ingest", "-", "--index", "fh-dims")  # stdin of CliRunner: not a terminal
    assert nothing.exit_code == 1 and "standard input holds no documents" in nothing.output
    empty = cli("search", "anything", "--index", "fh-dims")
    assert empty.exit_code == 0 and "no hits for 'anything' in fh-dims" in empty.output
    source = tmp_path / "docs.jsonl"
    write_jsonl(source, corpus(5, "dims"))
    assert cli("ingest", str(source), "--index", "fh-dims").exit_code == 0

    later = cli("setup", "--index", "fh-dims", "--dim", "256", "--mode", "bridge")
    assert "alias fh-dims points at fh-dims-d128; left as is" in later.output
    assert engine.exists("/fh-dims-d256")
    moved = cli("reindex", "--index", "fh-dims", "--dim", "256")
    assert moved.exit_code == 0, moved.output
    assert "fh-dims-d256 exists and is empty: it is replaced" in moved.output
    assert list(engine.request("GET", "/_alias/fh-dims")) == ["fh-dims-d256"]

    listed = cli("indexes", "fh-dims", "--json")
    rows = {r["index"]: r for r in json.loads(listed.stdout)}
    assert rows["fh-dims-d128"]["live"] is False and rows["fh-dims-d256"]["live"] is True
    assert rows["fh-dims-d256"]["dim"] == 256 and rows["fh-dims-d256"]["model"]
    refused = cli("indexes", "fh-dims", "--drop", "fh-dims-d256")
    assert refused.exit_code == 1 and "fh-dims-d256 is live" in refused.output
    assert engine.exists("/fh-dims-d256")
    dropped = cli("indexes", "fh-dims", "--drop-old")
    assert dropped.exit_code == 0 and "dropped fh-dims-d128 (5 documents)" in dropped.output
    assert not engine.exists("/fh-dims-d128")
    back = cli("reindex", "--index", "fh-dims", "--dim", "128")  # the way back is open
    assert back.exit_code == 0, back.output
    assert count(engine, "fh-dims") == 5


def test_a_failed_setup_leaves_nothing_behind(opensearch_url, bridge_url, monkeypatch):
    def refuse(*args, **kwargs):
        raise ClientError("POST /_aliases failed with 400: injected")

    monkeypatch.setattr(setup_steps, "_point_alias", refuse)
    engine = EngineClient(opensearch_url)
    with EmbeddingClient(bridge_url) as embedder, pytest.raises(ClientError, match="injected"):
        setup_index(engine, embedder, "fh-failed", 384, "bridge")
    assert not engine.exists("/fh-failed-d384")
