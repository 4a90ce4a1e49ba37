"""``bridge eval`` end to end: BEIR files, a real engine, a real bridge server, tuning."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.clients.engine import EngineClient
from bridge.index.meta import read_meta

from conftest import live_server, make_service

pytestmark = pytest.mark.engine

CORPUS = {
    "coffee": "Espresso is brewed by forcing hot water through finely ground coffee beans.",
    "tea": "Green tea leaves are steamed right after picking to stop oxidation.",
    "bread": "Sourdough bread rises with wild yeast and lactic acid bacteria.",
    "shards": "Replica shards keep an index searchable when a cluster node fails.",
    "alias": "An alias lets applications keep one index name while the index behind it changes.",
    "part-x17": "Part QZX-17 is a stainless hex bolt with an M8 thread.",
    "part-k9": "Part KLV-9 is a brass washer for garden hoses.",
    "volcano": "Magma rising through the crust erupts as lava from a volcano.",
}
QUERIES = {
    "q1": ("how do you make a strong coffee drink", {"coffee": 1}),
    "q2": ("QZX-17", {"part-x17": 1}),
    "q3": ("what keeps data available if a server crashes", {"shards": 1}),
    "q4": ("KLV-9", {"part-k9": 1}),
    "q5": ("lava and eruptions", {"volcano": 1}),
}


@pytest.fixture()
def beir(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in CORPUS.items())
    )
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items())
    )
    qrels = tmp_path / "qrels.tsv"
    rows = ["query-id\tcorpus-id\tscore"]
    rows += [f"{q}\t{d}\t{g}" for q, (_, rel) in QUERIES.items() for d, g in rel.items()]
    # Judged queries the queries file lacks (BEIR subsets ship such qrels): skipped, not 0.
    rows += ["lost-1\tpart-x17\t1", "lost-2\tpart-x17\t1"]
    qrels.write_text("\n".join(rows) + "\n")
    return corpus, queries, qrels


def test_eval_and_tune_save_a_profile_that_search_uses(beir, opensearch_url, tmp_path):
    corpus, queries, qrels = beir
    with live_server(make_service("minilm")) as server:
        common = ["--engine-url", opensearch_url, "--bridge-url", server.url]
        out = tmp_path / "eval.json"
        result = CliRunner().invoke(
            main,
            ["eval", *common, "--corpus", str(corpus), "--queries", str(queries),
             "--qrels", str(qrels), "--index", "beir-tiny", "--tune", "--output", str(out)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        report = json.loads(out.read_text())
        modes = report["modes"]
        assert set(modes) == {"bm25", "knn", "hybrid"}
        for scores in modes.values():
            assert 0.0 <= scores["ndcg_at_10"] <= 1.0 and scores["queries"] == 5
        best_half = max(modes["bm25"]["ndcg_at_10"], modes["knn"]["ndcg_at_10"])
        assert report["tuned"]["scores"]["ndcg_at_10"] >= best_half - 1e-9
        with EngineClient(opensearch_url) as engine:
            meta = read_meta(engine, "beir-tiny")
        assert meta.search_profile == report["tuned"]["profile"]
        assert meta.passages, "eval's index is a passage index (the setup default): tuned on it"
        assert "saved search profile" in result.output
        assert report["skipped_queries"] == 2 and "2 judged queries have no text" in result.output

        printed = CliRunner().invoke(
            main,
            ["eval", *common, "--corpus", str(corpus), "--queries", str(queries),
             "--qrels", str(qrels), "--index", "beir-tiny", "--modes", "bm25", "--json"],
        )  # fmt: skip
        assert printed.exit_code == 0, printed.output
        assert json.loads(printed.stdout) == {
            "index": "beir-tiny",
            "modes": {"bm25": modes["bm25"]},
            "skipped_queries": 2,
        }

        found = CliRunner().invoke(
            main, ["search", *common, "QZX-17", "--index", "beir-tiny", "--json"]
        )
        assert found.exit_code == 0, found.output
        assert json.loads(found.output)[0]["id"] == "part-x17"
