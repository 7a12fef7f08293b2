"""Rate limits: recognising a provider's "slow down", and adapting how many calls run at once.

A rate-limit error is HTTP 429 however it is spelled: ``openai.RateLimitError`` and
``anthropic.RateLimitError`` (``status_code == 429``), ``httpx.HTTPStatusError`` and
``requests`` errors (``response.status_code``), ``urllib.error.HTTPError`` (``code``), any
exception whose class name contains ``RateLimit``, and :class:`RateLimited`, which a task
may raise itself. ``Retry-After`` (seconds or an HTTP date) and ``retry-after-ms`` are
honoured when the error carries the response headers.

Concurrency adapts like TCP's congestion window (additive increase, multiplicative
decrease): a rate-limit error halves the number of calls allowed at once — at most once
per backoff period, so one burst of 429s does not collapse it to 1 — and each run of
successful calls as long as the current limit raises it by one again, up to ``jobs``.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time
from typing import Any

# Jitter of its own: drawing from the global generator would change a seeded task's numbers.
_JITTER = random.Random()


class RateLimited(Exception):
    """Raise from a task or evaluator to say "rate limited; retry after ``retry_after`` s"."""

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _headers(error: BaseException) -> Any:
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        headers = getattr(error, "headers", None)  # urllib.error.HTTPError
    return headers


def _status(error: BaseException) -> Any:
    for owner in (error, getattr(error, "response", None)):
        for name in ("status_code", "status", "code"):
            value = getattr(owner, name, None)
            if isinstance(value, int):
                return value
    return None


def is_rate_limit(error: BaseException) -> bool:
    """Whether ``error`` means "too many requests"."""
    return (
        isinstance(error, RateLimited)
        or _status(error) == 429
        or "ratelimit" in type(error).__name__.lower()
    )


def retry_after(error: BaseException) -> float | None:
    """Seconds the provider asked to wait, when it said so."""
    if isinstance(error, RateLimited) and error.retry_after is not None:
        return max(0.0, error.retry_after)
    headers = _headers(error)
    if headers is None:
        return None
    try:
        # HTTP headers are case-insensitive; a plain dict is not.
        lowered = {str(key).lower(): value for key, value in headers.items()}
    except (AttributeError, TypeError):
        return None
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None  # neither seconds nor an HTTP date: fall back to exponential backoff
    return max(0.0, moment.timestamp() - time.time())


def backoff_delay(attempt: int, error: BaseException) -> float:
    """How long to wait before retry ``attempt`` (0-based) of a rate-limited call."""
    asked = retry_after(error)
    if asked is not None:
        # A little jitter, so that every worker told "1 s" does not return at once.
        return asked + _JITTER.uniform(0, 0.1 * max(asked, 0.05))
    return min(30.0, 0.1 * 2.0**attempt) * _JITTER.uniform(0.5, 1.0)


class AdaptiveLimit:
    """How many calls may run at once: halved on a rate limit, climbing back by one.

    Works for worker threads (:meth:`acquire` / :meth:`release`) and for coroutines on one
    event loop (:meth:`acquire_async`), never both at once.
    """

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.limit = maximum
        self.in_flight = 0
        self.rate_limited = 0
        self._successes = 0
        self._calm_until = 0.0
        self._condition = threading.Condition()
        self._async_condition: asyncio.Condition | None = None
        self._wakers: set[asyncio.Task[None]] = set()

    def acquire(self) -> None:
        with self._condition:
            while self.in_flight >= self.limit:
                self._condition.wait()
            self.in_flight += 1

    async def acquire_async(self) -> None:
        if self._async_condition is None:
            self._async_condition = asyncio.Condition()
        async with self._async_condition:
            await self._async_condition.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    def release(self, *, rate_limited: bool = False, backoff: float = 0.0) -> None:
        """A gated call finished; ``rate_limited`` when it was answered with a rate limit."""
        with self._condition:
            self.in_flight -= 1
            if rate_limited:
                self._lower(backoff)
            else:
                self._successes += 1
                if self._successes >= self.limit and self.limit < self.maximum:
                    self.limit += 1
                    self._successes = 0
            self._condition.notify_all()
        self._wake_coroutines()

    def record_rate_limit(self, backoff: float) -> None:
        """A call that did not pass the gate was rate limited: lower the limit only."""
        with self._condition:
            self._lower(backoff)

    def _lower(self, backoff: float) -> None:
        self.rate_limited += 1
        self._successes = 0
        now = time.monotonic()
        if now >= self._calm_until:
            self.limit = max(1, self.limit // 2)
            # One decrease per backoff period: the calls already in flight were sent at
            # the old rate and will answer 429 too.
            self._calm_until = now + max(backoff, 0.05)

    def _wake_coroutines(self) -> None:
        condition = self._async_condition
        if condition is None:
            return

        async def wake() -> None:
            async with condition:
                condition.notify_all()

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # released from a thread: no coroutine waits on this limit
        self._wakers.add(task := loop.create_task(wake()))
        task.add_done_callback(self._wakers.discard)
