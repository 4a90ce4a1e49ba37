"""Start time and memory of one local node per engine (docs/engines.md quotes these)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from pathlib import Path

import psutil

from bridge.nodes import cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(engine: str, version: str | None, heap: str) -> dict:
    dist_home = cluster.install(cluster.distribution(engine, version), progress=False)
    port = free_port()
    started = time.perf_counter()
    state = cluster.start(engine, version, port=port, heap=heap, fresh=True, progress=False)
    seconds = time.perf_counter() - started
    time.sleep(5)
    node = psutil.Process(state.nodes[0].pid)  # Elasticsearch: a launcher and its server JVM
    rss = sum(p.memory_info().rss for p in [node, *node.children(recursive=True)])
    cluster.stop(engine, port, wipe=True)
    return {
        "engine": engine,
        "version": state.version,
        "heap": heap,
        "seconds_to_green": round(seconds, 1),
        "rss_bytes": rss,
        "java": state.java,
        "install": str(dist_home),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--heap", default="1g")
    parser.add_argument("--out", type=Path, default=Path("bench/results/engine_start.json"))
    parser.add_argument(
        "--engines", default="opensearch,elasticsearch,elasticsearch@8.19.21",
        help="Comma-separated engine[@version] list.",
    )  # fmt: skip
    args = parser.parse_args()
    results = []
    for spec in args.engines.split(","):
        engine, _, version = spec.partition("@")
        result = measure(engine, version or None, args.heap)
        print(json.dumps(result))
        results.append(result)
    out = {"cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ"), "nodes": results}
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
