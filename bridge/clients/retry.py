"""One retry policy for every outgoing call: connection errors, timeouts, 429 and 502-504.

Exponential backoff with full jitter (tenacity); a server's ``Retry-After`` is honoured
when it asks for longer. Retries go on for ``within`` seconds (default 60: long enough to
ride out a restarting service or engine), then the last answer or error is returned.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_random_exponential,
)

from bridge.clients.errors import RETRYABLE_STATUS

_jitter = wait_random_exponential(multiplier=0.5, max=10)
DEFAULT_RETRY_SECONDS = 60.0


def retry_after_seconds(response: httpx.Response | None) -> float | None:
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _wait(state: RetryCallState) -> float:
    wait = _jitter(state)
    outcome = state.outcome
    if outcome is not None and not outcome.failed:
        hinted = retry_after_seconds(outcome.result())
        if hinted is not None:
            wait = max(wait, min(hinted, 60.0))
    return wait


def _give_up(state: RetryCallState) -> httpx.Response:
    assert state.outcome is not None
    return state.outcome.result()  # the last response, or the last transport error raised


def describe(state: RetryCallState) -> str:
    """Why an attempt is retried: the transport error or the HTTP status."""
    outcome = state.outcome
    if outcome is None:
        return "no answer"
    if outcome.failed:
        exc = outcome.exception()
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"HTTP {outcome.result().status_code}"


def call_with_retries(
    send: Callable[[], httpx.Response],
    within: float = DEFAULT_RETRY_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[str], None] | None = None,
) -> httpx.Response:
    """Call ``send`` until its answer is not retryable or ``within`` seconds have passed
    (0: one attempt). ``on_retry`` hears the reason before the first retry (once), so a
    user is told at once why a command waits.

    Returns the last response (which may still be a 429/5xx); raises the last
    transport error when no attempt got an answer.
    """

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.attempt_number == 1:
            on_retry(describe(state))

    retrying = Retrying(
        stop=stop_after_delay(within),
        wait=_wait,
        retry=retry_if_exception_type(httpx.TransportError)
        | retry_if_result(lambda r: r.status_code in RETRYABLE_STATUS),
        retry_error_callback=_give_up,
        before_sleep=before_sleep,
        sleep=sleep,
    )
    return retrying(send)


def backoff_seconds(attempt: int, base: float = 0.5, cap: float = 10.0) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
