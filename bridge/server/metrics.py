"""Prometheus metrics of one server instance (its own registry, so tests can run several)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: N811
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE", "Metrics"]

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
_TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 262144)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bridge_requests_total",
            "HTTP requests by route and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bridge_request_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_tokens = Histogram(
            "bridge_batch_padded_tokens",
            "Padded tokens per model batch.",
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.batch_items = Histogram(
            "bridge_batch_items",
            "Sequences per model batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "bridge_batch_seconds",
            "Model forward time per batch.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "bridge_tokens_embedded_total",
            "Real (unpadded) tokens embedded.",
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "bridge_queue_depth", "Sequences waiting for the model.", registry=self.registry
        )
        self.queue_tokens = Gauge(
            "bridge_queue_tokens", "Tokens waiting for the model.", registry=self.registry
        )
        self.queue_limit = Gauge(
            "bridge_queue_limit_tokens",
            "Tokens allowed to wait before 429 (queue seconds x measured throughput).",
            registry=self.registry,
        )
        self.dropped = Counter(
            "bridge_dropped_inputs_total",
            "Queued inputs dropped unembedded: their client left (cancelled) or their "
            "deadline passed (deadline).",
            ["reason"],
            registry=self.registry,
        )
        self.workers_alive = Gauge(
            "bridge_workers_alive",
            "1 while every batcher worker runs, 0 when one died (the process must restart).",
            registry=self.registry,
        )
        self.gpu_memory = Gauge(
            "bridge_gpu_memory_bytes",
            "GPU memory held by the model process (allocated and reserved).",
            ["kind"],
            registry=self.registry,
        )

    def observe_batch(self, items: int, padded: int, real: int, seconds: float) -> None:
        self.batch_items.observe(items)
        self.batch_tokens.observe(padded)
        self.batch_seconds.observe(seconds)
        self.tokens.inc(real)

    def observe_drop(self, reason: str, inputs: int) -> None:
        self.dropped.labels(reason).inc(inputs)

    def track_queue(
        self,
        items: Callable[[], float],
        tokens: Callable[[], float],
        limit: Callable[[], float],
        alive: Callable[[], float],
    ) -> None:
        self.queue_depth.set_function(items)
        self.queue_tokens.set_function(tokens)
        self.queue_limit.set_function(limit)
        self.workers_alive.set_function(alive)

    def track_gpu(self, allocated: Callable[[], float], reserved: Callable[[], float]) -> None:
        self.gpu_memory.labels("allocated").set_function(allocated)
        self.gpu_memory.labels("reserved").set_function(reserved)

    def render(self) -> bytes:
        return generate_latest(self.registry)
