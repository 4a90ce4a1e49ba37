"""The fast path answers valid embedding requests itself and hands everything else to the
app unchanged (so every error answer stays the app's)."""

from __future__ import annotations

import asyncio

import orjson
from starlette.responses import Response

from bridge.model.errors import Overloaded
from bridge.server.auth import KeyStore
from bridge.server.fast_path import EMBEDDINGS_PATH, FastEmbeddings


class App:
    """The inner app: records what reached it, body included."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        self.bodies.append(body)
        await Response(b"app", status_code=418)(scope, receive, send)


def call(fast: FastEmbeddings, body: bytes, headers: dict[str, str], method: str = "POST"):
    """One request through ``fast`` (its body in two chunks); (status, body) back."""
    chunks = [body[:5], body[5:]]
    sent: list[dict] = []

    async def receive() -> dict:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}
        await asyncio.sleep(3600)  # the client stays
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": EMBEDDINGS_PATH,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(fast(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def fast_path(keys: list[str] | None = None, fail: Exception | None = None):
    app, answered = App(), []

    async def answer(request, call) -> Response:
        if fail is not None:
            raise fail
        answered.append((request, call.timeout))
        return Response(b"fast")

    return FastEmbeddings(app, answer, KeyStore(keys), route=object()), app, answered


JSON = {"content-type": "application/json"}
VALID = orjson.dumps({"input": ["a cat"], "encoding_format": "base64", "dimensions": 64})


def test_a_valid_request_is_answered_without_the_app():
    fast, app, answered = fast_path()
    assert call(fast, VALID, {**JSON, "X-Request-Timeout": "2.5"}) == (200, b"fast")
    assert app.bodies == []
    ((request, timeout),) = answered
    assert request.input == ["a cat"] and request.dimensions == 64 and timeout == "2.5"


def test_what_the_fast_path_does_not_take_reaches_the_app_as_sent():
    cases = [
        (b'{"input": ', JSON, "POST"),  # not JSON
        (b'{"input": 3}', JSON, "POST"),  # fails validation
        (b'{"input": []', {"content-type": "text/plain"}, "POST"),  # not declared JSON
        (VALID, JSON, "PUT"),  # another method
    ]
    for body, headers, method in cases:
        fast, app, answered = fast_path()
        assert call(fast, body, headers, method) == (418, b"app")
        assert answered == []
        assert app.bodies == [body]


def test_a_wrong_or_missing_key_is_left_to_the_app_and_a_right_one_is_served():
    for headers in (JSON, {**JSON, "Authorization": "Bearer wrong"}):
        fast, app, answered = fast_path(keys=["sesame"])
        assert call(fast, VALID, headers)[0] == 418 and answered == []
    fast, app, answered = fast_path(keys=["sesame"])
    assert call(fast, VALID, {**JSON, "Authorization": "Bearer sesame"}) == (200, b"fast")


def test_errors_of_the_answer_get_the_api_envelope():
    fast, _, _ = fast_path(fail=Overloaded("queue full", retry_after=2.0))
    status, body = call(fast, VALID, JSON)
    assert status == 429
    assert orjson.loads(body)["error"]["message"].endswith("queue full")
