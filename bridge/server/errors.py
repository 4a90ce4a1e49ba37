"""Errors in the OpenAI envelope ``{"error": {"message", "type", "param", "code"}}``.

The one place where errors become HTTP answers: any ``BridgeError`` of the model layer
(``bridge/model/errors.py``) carries its status and code; request validation and routing
errors are mapped here too. Never a 500 for bad input.
"""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge.model.errors import BridgeError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    504: "timeout_error",
    503: "service_unavailable",
}


class APIError(BridgeError):
    """An error found by the HTTP layer itself (a missing key, an empty input list...)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param, retry_after=retry_after)
        self.status = status
        self.code = code  # type: ignore[assignment]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(BaseModel):
    """Every error answer: ``{"error": {...}}``."""

    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries for these error statuses (the envelope's schema)."""
    descriptions = {
        400: "Bad input: invalid JSON, wrong types, empty text, wrong dimension, foreign ids",
        401: "Missing or unknown API key",
        404: "Not served here",
        413: "Request too large: body bytes, number of inputs, or tokens",
        422: "Well-formed but unusable input",
        429: "Overloaded: retry after the Retry-After header's seconds",
        503: "Not ready, shutting down, or the device is unavailable (Retry-After)",
    }
    return {s: {"model": ErrorEnvelope, "description": descriptions[s]} for s in statuses}


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
) -> JSONResponse:
    headers = {}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "server_error"),
            "param": param,
            "code": code,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _describe(err: dict) -> tuple[str, str | None]:
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    param = loc[0] if loc else None
    where = ".".join(loc) if loc else "body"
    return f"{where}: {err.get('msg', 'invalid value')}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BridgeError)
    async def _bridge_error(_: Request, exc: BridgeError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.retry_after)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            return error_response(400, "request body is not valid JSON", None, "invalid_json")
        content_type = request.headers.get("content-type", "")
        if errors and tuple(errors[0].get("loc", ())) == ("body",) and "json" not in content_type:
            return error_response(
                400,
                "send the body as a JSON object with 'Content-Type: application/json'",
                None,
                "invalid_content_type",
            )
        messages = [_describe(e) for e in errors[:5]]
        param = messages[0][1] if messages else None
        text = "; ".join(m for m, _ in messages) or "invalid request"
        if param in ("input", "inputs"):
            text = (
                f"{param} must be a string, a list of strings, a list of token ids "
                "or a list of token-id lists"
            )
        elif param is None:
            text = "the request body must be a JSON object"
        return error_response(400, text, param, "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), None, None)
