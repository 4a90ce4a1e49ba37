"""Shared fixtures: tiny Qwen3 models, loaded services, and real HTTP servers."""

from __future__ import annotations

import os
import socket
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

from bridge.model.service import EmbeddingService, ServiceOptions  # noqa: E402
from bridge.server.app import ServerSettings, create_app  # noqa: E402

from tiny_qwen3 import build_tiny_qwen3  # noqa: E402


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
    service = make_service(tiny_qwen3_dir, max_batch_tokens=512)
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
    from bridge.engines import cluster

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
