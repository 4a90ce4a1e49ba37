"""Client of the bridge's embedding service: requests spread over several URLs by least
outstanding requests, fail-over to the others, and retries."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import numpy as np
import pybase64

from bridge.clients.errors import ClientError
from bridge.clients.retry import DEFAULT_RETRY_SECONDS, call_with_retries


@dataclass(frozen=True)
class ModelInfo:
    name: str
    native_dimension: int
    min_dimension: int
    max_dimension: int
    max_input_tokens: int


FAILED_URL_COOLDOWN_SECONDS = 5.0  # a URL that just failed is tried after the others


class UrlBalancer:
    """Orders URLs for each request: fewest requests in flight first (from every thread
    sharing the client), URLs that failed in the last few seconds last, ties in turn."""

    def __init__(self, count: int, cooldown: float = FAILED_URL_COOLDOWN_SECONDS) -> None:
        self.outstanding = [0] * count
        self.failed_at = [float("-inf")] * count
        self.cooldown = cooldown
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def order(self) -> list[int]:
        now = time.monotonic()
        with self._lock:
            start = next(self._turn) % len(self.outstanding)
            return sorted(
                range(len(self.outstanding)),
                key=lambda i: (
                    now - self.failed_at[i] < self.cooldown,
                    self.outstanding[i],
                    (i - start) % len(self.outstanding),
                ),
            )

    @contextmanager
    def in_flight(self, index: int) -> Iterator[None]:
        with self._lock:
            self.outstanding[index] += 1
        try:
            yield
        finally:
            with self._lock:
                self.outstanding[index] -= 1

    def failed(self, index: int) -> None:
        with self._lock:
            self.failed_at[index] = time.monotonic()


@dataclass
class Passage:
    """A passage of a document: its offsets in the body and its vector."""

    start: int
    end: int
    vector: np.ndarray


def _vector(encoded: str) -> np.ndarray:
    return np.frombuffer(pybase64.b64decode(encoded, validate=True), dtype="<f4")


class EmbeddingClient:
    """Embeds texts through ``urls``: each request goes to the URL with the fewest
    requests in flight (several replicas behind no load balancer share the load), and to
    the next one when it fails. Safe to share between threads."""

    def __init__(
        self,
        urls: str | Sequence[str],
        api_key: str | None = None,
        timeout: float = 120.0,
        retry_for: float = DEFAULT_RETRY_SECONDS,
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.api_key = api_key
        if not self.urls:
            raise ValueError("at least one embedding service URL is needed")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=timeout, headers=headers)
        self.retry_for = retry_for
        self.balancer = UrlBalancer(len(self.urls))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: dict | None = None) -> httpx.Response:
        """One request, failing over across the URLs and retrying whole rounds."""
        errors: list[str] = []

        def one_round() -> httpx.Response:
            errors.clear()
            last: httpx.Response | None = None
            failure: httpx.TransportError | None = None
            for index in self.balancer.order():
                url = self.urls[index].rstrip("/") + path
                try:
                    with self.balancer.in_flight(index):
                        response = self._http.request(method, url, json=body)
                except httpx.TransportError as exc:
                    errors.append(f"{url}: {exc.__class__.__name__}: {exc}")
                    failure = exc
                    self.balancer.failed(index)
                    continue
                if response.status_code >= 500 or response.status_code == 429:
                    errors.append(f"{url}: HTTP {response.status_code}")
                    last = response
                    self.balancer.failed(index)
                    continue  # the next URL may be healthy
                return response
            if last is not None:
                return last
            assert failure is not None
            raise failure

        try:
            response = call_with_retries(one_round, within=self.retry_for)
        except httpx.TransportError:
            response = None
        if response is None or response.status_code >= 500 or response.status_code == 429:
            raise ClientError(
                "no embedding service answered: " + "; ".join(errors),
                response.status_code if response is not None else None,
            )
        return response

    def _check(self, response: httpx.Response) -> dict:
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise ClientError(
                f"embedding service answered {response.status_code}: {message}",
                response.status_code,
            )
        return response.json()

    def model_info(self) -> ModelInfo:
        card = self._check(self._request("GET", "/v1/models"))["data"][0]
        return ModelInfo(
            name=card["id"],
            native_dimension=card["native_dimension"],
            min_dimension=card["dimensions"]["min"],
            max_dimension=card["dimensions"]["max"],
            max_input_tokens=card["max_input_tokens"],
        )

    def embed(
        self,
        texts: Sequence[str],
        dimensions: int | None = None,
        input_type: str = "document",
        instruction: str | None = None,
        titles: Sequence[str | None] | None = None,
    ) -> np.ndarray:
        """An (n, d) float32 array, rows in the order of ``texts`` (each embedded under its
        title when ``titles`` is given)."""
        body: dict = {"input": list(texts), "encoding_format": "base64", "input_type": input_type}
        if dimensions is not None:
            body["dimensions"] = dimensions
        if instruction is not None:
            body["instruction"] = instruction
        if titles is not None:
            body["titles"] = list(titles)
        data = self._check(self._request("POST", "/v1/embeddings", body))["data"]
        data.sort(key=lambda d: d["index"])
        return np.stack([_vector(d["embedding"]) for d in data])

    def embed_passages(
        self,
        texts: Sequence[str],
        titles: Sequence[str | None] | None,
        max_tokens: int,
        overlap: int,
        dimensions: int | None = None,
    ) -> list[list[Passage]]:
        """Each document split by the service into passages, each with its vector."""
        body: dict = {
            "input": list(texts),
            "encoding_format": "base64",
            "input_type": "document",
            "passages": {"max_tokens": max_tokens, "overlap": overlap},
        }
        if titles is not None:
            body["titles"] = list(titles)
        if dimensions is not None:
            body["dimensions"] = dimensions
        data = self._check(self._request("POST", "/v1/embeddings", body))["data"]
        data.sort(key=lambda d: d["index"])
        return [
            [Passage(p["start"], p["end"], _vector(p["embedding"])) for p in d["passages"]]
            for d in data
        ]
