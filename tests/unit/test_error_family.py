"""Every model-layer error carries its HTTP status and code, mapped in one place."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bridge.model import errors
from bridge.server.errors import APIError, install_error_handlers

CASES = [
    (errors.InputError("input[0] is an empty string", code="empty_input"), 400, "empty_input"),
    (errors.TooLarge("request has 9 tokens, more than the queue holds"), 413, "too_large"),
    (errors.Overloaded("queue full", retry_after=2.5), 429, "overloaded"),
    (errors.ShuttingDown("the embedding service is shutting down"), 503, "shutting_down"),
    (errors.DeviceError("no GPU"), 503, "device_unavailable"),
    (APIError(401, "missing or invalid API key", code="invalid_api_key"), 401, "invalid_api_key"),
]


@pytest.mark.parametrize(("error", "status", "code"), CASES, ids=lambda v: str(v)[:20])
def test_each_error_is_answered_with_its_status_code_and_envelope(error, status, code):
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    answer = TestClient(app).get("/boom")
    assert answer.status_code == status
    body = answer.json()["error"]
    assert body["code"] == code and body["message"] == error.message
    if error.retry_after is not None:
        assert int(answer.headers["Retry-After"]) >= error.retry_after


def test_every_model_error_is_one_family():
    names = "InputError TooLarge Overloaded ShuttingDown ModelSpecError DeviceError Unsupported"
    for name in names.split():
        cls = getattr(errors, name)
        assert issubclass(cls, errors.BridgeError) and 400 <= cls.status < 600, name


def test_overloaded_says_so_and_when_to_retry():
    error = errors.Overloaded("512 tokens queued", retry_after=3)
    assert error.message == "overloaded: 512 tokens queued" and error.retry_after == 3
