"""BM25 over title and body: which title boost, measured on a BEIR-format set.

Indexes the corpus (no vectors) into a local engine with the bridge's analyzer and scores
``multi_match`` of each type over ``title^B`` and ``text`` for each boost B (B = 0: the
body alone), with ``bridge eval``'s nDCG@10. Writes JSON; see docs/search.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import httpx

from bridge.clients.engine import EngineClient
from bridge.index import evaluate as ev


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR-format directory.")
    parser.add_argument("--engine-url", default="http://127.0.0.1:9200")
    parser.add_argument("--boosts", default="0,0.5,1,2")
    parser.add_argument("--types", default="best_fields,most_fields,cross_fields")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    engine = EngineClient(args.engine_url)
    index = "bench-title-boost"
    engine.request("DELETE", f"/{index}", missing_ok=True)
    text = {"type": "text", "analyzer": "standard"}
    engine.request(
        "PUT",
        f"/{index}",
        {
            "settings": {"index": {"number_of_shards": 1, "number_of_replicas": 0}},
            "mappings": {"properties": {"title": text, "text": text}},
        },
    )
    with (args.data / "corpus.jsonl").open(encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    for i in range(0, len(docs), 1000):
        lines = []
        for d in docs[i : i + 1000]:
            lines.append(json.dumps({"index": {"_index": index, "_id": d["_id"]}}))
            lines.append(json.dumps({"title": d.get("title") or "", "text": d["text"]}))
        answer = httpx.post(
            f"{args.engine_url}/_bulk",
            content="\n".join(lines) + "\n",
            headers={"Content-Type": "application/x-ndjson"},
            timeout=120,
        ).json()
        assert not answer["errors"], answer["items"][:2]
    engine.request("POST", f"/{index}/_refresh")
    queries, qrels, skipped = ev.judged_queries(
        ev.load_queries(args.data / "queries.jsonl"),
        ev.load_qrels(args.data / "qrels" / "test.tsv"),
    )
    out: dict = {"data": str(args.data), "queries": len(queries), "documents": len(docs)}
    combos = [(float(b), t) for t in args.types.split(",") for b in args.boosts.split(",")]
    for boost, kind in combos:
        fields = ["text"] if boost == 0 else [f"title^{boost:g}", "text"]
        run = {}
        for qid, q in queries.items():
            body = {
                "size": 100,
                "_source": False,
                "query": {"multi_match": {"query": q, "fields": fields, "type": kind}},
            }
            hits = engine.request("POST", f"/{index}/_search", body)["hits"]["hits"]
            run[qid] = [h["_id"] for h in hits]
        scores = ev.evaluate(run, qrels)
        out[f"{kind} title^{boost:g}"] = {
            "ndcg_at_10": scores.ndcg_at_10,
            "recall_at_100": scores.recall_at_100,
        }
        print(kind, fields, round(scores.ndcg_at_10, 4), round(scores.recall_at_100, 4), flush=True)
    engine.request("DELETE", f"/{index}")
    args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
