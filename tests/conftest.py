"""Shared fixtures: tiny Qwen3 models, loaded services, and real HTTP servers."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bridge.clients.engine import EngineClient  # noqa: E402
from bridge.index.ingest import Indexer, IngestSummary, as_docs  # noqa: E402
from bridge.model.service import EmbeddingService, ServiceOptions  # noqa: E402
from bridge.server.app import ServerSettings, create_app  # noqa: E402

from tiny_qwen3 import WORDS, build_tiny_qwen3  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A uvicorn server on a loopback port, in a thread of the test process."""

    def __init__(self, service: EmbeddingService, settings: ServerSettings | None = None):
        self.service = service
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(service, settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("test server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class ServiceProcess:
    """``bridge serve`` as its own process (fault tests kill and restart it)."""

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.args = args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = b""

    def start(self, timeout: float = 120) -> ServiceProcess:
        cmd = [sys.executable, "-m", "bridge.cli", "serve", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"bridge serve did not become ready: {self.log[-2000:]!r}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self._collect()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        self._collect()

    def _collect(self) -> None:
        if self.proc is not None:
            out, _ = self.proc.communicate(timeout=60)
            self.log += out or b""
            self.proc = None


@contextmanager
def live_server(
    service: EmbeddingService, settings: ServerSettings | None = None
) -> Iterator[LiveServer]:
    server = LiveServer(service, settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen3(tmp_path_factory.mktemp("models") / "tiny-qwen3")


@pytest.fixture(scope="session")
def tiny_qwen3_no_end_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen3(tmp_path_factory.mktemp("models") / "tiny-qwen3-noend", False)


def make_service(model: str | Path, **kw) -> EmbeddingService:
    options = ServiceOptions(model=str(model), device="cpu", **kw)
    return EmbeddingService.from_options(options)


@pytest.fixture(scope="session")
def qwen3_server(tiny_qwen3_dir) -> Iterator[LiveServer]:
    service = make_service(tiny_qwen3_dir, max_batch_tokens=512, allow_token_ids=True)
    with live_server(service) as server:
        yield server


@pytest.fixture(scope="session")
def minilm_server() -> Iterator[LiveServer]:
    service = make_service("minilm", max_batch_tokens=4096)
    with live_server(service) as server:
        yield server


def free_port_pair() -> int:
    """A port P with P and P+100 (the transport port) both free."""
    for _ in range(50):
        port = free_port()
        if port + 100 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 100))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@contextmanager
def local_engine(engine: str, env_var: str, **kw) -> Iterator[str]:
    """A running engine: the one named by ``env_var``, else one started with bridge engine."""
    from bridge.nodes import cluster

    if os.environ.get(env_var):
        yield os.environ[env_var].rstrip("/")
        return
    port = free_port_pair()
    state = cluster.start(engine, port=port, fresh=True, progress=False, **kw)
    try:
        yield state.url
    finally:
        cluster.stop(engine, port, wipe=True)


@pytest.fixture(scope="session")
def opensearch_url() -> Iterator[str]:
    with local_engine("opensearch", "BRIDGE_TEST_OPENSEARCH_URL", heap="1g") as url:
        yield url


@pytest.fixture(scope="session")
def elasticsearch_url() -> Iterator[str]:
    with local_engine("elasticsearch", "BRIDGE_TEST_ELASTICSEARCH_URL", heap="1g") as url:
        yield url


# Ingest helpers of the fault tests.


def corpus(n: int, prefix: str) -> list[dict]:
    rng = random.Random(prefix)
    return [
        {"_id": f"{prefix}-{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(5, 30)))}
        for i in range(n)
    ]


class Background:
    """``Indexer.ingest`` in a thread; ``join`` returns its summary."""

    def __init__(self, indexer: Indexer, docs: list[dict]) -> None:
        self.summary: IngestSummary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(indexer, docs), daemon=True)
        self.thread.start()

    def _run(self, indexer: Indexer, docs: list[dict]) -> None:
        try:
            self.summary = indexer.ingest(as_docs(docs))
        except BaseException as exc:  # noqa: BLE001 - reported by join
            self.error = exc

    def join(self, timeout: float = 300) -> IngestSummary:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "ingest did not finish"
        if self.error:
            raise self.error
        assert self.summary is not None
        return self.summary


def wait_count(engine: EngineClient, index: str, at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = engine.request("GET", f"/{index}/_count", missing_ok=True)
        if answer and answer["count"] >= at_least:
            return
        time.sleep(0.1)
    raise AssertionError(f"{index} never reached {at_least} documents")


def indexed_ids(engine: EngineClient, index: str) -> list[str]:
    """The ids of the documents ``index`` holds, after a refresh (up to 10,000)."""
    engine.request("POST", f"/{index}/_refresh")
    body = {"size": 10000, "_source": False, "query": {"match_all": {}}}
    return [h["_id"] for h in engine.request("POST", f"/{index}/_search", body)["hits"]["hits"]]


def assert_exactly_once(engine: EngineClient, index: str, docs: list[dict]) -> None:
    ids = indexed_ids(engine, index)
    missing = sorted({d["_id"] for d in docs} - set(ids))
    indices = engine.request("GET", "/_cat/indices?format=json&h=index,docs.count")
    assert not missing, f"{len(missing)} missing, e.g. {missing[:5]}; indices: {indices}"
    assert engine.request("GET", f"/{index}/_count")["count"] == len(docs)
    assert sorted(ids) == sorted(d["_id"] for d in docs)
