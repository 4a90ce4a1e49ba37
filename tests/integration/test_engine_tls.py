"""Engine connections over TLS with credentials: verification on by default, a CA file
accepted, basic auth and API keys sent as the engines expect.

The engine here is a small HTTPS server on loopback with a certificate from a throwaway
CA (trustme) that answers like a node and records the headers it receives.
"""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme

from bridge.cli import main
from bridge.clients.engine import EngineClient
from bridge.clients.errors import ClientError


class FakeNode(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        FakeNode.seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.headers.get("authorization") is None:
            self._answer(401, {"error": {"type": "security_exception", "reason": "no auth"}})
            return
        self._answer(200, {"nodes": {"n1": {"version": "3.6.0"}}})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeNode)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", str(ca_file)
    finally:
        server.shutdown()


def test_unknown_certificate_is_refused_by_default(tls_node):
    url, _ = tls_node
    engine = EngineClient(url, username="u", password="p", retry_for=0)
    with engine, pytest.raises(ClientError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
        engine.info()


def test_ca_file_and_basic_auth(tls_node):
    url, ca_file = tls_node
    FakeNode.seen.clear()
    with EngineClient(url, username="elastic", password="s3cret", ca_file=ca_file) as engine:
        assert engine.info().version == "3.6.0"
    assert FakeNode.seen[-1]["authorization"].startswith("Basic ")


def test_api_key_and_insecure(tls_node):
    url, _ = tls_node
    FakeNode.seen.clear()
    with EngineClient(url, api_key="a2V5OnNlY3JldA==", verify=False) as engine:
        assert engine.info().kind == "opensearch"
    assert FakeNode.seen[-1]["authorization"] == "ApiKey a2V5OnNlY3JldA=="


def test_cli_options_reach_the_engine(tls_node, capsys):
    url, ca_file = tls_node
    FakeNode.seen.clear()
    args = ["search", "x", "--index", "i", "--engine-url", url, "--ca-file", ca_file]
    args += ["--engine-user", "elastic", "--engine-password", "s3cret", "--retry-for", "0"]
    with pytest.raises(SystemExit):
        main(args)  # the fake node knows no index: what matters is how it was asked
    assert FakeNode.seen and FakeNode.seen[-1]["authorization"].startswith("Basic ")
    assert "s3cret" not in capsys.readouterr().err


def test_service_binds_loopback_by_default():
    from bridge.cli import serve

    host = next(p for p in serve.params if p.name == "host")
    assert host.default == "127.0.0.1"
