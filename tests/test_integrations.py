"""Automatic spans for the official openai and anthropic clients, with no network.

The real SDK clients talk HTTP to a fake provider on 127.0.0.1 that answers with the
bodies the real APIs send. ``FakeProvider`` is shared with ``test_judge.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import openai
import pytest
from openai.resources.chat.completions import Completions

from assay import LLMObs, integrations, tracing
from assay.integrations import anthropic as anthropic_integration
from assay.integrations import openai as openai_integration
from assay.pricing import estimate_cost
from assay.store import open_backend
from assay.store.records import RowRecord, SpanRecord

CHAT_MODEL = "gpt-4o-mini-2024-07-18"
CLAUDE_MODEL = "claude-haiku-4-5-20251001"
CHAT_USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
CLAUDE_USAGE = {
    "input_tokens": 10,
    "output_tokens": 4,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 0,
}
CLAUDE_INPUT_TOKENS = 110  # uncached + cache reads, as ddtrace counts them


# The fake provider --------------------------------------------------------------------


@dataclass
class FakeProvider:
    """An OpenAI- and Anthropic-shaped HTTP API on a random local port."""

    url: str = ""
    chat_content: str = "Paris"
    anthropic_content: list[dict[str, Any]] = field(
        default_factory=lambda: [{"type": "text", "text": "Paris"}]
    )
    fail_with: int | None = None
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def reset(self) -> None:
        self.chat_content = "Paris"
        self.anthropic_content = [{"type": "text", "text": "Paris"}]
        self.fail_with = None
        self.requests.clear()

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, bytes, str]:
        """(status, body, content type) for one request."""
        self.requests.append((path, body))
        if self.fail_with is not None:
            error = {"error": {"message": "the fake provider failed", "type": "server_error"}}
            return self.fail_with, json.dumps(error).encode(), "application/json"
        if path.endswith("/chat/completions") and body.get("stream"):
            return 200, _chat_stream(self.chat_content), "text/event-stream"
        replies = {
            "/v1/chat/completions": self._chat,
            "/v1/responses": _response,
            "/v1/embeddings": _embeddings,
            "/v1/messages": self._message,
        }
        reply = replies.get(path)
        if reply is None:
            return 404, b'{"error": {"message": "no such path"}}', "application/json"
        return 200, json.dumps(reply(body)).encode(), "application/json"

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": CHAT_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.chat_content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": CHAT_USAGE,
        }

    def _message(self, body: dict[str, Any]) -> dict[str, Any]:
        tool_use = self.anthropic_content[0]["type"] == "tool_use"
        return {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": CLAUDE_MODEL,
            "content": self.anthropic_content,
            "stop_reason": "tool_use" if tool_use else "end_turn",
            "stop_sequence": None,
            "usage": CLAUDE_USAGE,
        }


def _response(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_700_000_000,
        "model": CHAT_MODEL,
        "status": "completed",
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Paris", "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 9,
            "output_tokens": 2,
            "total_tokens": 11,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
            for i in range(len(inputs))
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }


def _chat_stream(content: str) -> bytes:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": CHAT_MODEL,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": "stop"}],
    }
    return f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    provider: FakeProvider

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        status, payload, content_type = self.provider.answer(self.path, body)
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def serving() -> Iterator[FakeProvider]:
    provider = FakeProvider()
    handler = type("Handler", (_Handler,), {"provider": provider})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    provider.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def fake(serving: FakeProvider) -> FakeProvider:
    """The fake provider, with its default answers and no recorded requests."""
    serving.reset()
    return serving


@pytest.fixture
def patched() -> None:
    """Both clients patched, whatever an earlier test left."""
    openai_integration.patch()
    anthropic_integration.patch()


@pytest.fixture
def openai_client(fake: FakeProvider, patched: None) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{fake.url}/v1", api_key="test", max_retries=0) as client:
        yield client


@pytest.fixture
def anthropic_client(fake: FakeProvider, patched: None) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.url, api_key="test", max_retries=0) as client:
        yield client


def stored(experiment_id: str | None) -> list[RowRecord]:
    backend = open_backend()
    try:
        return backend.experiment_rows(experiment_id or "", with_spans=True)
    finally:
        backend.close()


def traced(function: Any) -> tuple[Any, tracing.FinishedTrace]:
    token = tracing.begin_trace("0" * 32, "1")
    try:
        result = function()
    finally:
        finished = tracing.end_trace(token)
    return result, finished


def check_chat_span(span: SpanRecord, question: str) -> None:
    assert span.kind == "llm" and span.name == "OpenAI.createChatCompletion"
    assert (span.model_name, span.model_provider) == (CHAT_MODEL, "openai")
    assert span.input == [{"role": "user", "content": question}]
    assert span.output == "Paris"
    assert (span.input_tokens, span.output_tokens, span.total_tokens) == (12, 3, 15)
    cost = estimate_cost(CHAT_MODEL, "openai", 12, 3)
    assert cost is not None and cost > 0 and span.estimated_cost == cost
    assert span.duration_ns > 0 and span.error is None
    assert span.metadata == {"temperature": 0, "finish_reason": "stop"}


def ok(input_data: Any, output_data: Any, expected_output: Any) -> bool:
    return output_data == "Paris"


# In experiments -----------------------------------------------------------------------


def test_an_openai_call_in_a_task_is_an_llm_span_with_tokens_and_cost(
    llmobs: type[LLMObs], openai_client: openai.OpenAI
) -> None:
    dataset = llmobs.create_dataset(
        dataset_name="capitals", records=[{"input_data": "France"}, {"input_data": "Peru"}]
    )

    def task(input_data: Any, config: Any) -> Any:
        reply = openai_client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"Capital of {input_data}?"}],
            temperature=0,
        )
        return reply.choices[0].message.content

    experiment = llmobs.experiment("openai-auto", task, dataset, [ok], runs=2)
    experiment.run(jobs=4)
    rows = stored(experiment.id)
    assert len(rows) == 4
    for row in rows:
        assert row.output == "Paris" and row.error is None
        (span,) = row.spans
        check_chat_span(span, f"Capital of {row.input_data}?")
        assert span.parent_id == row.span_id and span.trace_id == row.trace_id
        assert row.rollup is not None
        assert (row.rollup.input_tokens, row.rollup.output_tokens) == (12, 3)
        assert row.rollup.total_tokens == 15
        assert row.rollup.estimated_total_cost == span.estimated_cost


def test_an_anthropic_call_in_a_task_counts_cached_input_tokens(
    llmobs: type[LLMObs], anthropic_client: anthropic.Anthropic
) -> None:
    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": "France"}])

    def task(input_data: Any, config: Any) -> Any:
        with LLMObs.workflow(name="answer"):
            reply = anthropic_client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=64,
                system="Answer with one word.",
                messages=[
                    {"role": "user", "content": [{"type": "text", "text": "Capital?"}]},
                    {"role": "assistant", "content": "Let me think."},
                    {"role": "user", "content": input_data},
                ],
            )
        return reply.content[0].text  # type: ignore[union-attr]

    experiment = llmobs.experiment("anthropic-auto", task, dataset, [ok])
    experiment.run()
    (row,) = stored(experiment.id)
    workflow, span = row.spans
    assert span.parent_id == workflow.span_id
    assert span.kind == "llm" and span.name == "anthropic.request"
    assert (span.model_name, span.model_provider) == (CLAUDE_MODEL, "anthropic")
    assert span.input == [
        {"role": "system", "content": "Answer with one word."},
        {"role": "user", "content": "Capital?"},
        {"role": "assistant", "content": "Let me think."},
        {"role": "user", "content": "France"},
    ]
    assert span.output == "Paris"
    assert (span.input_tokens, span.output_tokens) == (CLAUDE_INPUT_TOKENS, 4)
    assert span.metadata == {
        "max_tokens": 64,
        "stop_reason": "end_turn",
        "metrics": {"cache_read_input_tokens": 100},
    }
    cost = estimate_cost(CLAUDE_MODEL, "anthropic", CLAUDE_INPUT_TOKENS, 4)
    assert cost is not None and cost > 0 and span.estimated_cost == cost
    assert row.rollup is not None and row.rollup.estimated_total_cost == cost
    assert row.rollup.total_tokens == CLAUDE_INPUT_TOKENS + 4


def test_async_clients_are_traced_in_async_experiments(
    llmobs: type[LLMObs], fake: FakeProvider, patched: None
) -> None:
    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": i} for i in range(4)])

    async def main() -> str | None:
        async with (
            openai.AsyncOpenAI(base_url=f"{fake.url}/v1", api_key="t", max_retries=0) as gpt,
            anthropic.AsyncAnthropic(base_url=fake.url, api_key="t", max_retries=0) as claude,
        ):

            async def task(input_data: Any, config: Any) -> Any:
                first = await gpt.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": f"Capital of {input_data}?"}],
                    temperature=0,
                )
                await claude.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=8,
                    messages=[{"role": "user", "content": str(input_data)}],
                )
                return first.choices[0].message.content

            experiment = llmobs.async_experiment("async-auto", task, dataset, [ok])
            await experiment.run(jobs=4)
            return experiment.id

    rows = stored(asyncio.run(main()))
    assert len(rows) == 4
    for row in rows:
        # Concurrent tasks on one loop each get their own two spans, in call order.
        chat, message = row.spans
        check_chat_span(chat, f"Capital of {row.input_data}?")
        assert message.model_provider == "anthropic"
        assert message.input == [{"role": "user", "content": str(row.input_data)}]
        assert row.rollup is not None
        assert row.rollup.input_tokens == 12 + CLAUDE_INPUT_TOKENS
        assert row.rollup.estimated_total_cost == (chat.estimated_cost or 0) + (
            message.estimated_cost or 0
        )


def test_a_failed_call_is_recorded_on_its_span_and_the_row(
    llmobs: type[LLMObs],
    fake: FakeProvider,
    openai_client: openai.OpenAI,
    anthropic_client: anthropic.Anthropic,
) -> None:
    dataset = llmobs.create_dataset(dataset_name="d", records=[{"input_data": "x"}])
    fake.fail_with = 500

    def task(input_data: Any, config: Any) -> Any:
        with contextlib.suppress(anthropic.InternalServerError):
            anthropic_client.messages.create(
                model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        return openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )

    experiment = llmobs.experiment("failing", task, dataset, [ok])
    experiment.run()
    (row,) = stored(experiment.id)
    assert row.error is not None and "InternalServerError" in row.error.type
    claude, gpt = row.spans
    assert claude.error is not None and claude.error.type == "anthropic.InternalServerError"
    assert gpt.error is not None and gpt.error.type == "openai.InternalServerError"
    assert "the fake provider failed" in gpt.error.message
    # The request is known, the reply is not.
    assert gpt.model_name == "gpt-4o-mini" and gpt.input == [{"role": "user", "content": "x"}]
    assert gpt.output is None and gpt.input_tokens is None and gpt.estimated_cost is None
    assert row.rollup is None or row.rollup.estimated_total_cost is None


# Other endpoints ----------------------------------------------------------------------


def test_responses_and_embeddings_are_traced(openai_client: openai.OpenAI) -> None:
    def calls() -> None:
        openai_client.responses.create(
            model="gpt-4o-mini", instructions="Be brief.", input="Capital of France?"
        )
        openai_client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])

    _, finished = traced(calls)
    response, embedding = finished.spans
    assert response.kind == "llm" and response.name == "OpenAI.createResponse"
    assert response.input == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert response.output == "Paris" and response.model_name == CHAT_MODEL
    assert (response.input_tokens, response.output_tokens, response.total_tokens) == (9, 2, 11)
    assert embedding.kind == "embedding" and embedding.name == "OpenAI.createEmbedding"
    assert embedding.input == ["a", "b"]
    assert embedding.output == "[2 embedding(s) returned with size 3]"
    assert (embedding.input_tokens, embedding.output_tokens) == (8, None)
    assert embedding.estimated_cost == estimate_cost("text-embedding-3-small", "openai", 8, None)
    assert finished.rollup.input_tokens == 9 + 8


def test_messages_given_as_a_generator_still_reach_the_provider(
    fake: FakeProvider, openai_client: openai.OpenAI
) -> None:
    def call() -> None:
        messages = ({"role": "user", "content": text} for text in ("one", "two"))
        openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages)

    _, finished = traced(call)
    (span,) = finished.spans
    assert [m["content"] for m in span.input] == ["one", "two"]
    assert [m["content"] for m in fake.requests[-1][1]["messages"]] == ["one", "two"]


def test_streaming_and_raw_responses_pass_through_safely(
    openai_client: openai.OpenAI,
) -> None:
    def calls() -> str:
        stream = openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], stream=True
        )
        with stream:
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        raw = openai_client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
        assert raw.parse().choices[0].message.content == "Paris"
        return text

    text, finished = traced(calls)
    assert text == "Paris"
    # The stream is not traced; the raw call is, without what only the body holds.
    (raw,) = finished.spans
    assert raw.input == [{"role": "user", "content": "x"}] and raw.input_tokens is None


# Outside a trace, patching and unpatching ---------------------------------------------


def test_outside_a_trace_calls_work_and_record_nothing(
    openai_client: openai.OpenAI, anthropic_client: anthropic.Anthropic
) -> None:
    reply = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
    )
    message = anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content == "Paris"
    assert message.content[0].text == "Paris"  # type: ignore[union-attr]
    assert tracing.current_span() is None


def test_patch_is_idempotent_and_unpatch_restores_the_original_methods(
    openai_client: openai.OpenAI,
) -> None:
    openai_integration.unpatch()
    anthropic_integration.unpatch()
    original = Completions.__dict__["create"]
    original_messages = anthropic.resources.Messages.__dict__["create"]
    assert not hasattr(original, "__assay_integration__")
    assert not openai_integration.is_patched() and not anthropic_integration.is_patched()

    openai_integration.patch()
    wrapper = Completions.__dict__["create"]
    assert wrapper is not original and wrapper.__wrapped__ is original
    openai_integration.patch()
    assert Completions.__dict__["create"] is wrapper
    assert openai_integration.is_patched()
    assert integrations.patch_all() == ["openai", "anthropic"]
    assert anthropic.resources.Messages.__dict__["create"].__wrapped__ is original_messages

    integrations.unpatch_all()
    assert Completions.__dict__["create"] is original
    assert anthropic.resources.Messages.__dict__["create"] is original_messages
    _, finished = traced(
        lambda: openai_client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    )
    assert finished.spans == []
    openai_integration.patch()
    anthropic_integration.patch()


def test_patch_all_skips_libraries_that_are_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(integrations, "INTEGRATIONS", ("openai", "assay_no_such_client"))
    assert integrations.patch_all() == ["openai"]


def test_enable_patches_on_import_and_imports_no_client_itself(tmp_path: Any) -> None:
    # A fresh interpreter: this one imported both clients long ago.
    script = """
import sys
from assay import LLMObs
LLMObs.enable(project_name="p", integrations_enabled=False)
import openai.resources.chat.completions.completions as chat
assert not hasattr(chat.Completions.create, "__assay_integration__")
LLMObs.enable(project_name="p")
assert "anthropic" not in sys.modules, "enable() imported anthropic"
assert hasattr(chat.Completions.create, "__assay_integration__")  # imported: patched now
import anthropic
from anthropic.resources.messages import AsyncMessages, Messages
assert hasattr(Messages.create, "__assay_integration__")  # patched on import
assert hasattr(AsyncMessages.create, "__assay_integration__")
assert sys.modules[Messages.__module__].__spec__.loader.__class__.__name__ != "_PatchingLoader"
LLMObs.disable()
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        env={"ASSAY_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
