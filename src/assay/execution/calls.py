"""One call of a task or evaluator: retries, rate limits, a timeout, concurrency.

Every call the engine makes goes through a :class:`CallPolicy`, so that plain errors are
retried ``max_retries`` times, rate limits are waited out (``Retry-After``) and slow the
whole experiment down instead of failing rows, and a call that hangs past ``timeout``
fails as a ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from assay.execution.ratelimit import AdaptiveLimit, backoff_delay, is_rate_limit

RetryDelay = Callable[[int], float]

RATE_LIMIT_RETRIES = 25
"""How many times one call waits out a rate limit before it counts as failed."""


def default_retry_delay(attempt: int) -> float:
    """ddtrace's default: 0.1 s, 0.2 s, 0.3 s, ... after the first, second, third failure."""
    return 0.1 * (attempt + 1)


class CallTimeout(TimeoutError):
    """A task or evaluator call ran longer than the experiment's ``timeout``."""


@dataclass
class CallOutcome:
    value: Any
    error: BaseException | None
    retries: int


def _call_with_timeout(
    function: Callable[..., Any], arguments: tuple[Any, ...], timeout: float
) -> Any:
    # A thread cannot be interrupted: the call goes on in its own daemon thread and is
    # abandoned on timeout, so the worker moves on and the row records the timeout.
    future: Future[Any] = Future()
    # The call still belongs to its row and trace: run it in a copy of this context.
    context = contextvars.copy_context()

    def target() -> None:
        try:
            future.set_result(context.run(function, *arguments))
        except BaseException as error:  # handed to the waiting worker
            future.set_exception(error)

    threading.Thread(target=target, name="assay-call", daemon=True).start()
    try:
        return future.result(timeout=timeout)
    except TimeoutError:
        raise CallTimeout(f"call took longer than the timeout of {timeout:g} s") from None


class CallPolicy:
    """Retries, rate-limit waits, timeout and adaptive concurrency for every call."""

    def __init__(
        self,
        *,
        jobs: int,
        max_retries: int = 0,
        retry_delay: RetryDelay = default_retry_delay,
        timeout: float | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.limit = AdaptiveLimit(jobs)
        self.stopping = stopping
        # Until the first rate limit, `jobs` workers can never exceed `jobs` calls: the
        # gate is skipped, which keeps the common path free of lock traffic.
        self._gated = False

    @property
    def plain(self) -> bool:
        """True while a first attempt may be a bare call: no gate engaged, no timeout.

        The engine then calls the function itself and comes here only when it raised
        (:meth:`call` with ``first_error``), which keeps four calls per row cheap.
        """
        return not self._gated and self.timeout is None

    def call(
        self,
        function: Callable[..., Any],
        arguments: tuple[Any, ...],
        *,
        first_error: BaseException | None = None,
    ) -> CallOutcome:
        """Call ``function(*arguments)`` from a worker thread, retrying as the policy says.

        ``first_error``: the caller already made the first attempt (ungated) and it raised
        this; carry on from there.
        """
        retries = limited = 0
        error = first_error
        gated = False
        while True:
            if error is None:
                gated = self._gated
                if gated:
                    self.limit.acquire()
                try:
                    if self.timeout is None:
                        value = function(*arguments)
                    else:
                        value = _call_with_timeout(function, arguments, self.timeout)
                except Exception as caught:
                    error = caught
                else:
                    if gated:
                        self.limit.release()
                    return CallOutcome(value, None, retries + limited)
            if is_rate_limit(error) and limited < RATE_LIMIT_RETRIES and not self.stopping():
                delay = backoff_delay(limited, error)
                self._rate_limited(gated, delay)
                time.sleep(delay)
                limited += 1
                error = None
                continue
            if gated:
                self.limit.release()
            if retries < self.max_retries and not self.stopping():
                time.sleep(self.retry_delay(retries))
                retries += 1
                error = None
                continue
            return CallOutcome(None, error, retries + limited)

    async def call_async(
        self, function: Callable[..., Awaitable[Any]], arguments: tuple[Any, ...]
    ) -> CallOutcome:
        """Await ``function(*arguments)`` on the running loop."""
        retries = limited = 0
        while True:
            gated = self._gated
            if gated:
                await self.limit.acquire_async()
            try:
                if self.timeout is None:
                    value = await function(*arguments)
                else:
                    try:
                        value = await asyncio.wait_for(function(*arguments), self.timeout)
                    except TimeoutError:
                        raise CallTimeout(
                            f"call took longer than the timeout of {self.timeout:g} s"
                        ) from None
            except Exception as error:
                if is_rate_limit(error) and limited < RATE_LIMIT_RETRIES and not self.stopping():
                    delay = backoff_delay(limited, error)
                    self._rate_limited(gated, delay)
                    await asyncio.sleep(delay)
                    limited += 1
                    continue
                if gated:
                    self.limit.release()
                if retries < self.max_retries and not self.stopping():
                    await asyncio.sleep(self.retry_delay(retries))
                    retries += 1
                    continue
                return CallOutcome(None, error, retries + limited)
            if gated:
                self.limit.release()
            return CallOutcome(value, None, retries + limited)

    def _rate_limited(self, gated: bool, delay: float) -> None:
        if gated:
            self.limit.release(rate_limited=True, backoff=delay)
        else:
            # First rate limit: from now on every call passes the gate. This call was not
            # counted in, so it only lowers the limit.
            self._gated = True
            self.limit.record_rate_limit(delay)

    @property
    def rate_limited(self) -> int:
        """How many calls were answered with a rate limit so far."""
        return self.limit.rate_limited
