"""Function decorators that trace each call as a span, like ``ddtrace.llmobs.decorators``.

Change ``from ddtrace.llmobs.decorators import workflow, llm`` to
``from assay.decorators import workflow, llm``::

    @workflow
    def answer(question: str) -> str:
        return ask_model(question)

    @llm(model_name="gpt-4o-mini", model_provider="openai")
    def ask_model(question: str) -> str:
        reply = client.chat.completions.create(...)
        LLMObs.annotate(
            input_data=question,
            output_data=reply.choices[0].message.content,
            metrics={"input_tokens": reply.usage.prompt_tokens,
                     "output_tokens": reply.usage.completion_tokens},
        )
        return reply.choices[0].message.content

Both forms work, bare (``@workflow``) and called (``@workflow(name="answer")``), on sync
and ``async def`` functions. The span is named after the function unless ``name`` is
given. ``workflow``, ``task``, ``tool``, ``agent`` and ``retrieval`` record the call's
arguments as the span's input and its return value as its output (``retrieval``: input
only), unless ``_automatic_io_annotation=False``. Outside an experiment they only call the
function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast, overload

from assay.tracing import SpanKind, SpanScope

__all__ = ["agent", "embedding", "llm", "retrieval", "task", "tool", "workflow"]

F = TypeVar("F", bound=Callable[..., Any])


class ModelDecorator(Protocol):
    """``llm`` and ``embedding``: bare, or called with the model's name and provider."""

    @overload
    def __call__(self, original_func: F) -> F: ...

    @overload
    def __call__(
        self,
        original_func: None = None,
        model_name: str | None = None,
        model_provider: str | None = None,
        name: str | None = None,
        session_id: str | None = None,
        ml_app: str | None = None,
    ) -> Callable[[F], F]: ...


class SpanDecorator(Protocol):
    """``workflow``, ``task``, ``tool``, ``agent``, ``retrieval``: bare, or called."""

    @overload
    def __call__(self, original_func: F) -> F: ...

    @overload
    def __call__(
        self,
        original_func: None = None,
        name: str | None = None,
        session_id: str | None = None,
        ml_app: str | None = None,
        _automatic_io_annotation: bool = True,
    ) -> Callable[[F], F]: ...


def _model_decorator(kind: SpanKind, summary: str) -> ModelDecorator:
    def decorator(
        original_func: Callable[..., Any] | None = None,
        model_name: str | None = None,
        model_provider: str | None = None,
        name: str | None = None,
        session_id: str | None = None,
        ml_app: str | None = None,
    ) -> Any:
        scope = SpanScope(
            kind,
            name=name,
            model_name=model_name,
            model_provider=model_provider,
            session_id=session_id,
            ml_app=ml_app,
        )
        if original_func is not None and callable(original_func):
            return scope(original_func)
        return scope

    decorator.__name__ = decorator.__qualname__ = kind
    decorator.__doc__ = summary
    return cast(ModelDecorator, decorator)


def _span_decorator(kind: SpanKind, summary: str) -> SpanDecorator:
    def decorator(
        original_func: Callable[..., Any] | None = None,
        name: str | None = None,
        session_id: str | None = None,
        ml_app: str | None = None,
        _automatic_io_annotation: bool = True,
    ) -> Any:
        scope = SpanScope(
            kind,
            name=name,
            session_id=session_id,
            ml_app=ml_app,
            capture_io=_automatic_io_annotation,
        )
        if original_func is not None and callable(original_func):
            return scope(original_func)
        return scope

    decorator.__name__ = decorator.__qualname__ = kind
    decorator.__doc__ = summary
    return cast(SpanDecorator, decorator)


llm = _model_decorator("llm", "Trace each call as an LLM span (tokens and cost roll up).")
embedding = _model_decorator("embedding", "Trace each call as an embedding span.")
workflow = _span_decorator("workflow", "Trace each call as a workflow span.")
task = _span_decorator("task", "Trace each call as a task span.")
tool = _span_decorator("tool", "Trace each call as a tool span.")
agent = _span_decorator("agent", "Trace each call as an agent span.")
retrieval = _span_decorator("retrieval", "Trace each call as a retrieval span.")
