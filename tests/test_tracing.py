"""Spans inside a task call: nesting, errors, decorators, isolation, roll-ups and cost.

These drive ``assay.tracing`` directly with ``begin_trace``/``end_trace``, as the engine
does around each task call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from assay import LLMObs, decorators, tracing
from assay.pricing import estimate_cost
from assay.store.records import SpanRecord
from assay.tracing import FinishedTrace, annotate, begin_trace, end_trace

TRACE_ID = "0123456789abcdef0123456789abcdef"
ROOT_ID = "4242"


def traced(function: Any, *args: Any) -> tuple[Any, FinishedTrace]:
    """Run ``function`` in a trace, as the engine runs a task: (its result, the trace)."""
    token = begin_trace(TRACE_ID, ROOT_ID)
    try:
        result = function(*args)
    finally:
        finished = end_trace(token)
    return result, finished


def by_name(finished: FinishedTrace) -> dict[str, SpanRecord]:
    return {span.name: span for span in finished.spans}


def nanodollars(usd: Decimal) -> int:
    return round(usd * 1_000_000_000)


def unique_model() -> str:
    return f"no-such-model-{uuid.uuid4().hex[:8]}"


# Nesting ------------------------------------------------------------------------------


def test_nested_spans_have_parent_ids_in_start_order() -> None:
    def task() -> str:
        with LLMObs.workflow(name="plan") as plan:
            with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai") as call:
                assert tracing.current_span() is call
            with LLMObs.tool():
                pass
        with LLMObs.retrieval(name="search"):
            pass
        assert plan.trace_id == TRACE_ID
        return "done"

    output, finished = traced(task)

    assert output == "done"
    assert [(s.name, s.kind) for s in finished.spans] == [
        ("plan", "workflow"),
        ("llm", "llm"),
        ("tool", "tool"),
        ("search", "retrieval"),
    ]
    spans = by_name(finished)
    assert spans["plan"].parent_id == ROOT_ID
    assert spans["llm"].parent_id == spans["plan"].span_id
    assert spans["tool"].parent_id == spans["plan"].span_id
    assert spans["search"].parent_id == ROOT_ID
    assert {s.trace_id for s in finished.spans} == {TRACE_ID}
    assert len({s.span_id for s in finished.spans}) == 4
    assert spans["llm"].model_name == "gpt-4o-mini"
    assert spans["llm"].model_provider == "openai"
    starts = [s.start_ns for s in finished.spans]
    assert starts == sorted(starts)
    assert all(s.duration_ns >= 0 and s.status == "ok" for s in finished.spans)
    assert spans["plan"].duration_ns >= spans["llm"].duration_ns


def test_a_task_without_spans_gives_an_empty_trace() -> None:
    _, finished = traced(lambda: None)
    assert finished.spans == []
    assert finished.root_annotations == {}
    assert finished.rollup.total_tokens is None
    assert finished.rollup.estimated_total_cost is None
    assert tracing.current_span() is None


def test_a_span_left_open_ends_with_the_trace() -> None:
    scope = LLMObs.task(name="leaked")

    def task() -> None:
        scope.__enter__()

    _, finished = traced(task)
    (span,) = finished.spans
    assert span.name == "leaked"
    assert span.duration_ns >= 0


# Errors -------------------------------------------------------------------------------


class QuotaExceeded(Exception):
    pass


def test_an_error_inside_a_span_is_recorded_and_raised_again() -> None:
    def task() -> None:
        with LLMObs.workflow(name="outer"), LLMObs.llm(model_name="gpt-4o-mini"):
            raise QuotaExceeded("429: slow down")

    with pytest.raises(QuotaExceeded, match="slow down"):
        traced(task)

    # The trace was ended by the `finally` in `traced`; run again to inspect it.
    token = begin_trace(TRACE_ID, ROOT_ID)
    with pytest.raises(QuotaExceeded):
        task()
    finished = end_trace(token)

    spans = by_name(finished)
    for name in ("outer", "llm"):
        error = spans[name].error
        assert error is not None
        assert spans[name].status == "error"
        assert error.type == f"{__name__}.QuotaExceeded"
        assert error.message == "429: slow down"
        assert "Traceback" in error.stack and 'raise QuotaExceeded("429: slow down")' in error.stack
    assert tracing.current_span() is None


def test_a_caught_error_marks_only_the_span_it_left() -> None:
    def task() -> None:
        with LLMObs.workflow(name="outer"):
            try:
                with LLMObs.tool(name="flaky"):
                    raise KeyError("missing")
            except KeyError:
                pass

    _, finished = traced(task)
    spans = by_name(finished)
    assert spans["outer"].error is None
    assert spans["flaky"].error is not None
    assert spans["flaky"].error.type == "builtins.KeyError"


# Decorators ---------------------------------------------------------------------------


def test_decorators_on_sync_functions() -> None:
    @decorators.workflow
    def answer(question: str, *, style: str = "short") -> str:
        return ask(question)

    @decorators.llm(model_name="gpt-4o-mini", model_provider="openai")
    def ask(question: str) -> str:
        annotate(metrics={"input_tokens": 10, "output_tokens": 2})
        return question.upper()

    @decorators.tool(name="lookup", _automatic_io_annotation=False)
    def fetch(key: str) -> str:
        return key

    def task() -> str:
        fetch("k")
        return answer("paris?")

    output, finished = traced(task)

    assert output == "PARIS?"
    assert answer.__name__ == "answer"  # functools.wraps
    spans = by_name(finished)
    assert list(spans) == ["lookup", "answer", "ask"]
    assert spans["answer"].kind == "workflow"
    # ddtrace's decorators record the bound arguments and the return value...
    assert spans["answer"].input == {"question": "paris?"}
    assert spans["answer"].output == "PARIS?"
    # ...but not on model spans, and not when told not to.
    assert spans["ask"].input is None and spans["ask"].output is None
    assert spans["ask"].parent_id == spans["answer"].span_id
    assert spans["ask"].total_tokens == 12
    assert spans["lookup"].input is None and spans["lookup"].output is None


def test_decorators_on_async_functions() -> None:
    @decorators.agent
    async def plan(goal: str) -> list[str]:
        first = await step("search")
        second = await step("read")
        return [first, second]

    @LLMObs.tool()
    async def step(action: str) -> str:
        await asyncio.sleep(0)
        return f"{action}: ok"

    assert inspect.iscoroutinefunction(plan) and inspect.iscoroutinefunction(step)

    async def task() -> tuple[list[str], FinishedTrace]:
        token = begin_trace(TRACE_ID, ROOT_ID)
        try:
            return await plan("learn"), end_trace(token)
        except BaseException:
            end_trace(token)
            raise

    output, finished = asyncio.run(task())

    assert output == ["search: ok", "read: ok"]
    assert [(s.name, s.kind) for s in finished.spans] == [
        ("plan", "agent"),
        ("step", "tool"),
        ("step", "tool"),
    ]
    plan_span = finished.spans[0]
    assert plan_span.input == {"goal": "learn"}
    assert plan_span.output == ["search: ok", "read: ok"]
    assert all(s.parent_id == plan_span.span_id for s in finished.spans[1:])


def test_async_decorator_records_an_error() -> None:
    @decorators.retrieval
    async def search(query: str) -> list[str]:
        raise TimeoutError(f"no answer for {query}")

    async def task() -> FinishedTrace:
        token = begin_trace(TRACE_ID, ROOT_ID)
        with pytest.raises(TimeoutError):
            await search("q")
        return end_trace(token)

    finished = asyncio.run(task())
    (span,) = finished.spans
    assert span.kind == "retrieval"
    assert span.input == {"query": "q"}
    assert span.error is not None and span.error.type == "builtins.TimeoutError"


def test_model_decorators_default_like_ddtrace() -> None:
    @decorators.llm
    def bare() -> None:
        pass

    @decorators.embedding(model_name="text-embedding-3-small", model_provider="openai")
    def embed() -> None:
        pass

    def task() -> None:
        bare()
        embed()

    _, finished = traced(task)
    first, second = finished.spans
    assert (first.name, first.model_name, first.model_provider) == ("bare", "custom", "custom")
    assert (second.kind, second.model_name) == ("embedding", "text-embedding-3-small")


def test_helpers_used_as_bare_decorators_say_how_to_fix_it() -> None:
    def function() -> None:
        pass

    with pytest.raises(TypeError, match=r"@workflow\(\)"):
        tracing.workflow(function)  # type: ignore[arg-type]


def test_a_decorated_method_records_its_arguments_as_json() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque>"

    class Pipeline:
        @decorators.task
        def run(self, items: tuple[int, ...], extra: Opaque) -> dict[int, Opaque]:
            return {1: extra}

        def __repr__(self) -> str:
            return "<Pipeline>"

    _, finished = traced(lambda: Pipeline().run((1, 2), Opaque()))
    (span,) = finished.spans
    assert span.input == {"self": "<Pipeline>", "items": [1, 2], "extra": "<Opaque>"}
    assert span.output == {"1": "<Opaque>"}


# Isolation ----------------------------------------------------------------------------


def run_traced_work(label: str, steps: int) -> FinishedTrace:
    token = begin_trace(f"{label:0>32}", label)
    try:
        with LLMObs.workflow(name=f"{label}-root"):
            for step in range(steps):
                with LLMObs.llm(name=f"{label}-{step}", model_name="gpt-4o-mini"):
                    time.sleep(0.001)
                    annotate(metrics={"input_tokens": 1, "output_tokens": 1})
    finally:
        finished = end_trace(token)
    return finished


def test_concurrent_traces_in_threads_do_not_mix() -> None:
    results: dict[str, FinishedTrace] = {}
    barrier = threading.Barrier(8)

    def worker(label: str) -> None:
        barrier.wait()
        results[label] = run_traced_work(label, 5)

    threads = [threading.Thread(target=worker, args=(str(i),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for label, finished in results.items():
        assert [s.name for s in finished.spans] == [f"{label}-root"] + [
            f"{label}-{step}" for step in range(5)
        ]
        assert {s.trace_id for s in finished.spans} == {f"{label:0>32}"}
        assert finished.spans[0].parent_id == label
        assert finished.rollup.total_tokens == 10


def test_concurrent_traces_in_asyncio_tasks_do_not_mix() -> None:
    async def traced_coroutine(label: str) -> FinishedTrace:
        token = begin_trace(f"{label:0>32}", label)
        try:
            with LLMObs.workflow(name=f"{label}-root"):
                for step in range(3):
                    with LLMObs.llm(name=f"{label}-{step}"):
                        await asyncio.sleep(0.001)
                        annotate(metadata={"label": label})
        finally:
            finished = end_trace(token)
        return finished

    async def main() -> list[FinishedTrace]:
        return await asyncio.gather(*(traced_coroutine(str(i)) for i in range(10)))

    for index, finished in enumerate(asyncio.run(main())):
        label = str(index)
        assert [s.name for s in finished.spans] == [f"{label}-root"] + [
            f"{label}-{step}" for step in range(3)
        ]
        assert all(s.metadata == {"label": label} for s in finished.spans[1:])


def test_coroutines_gathered_inside_a_task_join_its_trace() -> None:
    async def call(name: str) -> None:
        with LLMObs.llm(name=name):
            await asyncio.sleep(0.001)

    async def task() -> FinishedTrace:
        token = begin_trace(TRACE_ID, ROOT_ID)
        with LLMObs.workflow(name="fan-out"):
            await asyncio.gather(call("a"), call("b"), call("c"))
        return end_trace(token)

    finished = asyncio.run(task())
    spans = by_name(finished)
    assert set(spans) == {"fan-out", "a", "b", "c"}
    assert {spans[n].parent_id for n in "abc"} == {spans["fan-out"].span_id}


# Annotations --------------------------------------------------------------------------


def test_annotate_a_child_span_and_the_root() -> None:
    def task() -> None:
        annotate(metadata={"temperature": 0}, tags={"team": "search"})
        with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai") as span:
            annotate(
                input_data=[{"role": "user", "content": "hi"}],
                output_data="hello",
                metadata={"a": 1},
                tags={"stage": "draft"},
                prompt={"template": "{{q}}", "variables": {"q": "hi"}},
            )
            with LLMObs.tool():
                # An explicit span wins over the innermost one.
                LLMObs.annotate(span=span, metadata={"b": 2}, metrics={"latency_ms": 12.5})
            annotate(span, tags={"stage": "final", "v": 2})
        annotate(metadata={"seed": 7}, metrics={"score": 1}, output_data={"answer": 42})

    _, finished = traced(task)

    llm_span = by_name(finished)["llm"]
    assert llm_span.input == [{"role": "user", "content": "hi"}]
    assert llm_span.output == "hello"
    assert llm_span.metadata == {
        "a": 1,
        "b": 2,
        "prompt": {"template": "{{q}}", "variables": {"q": "hi"}},
        "metrics": {"latency_ms": 12.5},
    }
    assert llm_span.tags == ["stage:final", "v:2"]
    assert by_name(finished)["tool"].metadata is None
    assert finished.root_annotations == {
        "metadata": {"temperature": 0, "seed": 7},
        "metrics": {"score": 1},
        "tags": {"team": "search"},
        "output_data": {"answer": 42},
    }


def test_session_and_ml_app_become_tags() -> None:
    def task() -> None:
        with LLMObs.agent(session_id="s-1", ml_app="support-bot"):
            pass

    _, finished = traced(task)
    assert finished.spans[0].tags == ["ml_app:support-bot", "session_id:s-1"]


def test_annotate_rejects_what_is_not_a_metric() -> None:
    def task() -> None:
        with LLMObs.llm():
            annotate(metrics={"input_tokens": "12"})  # type: ignore[dict-item]

    with pytest.raises(TypeError, match="'input_tokens' must be a number"):
        traced(task)


# Roll-up and cost ---------------------------------------------------------------------


def per_million(model: str, provider: str) -> tuple[Decimal, Decimal]:
    """The table's (input, output) USD per million tokens for a model."""
    prices = calc_price(Usage(input_tokens=1), model, provider_id=provider).model_price
    input_price, output_price = prices.input_mtok or Decimal(0), prices.output_mtok or Decimal(0)
    assert isinstance(input_price, Decimal) and isinstance(output_price, Decimal)  # not tiered
    return input_price, output_price


def table_nanodollars(model: str, provider: str, input_tokens: int, output_tokens: int) -> int:
    """By hand: tokens x the table's per-million prices, rounded to nanodollars."""
    input_price, output_price = per_million(model, provider)
    return nanodollars((input_tokens * input_price + output_tokens * output_price) / 1_000_000)


def test_token_rollup_and_cost_by_hand_on_nested_spans() -> None:
    unknown = unique_model()

    def task() -> None:
        annotate(metrics={"input_tokens": 7})  # tokens counted by the task itself
        with LLMObs.workflow(name="answer"):
            with LLMObs.llm(name="draft", model_name="gpt-4o-mini", model_provider="openai"):
                annotate(metrics={"input_tokens": 1000, "output_tokens": 500})
            with LLMObs.agent(name="critic"):
                with LLMObs.llm(
                    name="critique",
                    model_name="claude-3-5-haiku-latest",
                    model_provider="anthropic",
                ):
                    annotate(metrics={"input_tokens": 200, "output_tokens": 100})
                with LLMObs.tool(name="search"):
                    # Not a model span: its tokens do not roll up.
                    annotate(metrics={"input_tokens": 999_999, "output_tokens": 999_999})
                with LLMObs.llm(name="local", model_name=unknown, model_provider="openai"):
                    annotate(metrics={"input_tokens": 40, "output_tokens": 10, "total_tokens": 55})
            with LLMObs.embedding(
                name="embed", model_name="text-embedding-3-small", model_provider="openai"
            ):
                annotate(metrics={"input_tokens": 300})

    _, finished = traced(task)
    spans = by_name(finished)

    # Tokens: llm + embedding spans and the root; total = input + output unless given.
    assert (spans["draft"].input_tokens, spans["draft"].output_tokens) == (1000, 500)
    assert spans["draft"].total_tokens == 1500
    assert spans["local"].total_tokens == 55
    assert spans["embed"].total_tokens == 300
    assert finished.rollup.input_tokens == 7 + 1000 + 200 + 40 + 300
    assert finished.rollup.output_tokens == 500 + 100 + 10
    assert finished.rollup.total_tokens == 7 + 1500 + 300 + 55 + 300

    # Cost: each known span priced by hand from the table; the unknown model has none.
    draft = table_nanodollars("gpt-4o-mini", "openai", 1000, 500)
    critique = table_nanodollars("claude-3-5-haiku-latest", "anthropic", 200, 100)
    embed = table_nanodollars("text-embedding-3-small", "openai", 300, 0)
    assert spans["draft"].estimated_cost == draft
    assert spans["critique"].estimated_cost == critique
    assert spans["embed"].estimated_cost == embed
    assert spans["local"].estimated_cost is None
    assert spans["search"].estimated_cost is None
    assert finished.rollup.estimated_total_cost == draft + critique + embed
    # With the table's prices when this was written, the same sums in plain numbers:
    # 1000 x $0.15/M + 500 x $0.60/M = $0.00045 = 450,000 nanodollars, and so on.
    if per_million("gpt-4o-mini", "openai") == (Decimal("0.15"), Decimal("0.6")):
        assert draft == 450_000
    if per_million("claude-3-5-haiku-latest", "anthropic") == (Decimal("0.8"), Decimal("4")):
        assert critique == 200 * 800 + 100 * 4_000 == 560_000
    if per_million("text-embedding-3-small", "openai")[0] == Decimal("0.02"):
        assert embed == 300 * 20 == 6_000


def test_no_tokens_or_no_known_price_gives_none_not_zero() -> None:
    def no_tokens() -> None:
        with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai"):
            annotate(metrics={"latency_ms": 3})

    _, finished = traced(no_tokens)
    assert finished.rollup.total_tokens is None
    assert finished.rollup.estimated_total_cost is None

    def unnamed_model() -> None:
        with LLMObs.llm():  # model "custom": tokens, but nothing to price
            annotate(metrics={"input_tokens": 5, "output_tokens": 5})

    _, finished = traced(unnamed_model)
    assert finished.rollup.total_tokens == 10
    assert finished.rollup.estimated_total_cost is None


@pytest.fixture
def assay_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="assay"):
        yield caplog


def test_unknown_model_has_no_cost_and_warns_once(
    assay_warnings: pytest.LogCaptureFixture,
) -> None:
    model = unique_model()

    def task() -> None:
        for _ in range(3):
            with LLMObs.llm(model_name=model, model_provider="openai"):
                annotate(metrics={"input_tokens": 10, "output_tokens": 10})

    for _ in range(2):
        _, finished = traced(task)
        assert [s.estimated_cost for s in finished.spans] == [None, None, None]
        assert finished.rollup.estimated_total_cost is None
        assert finished.rollup.total_tokens == 60
    assert estimate_cost(model.upper(), "OpenAI", 1, 1) is None

    warnings = [r for r in assay_warnings.records if r.name == "assay"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert model in message and "openai" in message
    assert "no known price" in message and "left empty" in message


def test_unknown_provider_has_no_cost(assay_warnings: pytest.LogCaptureFixture) -> None:
    provider = f"local-{uuid.uuid4().hex[:6]}"
    assert estimate_cost("llama3", provider, 100, 100) is None
    assert estimate_cost("llama3", provider, 100, 100) is None
    assert len(assay_warnings.records) == 1


@pytest.mark.parametrize(
    ("model", "provider", "input_tokens", "output_tokens"),
    [
        ("gpt-4o-mini", "openai", 1234, 567),
        ("gpt-4o-mini-2024-07-18", "azure_openai", 1, 0),
        ("claude-3-5-sonnet-20241022", "anthropic", 0, 4321),
        ("gemini-1.5-pro", "google", 300_000, 1000),  # tiered: above 128k tokens
        ("gemini-1.5-pro", "vertexai", 1000, 1000),
        ("gpt-4o-mini", None, 10, 10),  # provider found from the model
        ("gpt-4o-mini", "custom", 10, 10),  # ddtrace's default provider
    ],
)
def test_estimate_cost_is_genai_prices_rounded_to_nanodollars(
    model: str, provider: str | None, input_tokens: int, output_tokens: int
) -> None:
    price = calc_price(
        Usage(input_tokens=input_tokens, output_tokens=output_tokens),
        model,
        provider_id=None if provider == "custom" else provider,
    )
    assert estimate_cost(model, provider, input_tokens, output_tokens) == nanodollars(
        price.total_price
    )


def test_estimate_cost_names_bedrock_models_as_ddtrace_does() -> None:
    # ddtrace's Bedrock spans: provider "amazon", model without the vendor prefix.
    try:
        price = calc_price(
            Usage(input_tokens=100, output_tokens=100), "amazon.nova-lite-v1:0", provider_id="aws"
        )
    except LookupError:
        pytest.skip("this genai-prices table has no amazon.nova-lite-v1:0")
    assert estimate_cost("nova-lite-v1:0", "amazon", 100, 100) == nanodollars(price.total_price)


def test_estimate_cost_without_tokens_is_none() -> None:
    assert estimate_cost("gpt-4o-mini", "openai", None, None) is None
    assert estimate_cost("gpt-4o-mini", "openai", 0, 0) == 0


# Outside a trace ----------------------------------------------------------------------


def test_helpers_are_no_ops_outside_a_trace() -> None:
    @decorators.workflow
    def pipeline(x: int) -> int:
        with LLMObs.llm(model_name="gpt-4o-mini") as span:
            LLMObs.annotate(span=span, metrics={"input_tokens": 1})
            annotate(output_data="ignored", metadata={"a": 1})
        return x + 1

    @LLMObs.tool()
    async def fetch() -> str:
        return "ok"

    assert tracing.current_span() is None
    assert pipeline(1) == 2
    assert asyncio.run(fetch()) == "ok"
    with LLMObs.task() as span:
        assert span.trace_id is None
        assert tracing.current_span() is None
    annotate(metadata={"x": 1}, metrics={"input_tokens": 1})
    LLMObs.annotate(input_data="nothing to annotate")


# ddtrace parity -----------------------------------------------------------------------


def test_llmobs_tracing_signatures_match_ddtrace() -> None:
    def parameters(function: Any) -> list[str]:
        return list(inspect.signature(function).parameters)

    model = ["model_name", "name", "model_provider", "session_id", "ml_app"]
    other = ["name", "session_id", "ml_app"]
    assert parameters(LLMObs.llm) == model
    assert parameters(LLMObs.embedding) == model
    for helper in (LLMObs.workflow, LLMObs.task, LLMObs.tool, LLMObs.agent, LLMObs.retrieval):
        assert parameters(helper) == other
    assert parameters(LLMObs.annotate) == [
        "span",
        "prompt",
        "input_data",
        "output_data",
        "metadata",
        "metrics",
        "tags",
        "tool_definitions",
        "_name",
    ]
    assert decorators.__all__ == sorted(
        ["llm", "embedding", "workflow", "task", "tool", "agent", "retrieval"]
    )


# Hot path -----------------------------------------------------------------------------


def test_hot_path_cost_of_a_trace_without_spans(record_property: Any) -> None:
    """Measured, not asserted: the engine pays this on every task call."""
    calls = 100_000
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(calls):
            end_trace(begin_trace(TRACE_ID, ROOT_ID))
        best = min(best, (time.perf_counter_ns() - started) / calls)
    record_property("begin_end_trace_ns", round(best))
    print(f"\nbegin_trace + end_trace, no spans: {best:.0f} ns per task call")
    assert tracing.current_span() is None
