"""The retry policy (unit: a scripted ``send``) and fail-over across real servers."""

from __future__ import annotations

import httpx
import pytest

from bridge.clients.embedding import EmbeddingClient
from bridge.clients.engine import EngineClient, redact_url
from bridge.clients.errors import ClientError
from bridge.clients.retry import call_with_retries

from conftest import free_port

REQUEST = httpx.Request("GET", "http://127.0.0.1/")


def scripted(*answers):
    """A ``send`` that returns (or raises) each answer in turn, counting calls."""
    calls = []

    def send():
        answer = answers[min(len(calls), len(answers) - 1)]
        calls.append(answer)
        if isinstance(answer, Exception):
            raise answer
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return httpx.Response(status, headers=headers, request=REQUEST)

    return send, calls


def test_connection_errors_then_success():
    send, calls = scripted(httpx.ConnectError("down"), httpx.ReadTimeout("slow"), 200)
    waits: list[float] = []
    assert call_with_retries(send, sleep=waits.append).status_code == 200
    assert len(calls) == 3 and len(waits) == 2


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses(status):
    send, calls = scripted(status, 200)
    assert call_with_retries(send, sleep=lambda _: None).status_code == 200
    assert len(calls) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 413, 500])
def test_other_statuses_are_not_retried(status):
    send, calls = scripted(status, 200)
    assert call_with_retries(send, sleep=lambda _: None).status_code == status
    assert len(calls) == 1


def test_retry_after_is_honoured():
    send, _ = scripted((429, {"retry-after": "7"}), 200)
    waits: list[float] = []
    call_with_retries(send, sleep=waits.append)
    assert waits == [7.0]


def test_gives_up_after_the_time_budget():
    send, calls = scripted(503)
    assert call_with_retries(send, within=0, sleep=lambda _: None).status_code == 503
    assert len(calls) == 1
    send, _ = scripted(httpx.ConnectError("down"))
    with pytest.raises(httpx.ConnectError):
        call_with_retries(send, within=0, sleep=lambda _: None)


def test_embedding_client_fails_over_to_a_live_server(qwen3_server):
    dead = f"http://127.0.0.1:{free_port()}"
    with EmbeddingClient([dead, qwen3_server.url], retry_for=0) as client:
        assert client.embed(["fail over"]).shape[0] == 1
        assert client.balancer.order()[0] == 1  # the live one is tried first from now on
    with EmbeddingClient([dead], retry_for=0) as client, pytest.raises(ClientError) as err:
        client.embed(["nobody home"])
    assert "no embedding service answered" in str(err.value) and dead in str(err.value)


def test_engine_credentials_stay_out_of_messages():
    assert redact_url("https://elastic:s3cret@host:9200") == "https://***@host:9200"
    assert redact_url("http://host:9200/a@b") == "http://host:9200/a@b"
    url = f"http://elastic:s3cret@127.0.0.1:{free_port()}"
    with EngineClient(url, retry_for=0) as engine, pytest.raises(ClientError) as err:
        engine.info()
    assert "s3cret" not in str(err.value)
