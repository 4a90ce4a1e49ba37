"""Passage vectors against one truncated vector per document, on long documents.

Long documents are built from a labelled BEIR-format passage set: the passages of one
source page, in order, ``--group`` at a time, become one document (its title: the page's);
a query is relevant to the document holding its relevant passage. In one run:

- ``reference``: each original passage embedded with sentence-transformers directly, a
  document scored by its best passage (what passage vectors should reach);
- ``single``: one vector per document (title + body, cut at the model's input limit);
- ``passages_T_O``: the bridge's passages of at most T tokens sharing O, embedded by the
  service, a document scored by its best passage;
- ``short_*``: the original short passages as documents, single vector vs passages (no loss
  expected: most fit in one window).

Search is exact (dot products), so the figures measure the vectors, not an engine's ANN.
Writes JSON; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import platform
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bridge.model.passages import PassageSpec, with_title
from bridge.model.profile import resolve_model_dir
from bridge.model.service import EmbeddingService, ServiceOptions


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load(data: Path) -> tuple[list[dict], dict[str, str], dict[str, set[str]], dict[str, str]]:
    corpus = read_jsonl(data / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in read_jsonl(data / "queries.jsonl")}
    qrels: dict[str, set[str]] = defaultdict(set)
    with (data / "qrels" / "test.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if float(row["score"]) > 0:
                qrels[row["query-id"]].add(row["corpus-id"])
    sources: dict[str, str] = {}
    if (data / "sources.tsv").exists():
        with (data / "sources.tsv").open() as f:
            sources = {row["id"]: row["source"] for row in csv.DictReader(f, delimiter="\t")}
    judged = {q: rel for q, rel in qrels.items() if q in queries}
    return corpus, queries, judged, sources


def long_documents(corpus: list[dict], sources: dict[str, str], group: int) -> list[dict]:
    """Consecutive passages of one source (else of the corpus order), ``group`` at a time."""
    by_source: dict[str, list[dict]] = defaultdict(list)
    for passage in corpus:
        by_source[sources.get(passage["_id"], "all")].append(passage)
    docs = []
    for source in sorted(by_source):
        passages = by_source[source]
        for i in range(0, len(passages), group):
            part = passages[i : i + group]
            docs.append(
                {
                    "_id": f"long{len(docs):05d}",
                    "title": part[0].get("title") or "",
                    "text": "\n\n".join(p["text"] for p in part),
                    "members": [p["_id"] for p in part],
                }
            )
    return docs


def ndcg10(scores: np.ndarray, doc_ids: list[str], qids: list[str], qrels) -> float:
    """Mean nDCG@10 with binary gains (trec_eval's definition)."""
    total = 0.0
    for row, qid in zip(scores, qids, strict=True):
        top = np.argsort(-row)[:10]
        relevant = qrels[qid]
        dcg = sum(1 / np.log2(r + 2) for r, i in enumerate(top) if doc_ids[i] in relevant)
        ideal = sum(1 / np.log2(r + 2) for r in range(min(10, len(relevant))))
        total += dcg / ideal
    return total / len(qids)


def best_passage_scores(q: np.ndarray, p: np.ndarray, owner: np.ndarray, n_docs: int):
    """Each document's score: its best passage's dot product with the query."""
    sims = q @ p.T
    out = np.full((len(q), n_docs), -np.inf, dtype=np.float32)
    for doc in range(n_docs):
        columns = owner == doc
        if columns.any():
            out[:, doc] = sims[:, columns].max(axis=1)
    return out


def embed(service: EmbeddingService, texts: list[str], **kw) -> np.ndarray:
    return np.concatenate(
        [service.embed_sync(texts[i : i + 256], **kw).vectors for i in range(0, len(texts), 256)]
    )


def embed_passages(service: EmbeddingService, docs: list[dict], spec: PassageSpec):
    """Passage vectors of each document through the service; returns vectors, owners, counts."""

    async def run() -> list:
        results = []
        for i in range(0, len(docs), 64):
            part = docs[i : i + 64]
            results.append(
                await service.embed_passages(
                    [d["text"] for d in part], spec, [d["title"] or None for d in part]
                )
            )
        return results

    started = time.perf_counter()
    results = asyncio.run(run())
    seconds = time.perf_counter() - started
    vectors = np.concatenate([r.vectors for r in results])
    offsets = np.cumsum([0] + [len(r.spans) for r in results[:-1]])
    owner = np.concatenate(
        [
            np.array([base + i for i, s in enumerate(r.spans) for _ in s])
            for base, r in zip(offsets, results, strict=True)
        ]
    )
    tokens = sum(r.prompt_tokens for r in results)
    return vectors, owner, {"passages": len(vectors), "tokens": tokens, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR-format directory.")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--group", type=int, default=12, help="Passages per long document.")
    parser.add_argument("--spans", default="96:16,128:16,256:32,256:0", help="TOKENS:OVERLAP,...")
    parser.add_argument("--queries", type=int, default=0, help="Use the first N (0: all).")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    corpus, queries, qrels, sources = load(args.data)
    qids = sorted(qrels)[: args.queries or None]
    docs = long_documents(corpus, sources, args.group)
    member_of = {m: d["_id"] for d in docs for m in d["members"]}
    long_qrels = {q: {member_of[p] for p in qrels[q] if p in member_of} for q in qids}
    options = ServiceOptions(model=args.model, device=args.device, max_queue_tokens=10**9)
    service = EmbeddingService.from_options(options)
    service.warm_up()
    out: dict = {
        "data": str(args.data),
        "model": args.model,
        "device": str(service.embedder.device),
        "gpu": _gpu_name(),
        "host": platform.node(),
        "queries": len(qids),
        "short_passages": len(corpus),
        "long_documents": len(docs),
        "passages_per_long_document": args.group,
        "max_input_tokens": service.max_input_tokens,
    }
    q = embed(service, [queries[i] for i in qids], input_type="query")
    doc_ids = [d["_id"] for d in docs]

    # Reference: sentence-transformers on the original passages, best passage per document.
    from sentence_transformers import SentenceTransformer

    _, path = resolve_model_dir(args.model)
    st = SentenceTransformer(str(path), device=str(service.embedder.device))
    st_q = st.encode([queries[i] for i in qids], batch_size=128, normalize_embeddings=True)
    index = {d["_id"]: i for i, d in enumerate(docs)}
    owner = np.array([index[member_of[p["_id"]]] for p in corpus])
    # Each labelled passage under its long document's title (what the bridge's passages get)
    pairs = zip(owner, corpus, strict=True)
    doc_titled = [with_title(docs[o]["title"], p["text"]) for o, p in pairs]
    st_doc = st.encode(doc_titled, batch_size=128, normalize_embeddings=True)
    out["ndcg10_reference_st_best_passage"] = ndcg10(
        best_passage_scores(st_q, st_doc, owner, len(docs)), doc_ids, qids, long_qrels
    )
    # ... and under its own section title, which the long document no longer has.
    texts = [with_title(p.get("title"), p["text"]) for p in corpus]
    st_p = st.encode(texts, batch_size=128, normalize_embeddings=True)
    out["ndcg10_reference_st_best_passage_own_titles"] = ndcg10(
        best_passage_scores(st_q, st_p, owner, len(docs)), doc_ids, qids, long_qrels
    )
    short_ids = [p["_id"] for p in corpus]
    short_qrels = {qid: qrels[qid] for qid in qids}
    out["ndcg10_short_reference_st"] = ndcg10(st_q @ st_p.T, short_ids, qids, short_qrels)

    # One vector per long document (what an index without passages holds).
    started = time.perf_counter()
    single = embed(service, [with_title(d["title"], d["text"]) for d in docs])
    out["single"] = {"seconds": time.perf_counter() - started, "vectors": len(docs)}
    out["ndcg10_single"] = ndcg10(q @ single.T, doc_ids, qids, long_qrels)

    short_single = embed(service, texts)
    out["ndcg10_short_single"] = ndcg10(q @ short_single.T, short_ids, qids, short_qrels)

    for span in args.spans.split(","):
        tokens, overlap = (int(x) for x in span.split(":"))
        spec = PassageSpec(tokens, overlap)
        vectors, owners, stats = embed_passages(service, docs, spec)
        name = f"passages_{tokens}_{overlap}"
        out[name] = stats
        out[f"ndcg10_{name}"] = ndcg10(
            best_passage_scores(q, vectors, owners, len(docs)), doc_ids, qids, long_qrels
        )
        short_docs = [{"text": p["text"], "title": p.get("title") or ""} for p in corpus]
        vectors, owners, stats = embed_passages(service, short_docs, spec)
        out[f"short_{name}"] = stats
        out[f"ndcg10_short_{name}"] = ndcg10(
            best_passage_scores(q, vectors, owners, len(corpus)), short_ids, qids, short_qrels
        )
        print(name, {k: v for k, v in out.items() if name in k and k.startswith("ndcg")})
    print(json.dumps({k: v for k, v in out.items() if k.startswith("ndcg")}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
