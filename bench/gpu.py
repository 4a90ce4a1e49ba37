"""GPU benchmark: Qwen3-Embedding-4B (architecture, random weights, or real weights) —
our service against sentence-transformers and plain transformers, in one run.

    python bench/gpu.py --out $OUT/gpu.json            # builds the 4B architecture
    python bench/gpu.py --model /path/to/Qwen3-Embedding-4B

Random weights give the same FLOPs and memory traffic as the real checkpoint. Texts are
made of single-token words so that token counts are exact.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import math
import multiprocessing
import os
import random
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

END_ID = 151643
QWEN3_4B = dict(
    vocab_size=151665, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
    rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
)  # fmt: skip
VOCAB_WORDS = 20000


def word(i: int) -> str:
    return f"w{i}"


def build_model_dir(path: Path, layers: int | None) -> Path:
    """Qwen3-Embedding-4B architecture with random bf16 weights, a word-level tokenizer
    (one token a word, ending every input with 151643) and sentence-transformers files."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model

    if (path / "config.json").exists():
        return path
    config = Qwen3Config(**{**QWEN3_4B, **({"num_hidden_layers": layers} if layers else {})})
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen3Model(config).to(torch.bfloat16)
    model.save_pretrained(path)
    del model
    torch.cuda.empty_cache()
    vocab = {"[UNK]": 0, "<|endoftext|>": END_ID}
    for i in range(VOCAB_WORDS):
        vocab[word(i)] = 1000 + i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A <|endoftext|>", special_tokens=[("<|endoftext|>", END_ID)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="<|endoftext|>",
        eos_token="<|endoftext|>", model_max_length=32768,
    ).save_pretrained(path)  # fmt: skip
    kinds = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    modules = [
        {"idx": i, "name": str(i), "path": p, "type": f"sentence_transformers.models.{k}"}
        for i, (p, k) in enumerate(kinds)
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": config.hidden_size, "pooling_mode_lasttoken": True}
    ))  # fmt: skip
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8192}))
    (path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {}}))
    return path


def texts_of_lengths(lengths: list[int], seed: int) -> list[str]:
    """Texts of exactly ``n - 1`` words (the tokenizer adds the end token: n tokens)."""
    rng = random.Random(seed)
    return [" ".join(word(rng.randrange(VOCAB_WORDS)) for _ in range(n - 1)) for n in lengths]


def mixed_lengths(n: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [int(min(1024, max(8, rng.lognormvariate(math.log(120), 0.9)))) for _ in range(n)]


def host_cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        name = next(x.split(":", 1)[1].strip() for x in lines if x.startswith("model name"))
    except (OSError, StopIteration):
        name = "unknown"
    return f"{name}, {os.cpu_count()} cores"


def sync_time(fn) -> float:
    torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - started


def gemm_ceiling() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    seconds = sync_time(lambda: [a @ b for _ in range(20)]) / 20
    return 2 * 8192**3 / seconds / 1e12


def run_st(model_dir: Path, texts: list[str], batch_size: int) -> dict:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cuda", model_kwargs={"dtype": torch.bfloat16})
    st.encode(texts[:64], batch_size=batch_size)
    torch.cuda.reset_peak_memory_stats()

    def encode() -> None:
        st.encode(texts, batch_size=batch_size)

    seconds = sync_time(encode)
    peak = torch.cuda.max_memory_allocated()
    return {"seconds": seconds, "peak_gpu_bytes": peak, "batch_size": batch_size}


class BatchLog:
    """The batcher's observer: how many batches, and how long the forward passes took."""

    def __init__(self) -> None:
        self.batches, self.seconds = 0, 0.0

    def __call__(self, items: int, padded: int, real: int, seconds: float) -> None:
        self.batches += 1
        self.seconds += seconds


BATCHES = BatchLog()


def run_ours_inprocess(service, texts: list[str], per_request: int = 32) -> dict:
    service.embed_sync(texts[:64])
    torch.cuda.reset_peak_memory_stats()
    BATCHES.__init__()

    def go() -> None:
        futures = [
            service.batcher.submit(service.prepare(texts[i : i + per_request]))
            for i in range(0, len(texts), per_request)
        ]
        for f in futures:
            f.result()

    seconds = sync_time(go)
    return {
        "seconds": seconds,
        "peak_gpu_bytes": torch.cuda.max_memory_allocated(),
        "batches": BATCHES.batches,
        "forward_busy_fraction": BATCHES.seconds / seconds,  # one GPU
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_http(service):
    import httpx
    import uvicorn

    from bridge.server.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready")


_CLIENT_PROCESS: ProcessPoolExecutor | None = None


def in_client_process(fn, *args):
    """Run a client function in its own process: clients of a server are other processes,
    and threads of ours would compete with the server's for this process's GIL."""
    global _CLIENT_PROCESS
    if _CLIENT_PROCESS is None:
        _CLIENT_PROCESS = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    return _CLIENT_PROCESS.submit(fn, *args).result()


def run_http(url: str, texts: list[str], clients: int, per_request: int) -> dict:
    import httpx
    import numpy as np

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    with httpx.Client(timeout=600, limits=limits) as http:

        def send(chunk: list[str]) -> int:
            r = http.post(
                url + "/v1/embeddings", json={"input": chunk, "encoding_format": "base64"}
            )
            r.raise_for_status()
            return len(
                [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in r.json()["data"]]
            )

        send(texts[:8])
        chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            done = sum(pool.map(send, chunks))
        seconds = time.perf_counter() - started
    assert done == len(texts)
    return {"seconds": seconds, "clients": clients, "texts_per_request": per_request}


def latency(url: str, texts: list[list[str]], n: int) -> dict:
    import httpx

    times = []
    with httpx.Client(timeout=60) as http:
        for i in range(n + 10):
            body = {"input": texts[i % len(texts)], "encoding_format": "base64"}
            started = time.perf_counter()
            http.post(url + "/v1/embeddings", json=body).raise_for_status()
            if i >= 10:
                times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "n": n,
        "p50_ms": statistics.median(times),
        "p95_ms": times[int(0.95 * (len(times) - 1))],
        "p99_ms": times[int(0.99 * (len(times) - 1))],
    }


def reference_check(model_dir: Path, service, texts: list[str]) -> dict:
    """Minimum cosines of ours and of transformers in bf16 (left pad, last token) against
    transformers in float32 one text at a time (the exact result), and against each other.

    On random weights bf16 rounding alone moves the result by ~1e-3 (transformers batched
    against itself one at a time), so the float32 distances are what tells accuracy."""
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")

    def embed(model, batch_texts: list[str]) -> torch.Tensor:
        batch = tokenizer(batch_texts, padding=True, return_tensors="pt").to("cuda")
        with torch.inference_mode():
            return F.normalize(model(**batch).last_hidden_state[:, -1].float(), dim=-1).cpu()

    def load(dtype):
        return AutoModel.from_pretrained(model_dir, dtype=dtype).cuda().eval()

    model = load(torch.float32)
    exact = torch.cat([embed(model, [t]) for t in texts])
    del model
    torch.cuda.empty_cache()
    model = load(torch.bfloat16)
    batched = embed(model, texts)
    single = torch.cat([embed(model, [t]) for t in texts])
    del model
    torch.cuda.empty_cache()
    ours = torch.from_numpy(service.embed_sync(texts).vectors)
    ours_single = torch.cat([torch.from_numpy(service.embed_sync([t]).vectors) for t in texts])

    def low(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a * b).sum(-1).min())

    return {
        "ours_vs_fp32": low(ours, exact),
        "ours_single_vs_fp32": low(ours_single, exact),
        "reference_bf16_single_vs_fp32": low(single, exact),
        "reference_bf16_batched_vs_fp32": low(batched, exact),
        "ours_vs_reference_batched": low(ours, batched),
        "ours_vs_reference_single": low(ours, single),
        "ours_single_vs_reference_single": low(ours_single, single),
        "reference_batched_vs_single": low(batched, single),
    }


def graph_check(service, seed: int = 7) -> float | None:
    """Lowest cosine between graph replays and eager passes over mixed small batches."""
    import numpy as np

    embedder = service.embedder
    if embedder.graphs is None:
        return None
    rng = random.Random(seed)
    worst = 1.0
    for _ in range(40):
        rows = rng.choice([1, 2, 3, 5, 7, 10, 16, 30])
        batch = [[1000 + rng.randrange(VOCAB_WORDS) for _ in range(rng.randint(4, 120))]
                 for _ in range(rows)]  # fmt: skip
        batch = [seq + [END_ID] for seq in batch]
        graphed = embedder.forward(batch)
        graphs, embedder.graphs = embedder.graphs, None
        eager = embedder.forward(batch)
        embedder.graphs = graphs
        a = graphed / np.linalg.norm(graphed, axis=1, keepdims=True)
        b = eager / np.linalg.norm(eager, axis=1, keepdims=True)
        worst = min(worst, float((a * b).sum(axis=1).min()))
    return worst


def scaling(serve, one_gpu, mixed, mixed_tokens, fixed, fixed_tokens, args) -> dict:
    """Throughput on every visible GPU (one worker each, one queue) against one GPU."""
    one_gpu.close()
    every = serve("cuda")
    every.warm_up()
    out: dict = {"gpus": len(every.embedders)}
    for name, texts, tokens in (("mixed", mixed, mixed_tokens), ("fixed512", fixed, fixed_tokens)):
        r = run_ours_inprocess(every, texts)
        out[f"inprocess_{name}_tokens_per_s"] = tokens / r["seconds"]
    server, url = start_http(every)
    r = in_client_process(run_http, url, mixed, args.clients * out["gpus"], 32)
    out["http_mixed_tokens_per_s"] = mixed_tokens / r["seconds"]
    server.should_exit = True
    print(f"scaling over {out['gpus']} GPUs: {out}", flush=True)
    return out


def measure(service, workloads: dict, args, quantize: str) -> dict:
    """One server configuration: in-process and over HTTP on each workload, then latency."""
    out: dict = {}
    from bridge.model.fp8 import Fp8Linear

    model = service.embedder.model
    params = sum(p.numel() for p in model.parameters())  # FP8 weights are not parameters
    params += sum(m.fp8.weight.numel() for m in model.modules() if isinstance(m, Fp8Linear))
    gemm_params = params - QWEN3_4B["vocab_size"] * QWEN3_4B["hidden_size"]
    out["graphs_vs_eager_cosine_min"] = graph_check(service)
    for name, (texts, tokens) in workloads.items():
        r = run_ours_inprocess(service, texts)
        r["tokens_per_s"] = tokens / r["seconds"]
        r["tflops"] = 2 * gemm_params * tokens / r["seconds"] / 1e12
        out[f"inprocess_{name}"] = r
        print(f"[{quantize}] in-process {name}: {r['tokens_per_s']:.0f} tok/s", flush=True)
    server, url = start_http(service)
    for name in ("mixed", "long"):
        texts, tokens = workloads[name]
        r = in_client_process(run_http, url, texts, args.clients, 32)
        r["tokens_per_s"] = tokens / r["seconds"]
        out[f"http_{name}"] = r
        print(f"[{quantize}] over HTTP {name}: {r['tokens_per_s']:.0f} tok/s", flush=True)
    short = [[t] for t in texts_of_lengths([16] * 50, seed=4)]
    ten = [texts_of_lengths([128] * 10, seed=5 + i) for i in range(20)]
    out["latency_one_query_16"] = in_client_process(latency, url, short, 200)
    out["latency_10x128"] = in_client_process(latency, url, ten, 200)
    print(f"[{quantize}] latency 1x16: {out['latency_one_query_16']}", flush=True)
    print(f"[{quantize}] latency 10x128: {out['latency_10x128']}", flush=True)
    if args.eager_latency and service.embedder.graphs is not None:
        graphs, service.embedder.graphs = service.embedder.graphs, None
        out["latency_one_query_16_eager"] = in_client_process(latency, url, short, 200)
        out["latency_10x128_eager"] = in_client_process(latency, url, ten, 200)
        service.embedder.graphs = graphs
    server.should_exit = True
    longest = texts_of_lengths([service.max_input_tokens] * 4, seed=9)
    torch.cuda.reset_peak_memory_stats()
    service.embed_sync(longest)
    out["longest_input_tokens"] = service.max_input_tokens
    out["longest_input_peak_gpu_bytes"] = torch.cuda.max_memory_allocated()
    return out


def long_lengths(n: int, seed: int = 21) -> list[int]:
    """Longer texts: log-normal, median ~200 tokens, 8 to 2,048."""
    rng = random.Random(seed)
    return [int(min(2048, max(8, rng.lognormvariate(math.log(200), 0.9)))) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", default=None, help="Real weights; default builds the 4B architecture."
    )
    parser.add_argument("--build-dir", type=Path, default=Path("/tmp/qwen3-4b-random"))
    parser.add_argument("--layers", type=int, default=None, help="Fewer layers for a smoke run.")
    parser.add_argument("--texts", type=int, default=4096, help="Mixed texts (median 120).")
    parser.add_argument("--long-texts", type=int, default=3000, help="Long texts (median 200).")
    parser.add_argument("--fixed", type=int, default=1024, help="Texts of exactly 512 tokens.")
    parser.add_argument("--max-batch-tokens", type=int, default=32768)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--quantize", default="none,fp8", help="Server precisions to measure, in order."
    )
    parser.add_argument("--skip-st", action="store_true")
    parser.add_argument(
        "--reference", action="store_true", help="Also check cosines against transformers."
    )
    parser.add_argument(
        "--eager-latency", action="store_true", help="Also time latency with graphs set aside."
    )
    parser.add_argument("--compile", action="store_true", help="Serve with torch.compile.")
    parser.add_argument(
        "--no-cuda-graphs", action="store_true", help="Serve without CUDA graphs for small batches."
    )
    parser.add_argument(
        "--no-fused-kernels", action="store_true", help="Serve without the Triton kernels."
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="Also serve on every visible GPU (one worker each) and compare with one GPU.",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu.json"))
    args = parser.parse_args()

    import transformers

    from bridge.model.service import EmbeddingService, ServiceOptions

    result: dict = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "host_cpu": host_cpu(),  # latency over HTTP depends on it (Python, tokenizer)
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "clients": args.clients,
    }

    def save() -> None:  # after every phase: a run cut short still leaves its numbers
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    result["gemm_bf16_tflops"] = gemm_ceiling()
    print(f"GEMM ceiling {result['gemm_bf16_tflops']:.0f} TFLOP/s", flush=True)
    model_dir = Path(args.model) if args.model else build_model_dir(args.build_dir, args.layers)

    mixed = texts_of_lengths(mixed_lengths(args.texts), seed=2)
    long = texts_of_lengths(long_lengths(args.long_texts), seed=22)
    fixed = texts_of_lengths([512] * args.fixed, seed=3)
    workloads = {
        name: (texts, sum(len(t.split()) + 1 for t in texts))
        for name, texts in (("mixed", mixed), ("long", long), ("fixed512", fixed))
    }
    result["workloads"] = {
        name: {"texts": len(t), "tokens": n} for name, (t, n) in workloads.items()
    }

    if not args.skip_st:
        for name, (texts, tokens) in workloads.items():
            for bs in (32, 128) if name == "mixed" else (128,):
                r = run_st(model_dir, texts, bs)
                gc.collect()
                torch.cuda.empty_cache()
                r["tokens_per_s"] = tokens / r["seconds"]
                result[f"st_{name}_bs{bs}"] = r
                print(
                    f"sentence-transformers {name} bs{bs}: {r['tokens_per_s']:.0f} tok/s",
                    flush=True,
                )
        save()

    def serve(device: str, quantize: str):
        return EmbeddingService.from_options(
            ServiceOptions(
                model=str(model_dir),
                device=device,
                max_batch_tokens=args.max_batch_tokens,
                max_queue_tokens=10**9,  # the in-process run queues the whole corpus at once
                compile=args.compile,
                cuda_graphs=not args.no_cuda_graphs,
                fused_kernels=not args.no_fused_kernels,
                quantize=quantize,
            ),
            observer=BATCHES,
        )

    result["gpus_visible"] = torch.cuda.device_count()
    result["cuda_graphs"] = not args.no_cuda_graphs
    result["fused_kernels"] = not args.no_fused_kernels
    result["compile"] = args.compile
    result["modes"] = {}
    service = None
    for quantize in args.quantize.split(","):
        label = "bf16" if quantize == "none" else quantize
        service = serve("cuda:0", quantize)
        started = time.perf_counter()
        service.warm_up()
        mode: dict = {"warm_up_seconds": time.perf_counter() - started}
        print(f"[{label}] warm-up {mode['warm_up_seconds']:.0f} s", flush=True)
        if args.reference and quantize == "none":
            mode["cosine_min"] = reference_check(model_dir, service, mixed[:64])
        mode["weights_gpu_bytes"] = torch.cuda.memory_allocated()
        result["modes"][label] = mode
        mode.update(measure(service, workloads, args, label))
        st = {name: result.get(f"st_{name}_bs128", {}).get("tokens_per_s") for name in workloads}
        for name in ("mixed", "long"):
            if st[name]:
                mode[f"ratio_inprocess_vs_st128_{name}"] = (
                    mode[f"inprocess_{name}"]["tokens_per_s"] / st[name]
                )
                mode[f"ratio_http_vs_st128_{name}"] = (
                    mode[f"http_{name}"]["tokens_per_s"] / st[name]
                )
        mode["fixed512_fraction_of_bf16_gemm"] = (
            mode["inprocess_fixed512"]["tflops"] / result["gemm_bf16_tflops"]
        )
        save()
        if quantize != args.quantize.split(",")[-1]:
            service.close()
            service = None
            gc.collect()
            torch.cuda.empty_cache()

    if args.scaling and torch.cuda.device_count() > 1 and service is not None:
        one = result["modes"][list(result["modes"])[-1]]
        sc = scaling(
            lambda device: serve(device, args.quantize.split(",")[-1]),
            service, mixed, workloads["mixed"][1], fixed, workloads["fixed512"][1], args,
        )  # fmt: skip
        sc["inprocess_mixed_speedup"] = (
            sc["inprocess_mixed_tokens_per_s"] / one["inprocess_mixed"]["tokens_per_s"]
        )
        sc["inprocess_fixed512_speedup"] = (
            sc["inprocess_fixed512_tokens_per_s"] / one["inprocess_fixed512"]["tokens_per_s"]
        )
        sc["http_mixed_speedup"] = sc["http_mixed_tokens_per_s"] / one["http_mixed"]["tokens_per_s"]
        result["scaling"] = sc
    save()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
