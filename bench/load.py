"""Load benchmark: many concurrent clients for minutes against ``bridge serve`` (minilm, CPU).

Phase 1 (steady): ``--clients`` threads send 1-4 short passages each, back to back, for
``--seconds``; errors, latency percentiles, throughput and the server's resident memory
(after warm-up and at the end) are recorded. Phase 2 (overload): a server with a small
queue gets the same clients sending large requests; it must answer 429 with
``Retry-After`` at once rather than let requests time out. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu_service import free_port, passages, start_server  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def hammer(url: str, clients: int, seconds: float, texts: list[str], per_request: tuple[int, int]):
    """Run ``clients`` threads for ``seconds``; returns (latencies ms, status counts, notes)."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    retry_after_missing = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(seed: int) -> None:
        nonlocal retry_after_missing
        rng = random.Random(seed)
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < deadline:
                body = {"input": rng.sample(texts, rng.randint(*per_request))}
                started = time.perf_counter()
                try:
                    r = http.post(url + "/v1/embeddings", json=body)
                    key = str(r.status_code)
                    missing = r.status_code == 429 and "retry-after" not in r.headers
                except httpx.TimeoutException:
                    key, missing = "timeout", False
                except httpx.HTTPError as exc:
                    key, missing = type(exc).__name__, False
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    statuses[key] = statuses.get(key, 0) + 1
                    retry_after_missing += missing
                    if key == "200":
                        latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, statuses, retry_after_missing


def rss_mib(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--warm-up", type=float, default=30)
    parser.add_argument("--overload-seconds", type=float, default=30)
    parser.add_argument("--out", type=Path, default=Path("bench/results/load.json"))
    args = parser.parse_args()
    texts = [" ".join(t.split()[:40]) for t in passages(2000, seed=31)]
    result: dict = {"benchmark": "load", "model": "minilm (cpu)", "cpus": os.cpu_count()}

    port = free_port()
    proc = start_server(port, 1024)
    url = f"http://127.0.0.1:{port}"
    try:
        hammer(url, args.clients, args.warm_up, texts, (1, 4))
        rss_start = rss_mib(proc.pid)
        samples = []
        sampler_stop = threading.Event()

        def sample() -> None:
            while not sampler_stop.wait(5):
                samples.append(rss_mib(proc.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        latencies, statuses, _ = hammer(url, args.clients, args.seconds, texts, (1, 4))
        wall = time.monotonic() - started
        sampler_stop.set()
        sampler.join()
        rss_end = rss_mib(proc.pid)
        result["steady"] = {
            "clients": args.clients,
            "seconds": round(wall, 1),
            "statuses": statuses,
            "errors": sum(v for k, v in statuses.items() if k != "200"),
            "requests_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(statistics.median(latencies), 1),
            "p95_ms": round(percentile(latencies, 0.95), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1),
            "max_ms": round(max(latencies), 1),
            "rss_after_warm_up_mib": round(rss_start, 1),
            "rss_end_mib": round(rss_end, 1),
            "rss_peak_mib": round(max(samples + [rss_end]), 1),
            "rss_growth": round(rss_end / rss_start - 1, 4),
        }
        print(json.dumps(result["steady"]), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)

    port = free_port()
    proc = start_server(port, 1024, "--max-queue-tokens", "8192")
    url = f"http://127.0.0.1:{port}"
    try:
        latencies, statuses, missing = hammer(
            url, args.clients, args.overload_seconds, texts, (16, 32)
        )
        result["overload"] = {
            "clients": args.clients,
            "seconds": args.overload_seconds,
            "max_queue_tokens": 8192,
            "statuses": statuses,
            "timeouts": statuses.get("timeout", 0),
            "429_without_retry_after": missing,
            "p50_ms_of_200": round(statistics.median(latencies), 1) if latencies else None,
        }
        print(json.dumps(result["overload"]), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    result["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
