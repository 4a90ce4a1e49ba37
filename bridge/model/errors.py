"""The model layer's one error family: each error knows the HTTP status and code it means.

The model layer never imports an HTTP framework; ``bridge/server/errors.py`` turns any
``BridgeError`` into the OpenAI error envelope in one place, and ``bridge serve`` reports
one at start-up as a one-line message.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the service answers or reports on purpose.

    ``status`` and ``code`` are the HTTP status and the envelope's ``code``; ``param`` names
    the request field at fault; ``retry_after`` (seconds) becomes a ``Retry-After`` header.
    """

    status: int = 500
    code: str = "internal_error"
    param: str | None = None
    retry_after: float | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if param is not None:
            self.param = param
        if retry_after is not None:
            self.retry_after = retry_after

    @property
    def message(self) -> str:
        """What the client reads."""
        return str(self)


class InputError(BridgeError):
    """A client input that cannot be embedded (wrong dimension, empty text, bad ids...)."""

    status = 400
    code = "invalid_input"
    param = "input"


class TooLarge(BridgeError):
    """A request that can never fit (the queue, the input limit, or the device's memory)."""

    status = 413
    code = "too_large"
    param = "input"


class Overloaded(BridgeError):
    """The queue is full; retry after ``retry_after`` seconds."""

    status = 429
    code = "overloaded"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after=retry_after)

    @property
    def message(self) -> str:
        return f"overloaded: {self}"


class ShuttingDown(BridgeError):
    """The service is stopping and takes no new work."""

    status = 503
    code = "shutting_down"
    retry_after = 5.0


class DeadlineExceeded(BridgeError):
    """The client's deadline passed before its request reached the model."""

    status = 504
    code = "deadline_exceeded"


class ModelSpecError(BridgeError):
    """The model cannot be found or its files do not describe an embedding model."""

    status = 503
    code = "model_unavailable"


class DeviceError(BridgeError):
    """The requested device or dtype cannot be used."""

    status = 503
    code = "device_unavailable"


class Unsupported(BridgeError):
    """A fast path (such as the padding-free forward) cannot run this model here; the
    caller falls back to the general one."""

    status = 501
    code = "unsupported"
