"""Passage vectors against one truncated vector per document, on long documents.

Long documents are built from a labelled BEIR-format passage set: the passages of one
source page, in order, GROUP at a time, become one document (its title: the page's); a
query is relevant to the document holding its relevant passage. ``--variants`` names the
long document sets as JOINER:GROUP: ``para`` joins passages with a blank line, ``space``
with one space (no paragraph break at the joins, which a splitter could otherwise find
the passages by: a real document's paragraphs are rarely its relevant units). In one run:

- ``reference_st``: each original passage embedded with sentence-transformers directly, a
  document scored by its best passage (what passage vectors should reach);
- ``single``: one vector per document (title + body, cut at the model's input limit);
- ``SPLITTER_T_O``: the bridge's passages of at most T tokens sharing O, windows ended by
  SPLITTER (``SPLITTERS``), embedded by the service, a document scored by its best passage;
- ``short``: the original passages as documents, the same methods (no loss expected
  against ``single``: most fit in one window);
- ``--combine A+B``: a document scored by its best passage over the windows of runs A and
  B together (two window sizes at once).

Each run's difference from the first (the baseline), per query: ``paired`` in the JSON,
the mean and its standard error.
``--queries N`` draws N judged queries at random (``--seed``) and keeps the sources of
their relevant passages plus ``--share`` of the others: a smaller set to iterate on a CPU.
Search is exact (dot products), so the figures measure the vectors, not an engine's ANN.
Writes JSON; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import platform
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bridge.model.passages import (
    PassageSpec,
    PassageSplitter,
    balanced_end,
    boundary,
    greedy_end,
    next_start,
    paragraph_end,
    paragraph_start,
    with_title,
)
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


def long_documents(
    corpus: list[dict], sources: dict[str, str], group: int, joiner: str = "\n\n"
) -> list[dict]:
    """Consecutive passages of one source (else of the corpus order), ``group`` at a time,
    joined by ``joiner``."""
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
                    "text": joiner.join(p["text"] for p in part),
                    "members": [p["_id"] for p in part],
                }
            )
    return docs


def sample(
    corpus: list[dict],
    qrels: dict[str, set[str]],
    sources: dict[str, str],
    n: int,
    share: float,
    seed: int,
) -> tuple[list[dict], list[str]]:
    """``n`` judged queries drawn at random, and the passages of their relevant passages'
    sources plus ``share`` of the other sources (whole sources, so long documents keep
    their order)."""
    rng = random.Random(seed)
    qids = sorted(rng.sample(sorted(qrels), min(n, len(qrels))))
    source = {p["_id"]: sources.get(p["_id"], "all") for p in corpus}
    wanted = {source[p] for q in qids for p in qrels[q] if p in source}
    others = sorted(set(source.values()) - wanted)
    wanted |= set(rng.sample(others, round(share * len(others))))
    return [p for p in corpus if source[p["_id"]] in wanted], qids


def per_query_ndcg10(scores: np.ndarray, doc_ids: list[str], qids: list[str], qrels) -> list:
    """nDCG@10 of each query, binary gains (trec_eval's definition)."""
    out = []
    for row, qid in zip(scores, qids, strict=True):
        top = np.argsort(-row)[:10]
        relevant = qrels[qid]
        dcg = sum(1 / np.log2(r + 2) for r, i in enumerate(top) if doc_ids[i] in relevant)
        ideal = sum(1 / np.log2(r + 2) for r in range(min(10, len(relevant))))
        out.append(float(dcg / ideal))
    return out


def ndcg10(scores: np.ndarray, doc_ids: list[str], qids: list[str], qrels) -> float:
    """Mean nDCG@10 over the queries."""
    return float(np.mean(per_query_ndcg10(scores, doc_ids, qids, qrels)))


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

    async def run() -> list:  # requests of 64 documents, all in flight at once
        parts = [docs[i : i + 64] for i in range(0, len(docs), 64)]
        return await asyncio.gather(
            *(
                service.embed_passages(
                    [d["text"] for d in p], spec, [d["title"] or None for d in p]
                )
                for p in parts
            )
        )

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


def paragraph_first_end(text: str, offsets, i: int, window: int, overlap: int) -> int:
    """``balanced_end``, but at the latest paragraph break past a quarter of the window when
    there is one (hypothesis: paragraphs are the passages; tested against joins without
    blank lines, as long documents built by joining passages have them at every join)."""
    j = balanced_end(text, offsets, i, window, overlap)
    if j < len(offsets):
        for k in range(min(i + window, len(offsets)), i + max(1, window // 4) - 1, -1):
            if boundary(text, offsets, k) == 3:
                return k
    return j


# --runs' SPLITTER: how a window's end and the next one's start are chosen (greedy: the
# splitter before balanced windows; paragraphs: ends only; structured: whole paragraphs,
# the default; in session 10 first with ends at the latest paragraph break past a quarter
# of the window, then ("units" in passages_units_minilm_h200.json) the first past half)
SPLITTERS = {
    "greedy": (greedy_end, next_start),
    "balanced": (balanced_end, next_start),
    "paragraphs": (paragraph_first_end, next_start),
    "structured": (paragraph_end, paragraph_start),
}
JOINERS = {"para": "\n\n", "space": " "}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="BEIR-format directory.")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--variants",
        default="para:12,space:12,para:4",
        help="Long documents, JOINER:GROUP,...: GROUP passages of one source joined by a "
        "blank line (para) or one space (space).",
    )
    parser.add_argument(
        "--runs",
        default="greedy:256:32,balanced:256:32",
        help="SPLITTER:TOKENS:OVERLAP,... (splitters: SPLITTERS); each compared with the first.",
    )
    parser.add_argument(
        "--queries", type=int, default=0, help="Draw N judged queries at random (0: all)."
    )
    parser.add_argument(
        "--share",
        type=float,
        default=0.1,
        help="With --queries: the share of sources without a relevant passage kept.",
    )
    parser.add_argument(
        "--combine",
        default="",
        help="RUN+RUN,... (names as SPLITTER_TOKENS_OVERLAP): a document scored by its best "
        "passage over both runs' windows (several window sizes at once).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    corpus, queries, qrels, sources = load(args.data)
    qids = sorted(qrels)
    if args.queries:
        corpus, qids = sample(corpus, qrels, sources, args.queries, args.share, args.seed)
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
        "sample": {"queries": args.queries, "share": args.share, "seed": args.seed},
        "short_passages": len(corpus),
        "max_input_tokens": service.max_input_tokens,
    }
    q = embed(service, [queries[i] for i in qids], input_type="query")
    from sentence_transformers import SentenceTransformer

    _, path = resolve_model_dir(args.model)
    st = SentenceTransformer(str(path), device=str(service.embedder.device))
    st_q = st.encode([queries[i] for i in qids], batch_size=128, normalize_embeddings=True)

    # The original passages as documents: reference, one vector each, then passages below.
    texts = [with_title(p.get("title"), p["text"]) for p in corpus]
    st_p = st.encode(texts, batch_size=128, normalize_embeddings=True)
    short_ids = [p["_id"] for p in corpus]
    short_qrels = {qid: qrels[qid] for qid in qids}
    short_docs = [{"text": p["text"], "title": p.get("title") or ""} for p in corpus]
    short = out["short"] = {
        "reference_st": ndcg10(st_q @ st_p.T, short_ids, qids, short_qrels),
        "single": ndcg10(q @ embed(service, texts).T, short_ids, qids, short_qrels),
    }

    # Long documents, per variant: references (each labelled passage embedded by
    # sentence-transformers, a document scored by its best one) and one truncated vector.
    variants = {}
    for variant in filter(None, args.variants.split(",")):
        joiner, group = variant.split(":")
        docs = long_documents(corpus, sources, int(group), JOINERS[joiner])
        doc_ids = [d["_id"] for d in docs]
        member_of = {m: d["_id"] for d in docs for m in d["members"]}
        long_qrels = {q: {member_of[p] for p in qrels[q] if p in member_of} for q in qids}
        index = {d["_id"]: i for i, d in enumerate(docs)}
        owner = np.array([index[member_of[p["_id"]]] for p in corpus])
        # Each labelled passage under its long document's title (as the bridge's passages).
        titled = [
            with_title(docs[o]["title"], p["text"]) for o, p in zip(owner, corpus, strict=True)
        ]
        st_doc = st.encode(titled, batch_size=128, normalize_embeddings=True)
        started = time.perf_counter()
        single = embed(service, [with_title(d["title"], d["text"]) for d in docs])
        seconds = time.perf_counter() - started

        def score(scores: np.ndarray, doc_ids=doc_ids, long_qrels=long_qrels) -> float:
            return ndcg10(scores, doc_ids, qids, long_qrels)

        def per_query(scores: np.ndarray, doc_ids=doc_ids, long_qrels=long_qrels) -> list:
            return per_query_ndcg10(scores, doc_ids, qids, long_qrels)

        variants[variant] = (docs, per_query)
        out[f"long_{variant}"] = {
            "documents": len(docs),
            "reference_st": score(best_passage_scores(st_q, st_doc, owner, len(docs))),
            # ... and under its own section title, which the long document no longer has.
            "reference_st_own_titles": score(best_passage_scores(st_q, st_p, owner, len(docs))),
            "single": score(q @ single.T),
            "single_seconds": seconds,
        }

    runs = args.runs.split(",")
    kept: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}  # for --combine
    for run in runs:
        mode, tokens, overlap = run.split(":")
        service.splitter = PassageSplitter(
            service.preparer.with_offsets,
            service.preparer.document_ids,
            service.max_input_tokens,
            *SPLITTERS[mode],
        )
        spec = PassageSpec(int(tokens), int(overlap))
        name = f"{mode}_{tokens}_{overlap}"
        for variant, (docs, per_query) in variants.items():
            vectors, owners, stats = embed_passages(service, docs, spec)
            stats["per_query"] = per_query(best_passage_scores(q, vectors, owners, len(docs)))
            out[f"long_{variant}"][name] = stats
            kept[(name, variant)] = (vectors, owners)
        vectors, owners, stats = embed_passages(service, short_docs, spec)
        kept[(name, "short")] = (vectors, owners)
        stats["per_query"] = per_query_ndcg10(
            best_passage_scores(q, vectors, owners, len(corpus)), short_ids, qids, short_qrels
        )
        short[name] = stats
        out["paired"] = paired(out, "_".join(runs[0].split(":")))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))  # after each run: a cut-off run keeps some
        print(name, summary(out, name), flush=True)
    for pair in filter(None, args.combine.split(",")):
        combine(out, pair, kept, variants, q, (short_ids, qids, short_qrels, len(corpus)))
    out["paired"] = paired(out, "_".join(runs[0].split(":")))
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(summary(out), indent=1))
    print(f"against {runs[0]} (mean difference, standard error):")
    print(json.dumps(out["paired"], indent=1))


def combine(out: dict, pair: str, kept: dict, variants: dict, q: np.ndarray, short: tuple):
    """``--combine A+B``: each document scored by its best passage of run A or run B."""
    a, b = pair.split("+")
    short_ids, qids, short_qrels, n_short = short
    sets = [("short", n_short, None), *((v, len(d), pq) for v, (d, pq) in variants.items())]
    for variant, n_docs, per_query in sets:
        (va, oa), (vb, ob) = kept[(a, variant)], kept[(b, variant)]
        scores = best_passage_scores(q, np.concatenate([va, vb]), np.concatenate([oa, ob]), n_docs)
        if per_query is None:
            result = per_query_ndcg10(scores, short_ids, qids, short_qrels)
        else:
            result = per_query(scores)
        key = "short" if variant == "short" else f"long_{variant}"
        out[key][pair] = {"passages": len(va) + len(vb), "per_query": result}


def summary(out: dict, only: str | None = None) -> dict:
    """nDCG@10 per document set and method (``only``: one method)."""
    table = {}
    for key, results in out.items():
        if key == "short" or key.startswith("long_"):
            table[key] = {
                method: round(float(np.mean(r["per_query"])) if isinstance(r, dict) else r, 4)
                for method, r in results.items()
                if (only is None or method == only)
                and (isinstance(r, dict) or not method.endswith(("seconds", "documents")))
            }
    return table


def paired(out: dict, base: str) -> dict:
    """Per document set, each run's nDCG@10 less ``base``'s: the mean over queries and its
    standard error (a difference within about two of them is noise)."""
    table = {}
    for key, results in out.items():
        if key == "short" or key.startswith("long_"):
            ref = np.array(results[base]["per_query"])
            table[key] = {
                method: [round(float(d.mean()), 4), round(float(d.std() / len(d) ** 0.5), 4)]
                for method, r in results.items()
                if isinstance(r, dict) and method != base
                for d in [np.array(r["per_query"]) - ref]
            }
    return table


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
