"""Errors raised by the bridge's HTTP clients."""

from __future__ import annotations


class ClientError(RuntimeError):
    """A request failed for good (after retries, or a non-retryable answer)."""

    def __init__(self, message: str, status: int | None = None, body: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
