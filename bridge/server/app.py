"""The FastAPI application: every route, limit and error code in one place."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import numpy as np
import orjson
import pybase64
from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import Response

from bridge.model.inputs import InputType
from bridge.model.passages import PassageSpec
from bridge.model.service import EmbeddingService, EmbedResult
from bridge.server.auth import KeyStore
from bridge.server.errors import (
    APIError,
    error_response,
    error_responses,
    install_error_handlers,
)
from bridge.server.fast_path import (
    EMBEDDINGS_PATH,
    Call,
    FastEmbeddings,
    read_body,
    replaying,
)
from bridge.server.lifecycle import Lifecycle, unless_client_leaves
from bridge.server.metrics import CONTENT_TYPE, Metrics
from bridge.server.schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    Health,
    ModelCard,
    ModelList,
    Readiness,
    TEIEmbedRequest,
)
from bridge.server.settings import ServerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


def _json(payload: object, status: int = 200) -> Response:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


class LimitsAndMetrics:
    """ASGI middleware: refuses bodies over the size limit (413) and records metrics."""

    def __init__(self, app, max_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        limit = self.max_bytes

        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._too_large(scope, receive, send)
            self._record(scope, 413, started)
            return

        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # A streamed body: read it within the limit first, then replay it to the app.
            body = await read_body(receive, limit)
            if body is None:
                return
            if len(body) > limit:
                await self._too_large(scope, receive, send)
                self._record(scope, 413, started)
                return
            receive = replaying(body, receive)

        async def recording_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, recording_send)
        self._record(scope, status, started)

    async def _too_large(self, scope, receive, send) -> None:
        response = error_response(
            413,
            f"request body is larger than the limit of {self.max_bytes} bytes",
            None,
            "request_too_large",
        )
        await response(scope, receive, send)

    def _record(self, scope, status: int, started: float) -> None:
        route = scope.get("route")
        name = getattr(route, "path", None) or "other"
        self.metrics.requests.labels(name, str(status)).inc()
        self.metrics.latency.labels(name).observe(time.perf_counter() - started)


def _deadline(raw: str | None) -> float | None:
    """``X-Request-Timeout: SECONDS`` (the client's own timeout) as a monotonic deadline."""
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86400:
        raise APIError(
            400,
            f"X-Request-Timeout must be a number of seconds above 0, not {raw!r}",
            param="X-Request-Timeout",
            code="invalid_timeout",
        )
    return time.monotonic() + seconds


def _as_inputs(value: object, max_inputs: int) -> Sequence[str] | Sequence[Sequence[int]]:
    """Normalise the four accepted input shapes to a list of texts or of token lists."""
    if isinstance(value, str):
        items: list = [value]
    elif value and isinstance(value[0], int):  # type: ignore[index]
        items = [value]
    else:
        items = list(value)  # type: ignore[arg-type]
    if not items:
        raise APIError(400, "input must not be empty", param="input", code="empty_input")
    if len(items) > max_inputs:
        raise APIError(
            413,
            f"{len(items)} inputs in one request; the limit is {max_inputs}",
            param="input",
            code="too_many_inputs",
        )
    return items


def _titles(body: EmbeddingRequest, count: int) -> list[str | None] | None:
    """The request's titles, checked against its inputs."""
    if body.titles is not None and len(body.titles) != count:
        raise APIError(
            400,
            f"titles has {len(body.titles)} entries for {count} inputs; send one per input "
            "(null for none)",
            param="titles",
            code="invalid_titles",
        )
    if (body.titles is not None or body.passages is not None) and body.input_type == "query":
        raise APIError(
            400,
            "titles and passages apply to documents: send input_type=document",
            param="input_type",
            code="invalid_input_type",
        )
    return body.titles


def _floats(vector) -> object:
    return vector


def _base64(vector) -> str:
    """Little-endian float32 bytes in base64 (no copy when ``vector`` already is that)."""
    return pybase64.b64encode(np.ascontiguousarray(vector, dtype="<f4")).decode()


def create_app(service: EmbeddingService, settings: ServerSettings | None = None) -> FastAPI:
    """Build the app around an already-loaded service (warm-up runs in the background)."""
    settings = settings or ServerSettings()
    keys = KeyStore(settings.api_keys, settings.api_key_file)
    metrics = Metrics()
    batcher = service.batcher
    metrics.track_queue(
        lambda: batcher.queued_items,
        lambda: batcher.queued_tokens,
        lambda: batcher.max_queue_tokens,
        lambda: float(batcher.alive),
    )
    batcher.drop_observer = metrics.observe_drop
    lifecycle = Lifecycle()
    devices = [e.device for e in service.embedders if e.device.type == "cuda"]
    if devices:
        import torch

        metrics.track_gpu(
            lambda: sum(torch.cuda.memory_allocated(d) for d in devices),
            lambda: sum(torch.cuda.memory_reserved(d) for d in devices),
        )
    batcher.observer = metrics.observe_batch
    model_name = settings.served_model_name or service.profile.name

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        def warm() -> None:
            try:
                service.warm_up()
                log.info("ready: warm-up forward pass succeeded")
            except Exception:
                log.exception("warm-up forward pass failed; /ready stays false")

        threading.Thread(target=warm, name="bridge-warmup", daemon=True).start()
        yield
        service.close()

    app = FastAPI(
        title="embedding bridge",
        description="Qwen3-Embedding (and sentence-transformers models) behind an "
        "OpenAI-compatible API.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.state.service = service
    app.state.metrics = metrics
    app.state.lifecycle = lifecycle

    async def require_key(
        request: Request, authorization: str | None = Header(default=None)
    ) -> None:
        # async: a sync dependency would cost each request a hop to a worker thread
        if not keys.check(authorization):
            # Logged for operators, never with the key that was sent.
            client = request.client.host if request.client else "?"
            log.warning(
                "refused %s %s from %s: %s API key (401)",
                request.method,
                request.url.path,
                client,
                "missing" if not authorization else "unknown",
            )
            raise APIError(
                401,
                "missing or invalid API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
            )

    # Without keys there is nothing to check: no dependency for FastAPI to resolve (its
    # resolution was ~0.1 ms of each request's host time).
    auth = [Depends(require_key)] if keys.enabled else []

    async def guarded(call: Call, work: Callable[[float | None], Awaitable[T]]) -> T:
        """Run ``work(deadline)`` for one HTTP request: refused while draining, dropped from
        the queue if the client leaves or its ``X-Request-Timeout`` passes. Any BridgeError
        (bad input, overload, shutdown...) is answered by errors.py."""
        deadline = _deadline(call.timeout)
        with lifecycle.request():
            return await unless_client_leaves(call.receive, work(deadline))

    async def run(
        call: Call,
        inputs: Sequence[str] | Sequence[Sequence[int]],
        dimensions: int | None,
        input_type: InputType,
        instruction: str | None,
        truncate: bool,
        normalize: bool = True,
        titles: Sequence[str | None] | None = None,
    ) -> EmbedResult:
        """Embed for one HTTP request (``guarded``)."""
        return await guarded(
            call,
            lambda deadline: service.embed(
                inputs, dimensions, input_type, instruction, truncate, normalize, deadline, titles
            ),
        )

    async def answer_embeddings(body: EmbeddingRequest, call: Call) -> Response:
        """The answer to a valid ``/v1/embeddings`` body (the route's and the fast path's)."""
        inputs = _as_inputs(body.input, settings.max_inputs_per_request)
        titles = _titles(body, len(inputs))
        encode = _base64 if body.encoding_format == "base64" else _floats
        if body.passages is not None:
            spec = PassageSpec.of(body.passages.max_tokens, body.passages.overlap)
            split = await guarded(
                call,
                lambda deadline: service.embed_passages(
                    inputs,  # type: ignore[arg-type]
                    spec,
                    titles,
                    body.dimensions,
                    deadline,
                    settings.max_inputs_per_request,
                ),
            )
            data: list = [
                {
                    "object": "passages",
                    "index": i,
                    "passages": [
                        {"start": start, "end": end, "embedding": encode(v)}
                        for start, end, v in passages
                    ],
                }
                for i, passages in enumerate(split.per_input())
            ]
            tokens = split.prompt_tokens
        else:
            result = await run(
                call,
                inputs,
                body.dimensions,
                body.input_type,
                body.instruction,
                body.truncate,
                titles=titles,
            )
            data = [
                {"object": "embedding", "index": i, "embedding": encode(v)}
                for i, v in enumerate(result.vectors)
            ]
            tokens = result.prompt_tokens
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json({"object": "list", "data": data, "model": model_name, "usage": usage})

    @app.post(
        EMBEDDINGS_PATH,
        dependencies=auth,
        tags=["OpenAI"],
        responses={
            200: {"model": EmbeddingResponse, "description": "One vector per input, in order"},
            **error_responses(400, 401, 413, 429, 503),
        },
    )
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        """Embed texts or token-id lists; `data` comes back in input order. With `passages`,
        each document is split and `data[i].passages` holds its passages' vectors."""
        return await answer_embeddings(body, Call.of(request))

    @app.post(
        "/embed",
        dependencies=auth,
        tags=["TEI"],
        responses={
            200: {"model": list[list[float]], "description": "One vector per input, in order"},
            **error_responses(400, 401, 413, 429, 503),
        },
    )
    async def embed(body: TEIEmbedRequest, request: Request) -> Response:
        """Text-embeddings-inference shape: `{"inputs": ...}` answers `[[...], ...]`."""
        inputs = _as_inputs(body.inputs, settings.max_inputs_per_request)
        result = await run(
            Call.of(request),
            inputs,
            body.dimensions,
            body.input_type,
            body.instruction,
            body.truncate,
            body.normalize,
        )
        return _json(result.vectors)

    def card() -> ModelCard:
        low, high = service.dim_range
        return ModelCard(
            id=model_name,
            native_dimension=service.profile.native_dim,
            dimensions={"min": low, "max": high},
            max_input_tokens=service.max_input_tokens,
            pooling=service.profile.pooling,
            normalized=service.profile.normalize,
        )

    @app.get(
        "/v1/models",
        dependencies=auth,
        tags=["OpenAI"],
        responses=error_responses(401),
    )
    async def models() -> ModelList:
        """The served model, its native and allowed dimensions and its input limit."""
        return ModelList(data=[card()])

    @app.get(
        "/v1/models/{model_id:path}",
        dependencies=auth,
        tags=["OpenAI"],
        responses=error_responses(401, 404),
    )
    async def model(model_id: str) -> ModelCard:
        if model_id != model_name:
            raise APIError(404, f"model {model_id!r} is not served here", param="model")
        return card()

    @app.get(
        "/health",
        tags=["ops"],
        responses={503: {"model": Health, "description": "A model worker died: restart"}},
    )
    async def health() -> Response:
        """The process can serve: 503 when a model worker thread has died."""
        if batcher.alive or lifecycle.draining:
            return _json({"status": "ok"})
        return _json({"status": "worker_dead"}, status=503)

    @app.get(
        "/ready",
        tags=["ops"],
        responses={
            200: {"model": Readiness, "description": "A real forward pass has succeeded"},
            503: {"model": Readiness, "description": "Not ready yet (loading, warming up)"},
        },
    )
    async def ready() -> Response:
        """200 once a real forward pass has succeeded; 503 before, while draining, or when a
        model worker has died."""
        if service.ready and batcher.alive and not lifecycle.draining:
            return _json({"ready": True, "model": model_name})
        return _json({"ready": False, "model": model_name}, status=503)

    @app.get(
        "/metrics",
        tags=["ops"],
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text"}},
    )
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    # Added last, so outermost: limits and metrics around the fast path around FastAPI.
    route = next(r for r in app.routes if getattr(r, "path", None) == EMBEDDINGS_PATH)
    app.add_middleware(FastEmbeddings, answer=answer_embeddings, keys=keys, route=route)
    app.add_middleware(LimitsAndMetrics, max_bytes=settings.max_request_bytes, metrics=metrics)
    return app
