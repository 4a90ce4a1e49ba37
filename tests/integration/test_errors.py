"""Every bad input gets a clear error in the OpenAI envelope, and never a 500."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from bridge.server.app import ServerSettings

from conftest import live_server, make_service


def call(server, body=None, *, content=None, headers=None, path="/v1/embeddings"):
    kwargs = {"json": body} if content is None else {"content": content}
    return httpx.post(server.url + path, headers=headers, timeout=60, **kwargs)


def assert_error(r: httpx.Response, status: int, code: str | None = None, text: str = ""):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if code:
        assert err["code"] == code, err
    assert text in err["message"], err
    return err


@pytest.mark.parametrize(
    ("body", "code", "text"),
    [
        ({"input": "cats", "dimensions": 16}, "invalid_dimensions", "between 32 and 64"),
        ({"input": "cats", "dimensions": 65}, "invalid_dimensions", "between 32 and 64"),
        ({"input": []}, "empty_input", "must not be empty"),
        ({"input": ""}, "empty_input", "empty string"),
        ({"input": ["cats", "  "]}, "empty_input", "input[1]"),
        ({"input": [[]]}, "empty_input", "empty token list"),
        ({"input": [1, 2, 10**9]}, "invalid_token_id", "outside this model's vocabulary"),
        ({"input": [-1]}, "invalid_token_id", "outside"),
        ({"input": [1.5]}, "invalid_request", "must be a string"),
        ({"input": ["a", 1]}, "invalid_request", "must be a string"),
        ({"input": None}, "invalid_request", "must be a string"),
        ({}, "invalid_request", "input"),
        ({"input": "cats", "encoding_format": "hex"}, "invalid_request", "encoding_format"),
        ({"input": "cats", "input_type": "passage"}, "invalid_request", "input_type"),
        ({"input": "cats", "dimensions": "64"}, "invalid_request", "dimensions"),
        ({"input": "cats", "truncate": "maybe"}, "invalid_request", "truncate"),
        (
            {"input": "cats dogs " * 400, "truncate": False},
            "input_too_long",
            "more than the limit of 512",
        ),
    ],
)
def test_bad_requests_are_400(qwen3_server, body, code, text):
    err = assert_error(call(qwen3_server, body), 400, code, text)
    assert err["type"] == "invalid_request_error"


def test_bad_json_and_wrong_shapes(qwen3_server):
    assert_error(call(qwen3_server, content=b"{bad", headers=_json()), 400, "invalid_json")
    assert_error(call(qwen3_server, content=b"[1, 2]", headers=_json()), 400, "invalid_request")
    assert_error(call(qwen3_server, content=b"\xff\xfe", headers=_json()), 400)
    assert_error(call(qwen3_server, content=b'{"input":"x"}'), 400, "invalid_content_type")


def _json() -> dict:
    return {"content-type": "application/json"}


def test_too_long_is_truncated_by_default(qwen3_server):
    r = call(qwen3_server, {"input": "cats dogs " * 400})
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens"] == 512


def test_too_many_inputs_is_413(qwen3_server):
    assert_error(call(qwen3_server, {"input": ["cats"] * 2049}), 413, "too_many_inputs", "2048")


def test_unknown_route_is_enveloped(qwen3_server):
    r = httpx.get(qwen3_server.url + "/v1/nothing")
    assert_error(r, 404)


@pytest.fixture(scope="module")
def small_server(tiny_qwen3_dir):
    service = make_service(tiny_qwen3_dir)
    settings = ServerSettings(max_request_bytes=4096, api_keys=["secret"])
    with live_server(service, settings) as server:
        yield server


def test_body_too_large_is_413(small_server):
    headers = {"authorization": "Bearer secret"}
    r = call(small_server, {"input": "cats " * 2000}, headers=headers)
    assert_error(r, 413, "request_too_large", "4096")

    def chunks():  # no Content-Length: the limit applies to the streamed body too
        yield b'{"input": "'
        for _ in range(100):
            yield b"cats " * 20
        yield b'"}'

    r = call(small_server, content=chunks(), headers={**headers, **_json()})
    assert_error(r, 413, "request_too_large")
    assert call(small_server, {"input": "cats"}, headers=headers).status_code == 200


def test_missing_or_wrong_key_is_401(small_server):
    assert_error(call(small_server, {"input": "cats"}), 401, "invalid_api_key")
    r = call(small_server, {"input": "cats"}, headers={"authorization": "Bearer nope"})
    err = assert_error(r, 401, "invalid_api_key")
    assert "nope" not in err["message"]
    r = call(small_server, {"input": "cats"}, headers={"authorization": "Basic secret"})
    assert_error(r, 401)
    assert httpx.get(small_server.url + "/health").status_code == 200  # ops routes stay open
    metrics = httpx.get(small_server.url + "/metrics").text
    assert "secret" not in metrics and "nope" not in metrics


def test_overload_is_429_with_retry_after(tiny_qwen3_dir):
    service = make_service(tiny_qwen3_dir, max_batch_tokens=64, max_queue_tokens=64)
    forward = service.batcher._forwards[0]

    def slow_forward(batch):
        time.sleep(0.3)
        return forward(batch)

    with live_server(service) as server:
        service.batcher._forwards[0] = slow_forward
        statuses: list[httpx.Response] = []

        def client():
            statuses.append(call(server, {"input": ["cats dogs fish birds rain sun"] * 4}))

        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in statuses)
        assert 200 in codes and 429 in codes, codes
        assert set(codes) <= {200, 429}
        refused = next(r for r in statuses if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert_error(refused, 429, "overloaded")
        # A request that can never fit the queue is 413, not an endless 429.
        assert_error(call(server, {"input": ["cats dogs"] * 40}), 413, "too_large")
        metrics = httpx.get(server.url + "/metrics").text
        assert 'bridge_requests_total{route="/v1/embeddings",status="429"}' in metrics
