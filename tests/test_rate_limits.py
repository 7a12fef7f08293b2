"""Rate limits: a provider that answers 429 above a set rate, and an experiment that adapts."""

from __future__ import annotations

import collections
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from assay import LLMObs
from assay.execution.ratelimit import (
    AdaptiveLimit,
    RateLimited,
    backoff_delay,
    is_rate_limit,
    retry_after,
)

RATE = 40  # requests per second the fake provider accepts


class FakeProvider(BaseHTTPRequestHandler):
    """Accepts RATE requests per sliding second; above that answers 429 with Retry-After."""

    window: ClassVar[collections.deque[float]] = collections.deque()
    lock = threading.Lock()
    accepted = 0
    refused = 0

    def do_GET(self) -> None:
        now = time.monotonic()
        with self.lock:
            while self.window and now - self.window[0] >= 1.0:
                self.window.popleft()
            if len(self.window) >= RATE:
                wait = 1.0 - (now - self.window[0])
                type(self).refused += 1
                self.send_response(429)
                self.send_header("Retry-After", "1")
                self.send_header("retry-after-ms", str(int(wait * 1000) + 1))
                self.end_headers()
                return
            self.window.append(now)
            type(self).accepted += 1
        time.sleep(0.01)  # the "model" thinks
        body = b'{"answer": "ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def provider() -> Iterator[str]:
    FakeProvider.window = collections.deque()
    FakeProvider.accepted = FakeProvider.refused = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeProvider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_an_experiment_adapts_to_a_rate_limit_without_failed_rows(
    llmobs: type[LLMObs], provider: str
) -> None:
    records = 4 * RATE
    dataset = llmobs.create_dataset(
        dataset_name="questions", records=[{"input_data": i} for i in range(records)]
    )

    def ask(input_data: Any, config: Any) -> str:
        with urllib.request.urlopen(provider, timeout=10) as response:
            return str(response.read().decode())

    def answered(input_data: Any, output_data: Any, expected_output: Any) -> bool:
        return output_data is not None

    experiment = llmobs.experiment("rate-limited", ask, dataset, [answered])
    started = time.monotonic()
    result = experiment.run(jobs=16)
    elapsed = time.monotonic() - started
    assert experiment.info is not None and experiment.info.status == "completed"
    assert all(row["error"]["type"] is None for row in result["rows"])
    assert FakeProvider.refused > 0, "the provider never pushed back: the test proves nothing"
    throughput = records / elapsed
    # The first second's burst is free; what matters is the steady rate afterwards.
    print(f"throughput {throughput:.1f} requests/s against a limit of {RATE}")
    assert throughput >= 0.8 * RATE, f"{throughput:.1f} requests/s against a limit of {RATE}"
    assert any(row["retries"] > 0 for row in result["rows"])


def test_rate_limit_errors_are_recognised() -> None:
    class ProviderError(Exception):
        status_code = 429

    class RateLimitError(Exception):
        pass

    http_error = urllib.error.HTTPError(
        "http://x",
        429,
        "Too Many Requests",
        {"Retry-After": "3"},
        None,  # type: ignore[arg-type]
    )
    assert is_rate_limit(ProviderError())
    assert is_rate_limit(RateLimitError())
    assert is_rate_limit(http_error)
    assert is_rate_limit(RateLimited(retry_after=1.5))
    assert not is_rate_limit(ValueError("429 is just a number here"))
    assert retry_after(http_error) == 3.0
    assert retry_after(RateLimited(retry_after=1.5)) == 1.5
    assert retry_after(ProviderError()) is None
    assert 3.0 <= backoff_delay(0, http_error) <= 3.31
    assert 0.05 <= backoff_delay(0, ProviderError()) <= 0.1
    assert backoff_delay(20, ProviderError()) <= 30.0


def test_adaptive_limit_halves_once_per_burst_and_climbs_back() -> None:
    limit = AdaptiveLimit(16)
    for _ in range(16):
        limit.acquire()
    for _ in range(8):  # a burst of 429s from calls sent together
        limit.release(rate_limited=True, backoff=10.0)
    assert limit.limit == 8
    for _ in range(8):
        limit.release()
    for _ in range(8 + 9 + 10):  # a run of successes as long as the limit raises it by one
        limit.acquire()
        limit.release()
    assert limit.limit == 11
    assert limit.rate_limited == 8
