"""Spans inside a task call: ddtrace's LLMObs helpers, token roll-ups and estimated cost.

The engine opens a trace around each task call; inside it, ``llm()``, ``workflow()``,
``tool()``... open child spans (as context managers or decorators) and ``annotate()``
records input/output, metadata and metrics on the innermost open span, or on the task's
root span when none is open::

    token = begin_trace(trace_id, root_span_id)
    try:
        output = task(input_data, config)
    finally:
        finished = end_trace(token)  # spans, token and cost roll-up, root annotations

    # inside the task
    with llm(model_name="gpt-4o-mini", model_provider="openai"):
        reply = client.chat(...)
        annotate(output_data=reply.text, metrics={"input_tokens": 12, "output_tokens": 40})

The current span lives in a context variable, so concurrent traces (worker threads, or
coroutines on one loop) never see each other's spans. Outside a trace every helper is a
no-op that does not fail: the same code runs with and without an experiment around it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

from assay import pricing
from assay.ids import new_span_id
from assay.store.records import JSON, ErrorInfo, SpanRecord, TraceRollup

SpanKind = Literal["llm", "workflow", "task", "tool", "agent", "retrieval", "embedding"]

ROOT_KIND = "experiment"
"""The kind of the root span of each task call (ddtrace's)."""

# Tokens (and so cost) of these kinds roll up into the trace; a workflow's own token
# metrics would count its LLM calls twice.
_MODEL_KINDS = frozenset({"llm", "embedding"})
_UNNAMED_MODEL = "custom"
_TOKEN_METRICS = frozenset(
    {"input_tokens", "output_tokens", "total_tokens", "prompt_tokens", "completion_tokens"}
)
_MAX_JSON_DEPTH = 64

F = TypeVar("F", bound=Callable[..., Any])


class Span:
    """A span being recorded: what ``with llm(...) as span`` gives, for ``annotate(span=span)``."""

    __slots__ = (
        "_started",
        "_trace",
        "duration_ns",
        "error",
        "input",
        "kind",
        "metadata",
        "metrics",
        "ml_app",
        "model_name",
        "model_provider",
        "name",
        "output",
        "parent_id",
        "prompt",
        "session_id",
        "span_id",
        "start_ns",
        "tags",
    )

    def __init__(
        self,
        trace: TraceToken | None,
        span_id: str,
        parent_id: str,
        name: str,
        kind: str,
        *,
        model_name: str | None = None,
        model_provider: str | None = None,
        session_id: str | None = None,
        ml_app: str | None = None,
    ) -> None:
        self._trace = trace
        self.span_id = span_id
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.model_name = model_name
        self.model_provider = model_provider
        self.session_id = session_id
        self.ml_app = ml_app
        self.start_ns = time.time_ns()
        self._started = time.perf_counter_ns()
        self.duration_ns: int | None = None
        self.input: JSON = None
        self.output: JSON = None
        self.metadata: dict[str, JSON] | None = None
        self.metrics: dict[str, int | float] | None = None
        self.tags: dict[str, str] | None = None
        self.prompt: JSON = None
        self.error: ErrorInfo | None = None

    @property
    def trace_id(self) -> str | None:
        """The trace's id; None for a span opened outside any trace (not recorded)."""
        return self._trace.trace_id if self._trace is not None else None

    def __repr__(self) -> str:
        return f"Span(name={self.name!r}, kind={self.kind!r}, span_id={self.span_id!r})"


class TraceToken:
    """An open trace, as ``begin_trace`` returns it; give it back to ``end_trace``."""

    __slots__ = ("_token", "root", "root_span_id", "spans", "trace_id")

    def __init__(self, trace_id: str, root_span_id: str) -> None:
        self.trace_id = trace_id
        self.root_span_id = root_span_id
        self.spans: list[Span] = []
        # Made on first use: a task that never annotates its root does not pay for it.
        self.root: Span | None = None
        self._token: Token[Span | TraceToken | None] | None = None

    def _root(self) -> Span:
        if self.root is None:
            self.root = Span(self, self.root_span_id, "undefined", ROOT_KIND, ROOT_KIND)
        return self.root


@dataclass(slots=True)  # not frozen: that would double its cost on every task call
class FinishedTrace:
    """What a task call recorded: its child spans, their roll-up and the root's annotations."""

    spans: list[SpanRecord]
    """Child spans of the root, in start order."""
    rollup: TraceRollup
    """Tokens summed over ``llm`` and ``embedding`` spans and the root's token metrics;
    cost summed over the spans whose model has a known price."""
    root_annotations: dict[str, JSON]
    """What ``annotate`` put on the root span, under the keys that were given:
    ``metadata``, ``metrics``, ``tags`` (a dict), ``input_data``, ``output_data``."""


# The innermost open span of the running trace, or the trace itself (its root) when no
# child span is open; None outside any trace.
_current: ContextVar[Span | TraceToken | None] = ContextVar("assay_current_span", default=None)


def begin_trace(trace_id: str, root_span_id: str) -> TraceToken:
    """Start recording spans for one task call, in the current context."""
    trace = TraceToken(trace_id, root_span_id)
    trace._token = _current.set(trace)
    return trace


def end_trace(token: TraceToken) -> FinishedTrace:
    """Stop recording (restoring the previous context) and return what was recorded.

    A child span still open at this point (a task that leaked one) ends here.
    """
    if token._token is not None:
        # Not contextlib.suppress: this is every task call's path, and try costs nothing.
        try:  # noqa: SIM105
            _current.reset(token._token)
        except ValueError:
            # Ended from another context: the one that began the trace keeps its value,
            # and this one never had it.
            pass
        token._token = None
    spans = token.spans
    root = token.root
    if not spans and root is None:
        return FinishedTrace([], TraceRollup(), {})
    now = time.perf_counter_ns()
    records = [_span_record(span, token.trace_id, now) for span in spans]
    return FinishedTrace(records, _rollup(records, root), _root_annotations(root))


# Helpers ------------------------------------------------------------------------------


class SpanScope:
    """A span to open: use it in a ``with`` block, or as a decorator (sync or async).

    Inside a ``with`` block the span covers the block; as a decorator, each call of the
    function is one span named after the function (unless a name was given). Decorating
    a function of kind workflow, task, tool, agent or retrieval records its arguments as
    the span's input and its return value as the output, as ddtrace's decorators do.
    (A decorated generator function's span covers creating the generator, not iterating.)
    """

    __slots__ = (
        "_capture_io",
        "_kind",
        "_ml_app",
        "_model_name",
        "_model_provider",
        "_name",
        "_open",
        "_session_id",
    )

    def __init__(
        self,
        kind: SpanKind,
        *,
        name: str | None = None,
        model_name: str | None = None,
        model_provider: str | None = None,
        session_id: str | None = None,
        ml_app: str | None = None,
        capture_io: bool = True,
    ) -> None:
        if name is not None and not isinstance(name, str):
            # `@workflow` without parentheses passes the function as the name.
            raise TypeError(
                f"{kind}() takes a span name, not {name!r}: decorate with @{kind}() "
                f"(or use assay.decorators.{kind}, which also works bare)"
            )
        self._kind = kind
        self._name = name
        self._model_name = model_name
        self._model_provider = model_provider
        self._session_id = session_id
        self._ml_app = ml_app
        self._capture_io = capture_io
        self._open: list[tuple[Span, Token[Span | TraceToken | None] | None]] = []

    def __enter__(self) -> Span:
        name = self._name or self._kind
        opened = self._start(name)
        if opened is None:
            span = Span(None, new_span_id(), "undefined", name, self._kind)
            self._open.append((span, None))
            return span
        self._open.append(opened)
        return opened[0]

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        error_traceback: TracebackType | None,
    ) -> None:
        span, token = self._open.pop()
        if token is not None:
            _finish(span, token, error)

    def __call__(self, function: F) -> F:
        kind = self._kind
        name = self._name or str(getattr(function, "__name__", kind))
        signature = None
        if self._capture_io and kind not in _MODEL_KINDS:
            try:
                signature = inspect.signature(function)
            except (TypeError, ValueError):
                signature = None
        capture_output = signature is not None and kind != "retrieval"
        start = self._start

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def traced_async(*args: Any, **kwargs: Any) -> Any:
                opened = start(name)
                if opened is None:
                    return await function(*args, **kwargs)
                span, token = opened
                if signature is not None:
                    _record_arguments(span, signature, args, kwargs)
                try:
                    result = await function(*args, **kwargs)
                except BaseException as error:
                    _finish(span, token, error)
                    raise
                if capture_output and result and span.output is None:
                    span.output = _jsonable(result)
                _finish(span, token, None)
                return result

            return cast(F, traced_async)

        @functools.wraps(function)
        def traced(*args: Any, **kwargs: Any) -> Any:
            opened = start(name)
            if opened is None:
                return function(*args, **kwargs)
            span, token = opened
            if signature is not None:
                _record_arguments(span, signature, args, kwargs)
            try:
                result = function(*args, **kwargs)
            except BaseException as error:
                _finish(span, token, error)
                raise
            if capture_output and result and span.output is None:
                span.output = _jsonable(result)
            _finish(span, token, None)
            return result

        return cast(F, traced)

    def _start(self, name: str) -> tuple[Span, Token[Span | TraceToken | None]] | None:
        """Open a child of the current span; None outside any trace."""
        parent = _current.get()
        if parent is None:
            return None
        if isinstance(parent, TraceToken):
            trace = parent
            parent_id = parent.root_span_id
        else:
            if parent._trace is None:
                return None
            trace = parent._trace
            parent_id = parent.span_id
        model_name = self._model_name
        model_provider = self._model_provider
        if self._kind in _MODEL_KINDS:
            # ddtrace's defaults, so spans read the same as there.
            model_name = model_name or _UNNAMED_MODEL
            model_provider = model_provider or _UNNAMED_MODEL
        span = Span(
            trace,
            new_span_id(),
            parent_id,
            name,
            self._kind,
            model_name=model_name,
            model_provider=model_provider,
            session_id=self._session_id,
            ml_app=self._ml_app,
        )
        trace.spans.append(span)
        return span, _current.set(span)


def llm(
    model_name: str | None = None,
    name: str | None = None,
    model_provider: str | None = None,
    session_id: str | None = None,
    ml_app: str | None = None,
) -> SpanScope:
    """A call to a language model; its token metrics give the trace's tokens and cost.

    ``model_name`` and ``model_provider`` (ddtrace's names: ``openai``, ``anthropic``...)
    pick the price; both default to ``"custom"`` (no price) as in ddtrace::

        with llm(model_name="gpt-4o-mini", model_provider="openai"):
            ...
            annotate(metrics={"input_tokens": 120, "output_tokens": 30})
    """
    return SpanScope(
        "llm",
        name=name,
        model_name=model_name,
        model_provider=model_provider,
        session_id=session_id,
        ml_app=ml_app,
    )


def embedding(
    model_name: str | None = None,
    name: str | None = None,
    model_provider: str | None = None,
    session_id: str | None = None,
    ml_app: str | None = None,
) -> SpanScope:
    """A call to an embedding model; its tokens and cost roll up like an LLM call's."""
    return SpanScope(
        "embedding",
        name=name,
        model_name=model_name,
        model_provider=model_provider,
        session_id=session_id,
        ml_app=ml_app,
    )


def workflow(
    name: str | None = None, session_id: str | None = None, ml_app: str | None = None
) -> SpanScope:
    """A predefined sequence of steps."""
    return SpanScope("workflow", name=name, session_id=session_id, ml_app=ml_app)


def task(
    name: str | None = None, session_id: str | None = None, ml_app: str | None = None
) -> SpanScope:
    """A standalone step that calls no model and no external service."""
    return SpanScope("task", name=name, session_id=session_id, ml_app=ml_app)


def tool(
    name: str | None = None, session_id: str | None = None, ml_app: str | None = None
) -> SpanScope:
    """A call to an external interface or API."""
    return SpanScope("tool", name=name, session_id=session_id, ml_app=ml_app)


def agent(
    name: str | None = None, session_id: str | None = None, ml_app: str | None = None
) -> SpanScope:
    """A loop in which a model decides which actions to take."""
    return SpanScope("agent", name=name, session_id=session_id, ml_app=ml_app)


def retrieval(
    name: str | None = None, session_id: str | None = None, ml_app: str | None = None
) -> SpanScope:
    """A search returning documents from a knowledge base."""
    return SpanScope("retrieval", name=name, session_id=session_id, ml_app=ml_app)


def current_span() -> Span | None:
    """The innermost open child span of the running trace; None at the root or outside."""
    current = _current.get()
    return current if isinstance(current, Span) else None


def annotate(
    span: Span | None = None,
    *,
    parameters: Mapping[str, JSON] | None = None,
    prompt: JSON = None,
    input_data: JSON = None,
    output_data: JSON = None,
    metadata: Mapping[str, JSON] | None = None,
    metrics: Mapping[str, int | float] | None = None,
    tags: Mapping[str, JSON] | None = None,
    tool_definitions: list[dict[str, JSON]] | None = None,
    name: str | None = None,
) -> None:
    """Record data on ``span``, else on the innermost open span, else on the task's root.

    ``input_data``, ``output_data`` and ``prompt`` replace what was there; ``metadata``,
    ``metrics`` and ``tags`` are merged into it. The token metrics ``input_tokens``,
    ``output_tokens`` and ``total_tokens`` (``input + output`` when not given) of LLM and
    embedding spans, and of the root, make the trace's roll-up. ``parameters`` (an old
    ddtrace name) and ``tool_definitions`` are kept in the metadata. Outside any trace,
    a no-op.
    """
    target: Span | TraceToken | None = span if span is not None else _current.get()
    if target is None:
        return
    if isinstance(target, TraceToken):
        target = target._root()
    if metadata is not None:
        _merge(target, "metadata", _json_mapping(metadata, "metadata"))
    if parameters is not None:
        _merge(target, "metadata", _json_mapping(parameters, "parameters"))
    if tool_definitions is not None:
        _merge(target, "metadata", {"tool_definitions": _jsonable(tool_definitions)})
    if metrics is not None:
        _merge(target, "metrics", _metrics(metrics))
    if tags is not None:
        if not isinstance(tags, Mapping):
            raise TypeError(f"annotate(tags=...) takes a dict of tag values, not {tags!r}")
        _merge(target, "tags", {str(key): str(value) for key, value in tags.items()})
    if prompt is not None:
        target.prompt = _jsonable(prompt)
    if input_data is not None:
        target.input = _jsonable(input_data)
    if output_data is not None:
        target.output = _jsonable(output_data)
    if name is not None:
        target.name = name


# Recording ----------------------------------------------------------------------------


def _finish(
    span: Span, token: Token[Span | TraceToken | None], error: BaseException | None
) -> None:
    span.duration_ns = time.perf_counter_ns() - span._started
    if error is not None:
        span.error = _error_info(error)
    # Closed in another context than it was opened in (a generator resumed elsewhere):
    # that context is not ours to restore.
    with contextlib.suppress(ValueError):
        _current.reset(token)


def _error_info(error: BaseException) -> ErrorInfo:
    kind = type(error)
    return ErrorInfo(
        type=f"{kind.__module__}.{kind.__qualname__}",
        message=str(error),
        stack="".join(traceback.format_exception(error)),
    )


def _record_arguments(
    span: Span, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    try:
        arguments = signature.bind_partial(*args, **kwargs).arguments
    except TypeError:
        return  # the call itself will raise the same error
    if arguments:
        span.input = _jsonable(dict(arguments))


def _merge(
    span: Span, field: Literal["metadata", "metrics", "tags"], values: dict[str, Any]
) -> None:
    existing = getattr(span, field)
    if existing is None:
        setattr(span, field, values)
    else:
        existing.update(values)


def _json_mapping(values: Mapping[str, JSON], argument: str) -> dict[str, JSON]:
    if not isinstance(values, Mapping):
        raise TypeError(f"annotate({argument}=...) takes a dict, not {values!r}")
    return {str(key): _jsonable(value) for key, value in values.items()}


def _metrics(values: Mapping[str, int | float]) -> dict[str, int | float]:
    if not isinstance(values, Mapping):
        raise TypeError(f"annotate(metrics=...) takes a dict of numbers, not {values!r}")
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"annotate(metrics=...): metric {key!r} must be a number, not {value!r}"
            )
    return {str(key): value for key, value in values.items()}


def _jsonable(value: Any, depth: int = 0) -> JSON:
    """``value`` as the store can write it: JSON types kept, anything else as its repr."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if depth >= _MAX_JSON_DEPTH:
        return repr(value)
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(item, depth + 1) for item in value]
    return repr(value)


def _tokens(metrics: dict[str, int | float] | None) -> tuple[int | None, int | None, int | None]:
    """(input, output, total) token counts; total is input + output when not given."""
    if not metrics:
        return None, None, None
    input_tokens = _count(metrics.get("input_tokens", metrics.get("prompt_tokens")))
    output_tokens = _count(metrics.get("output_tokens", metrics.get("completion_tokens")))
    total_tokens = _count(metrics.get("total_tokens"))
    if total_tokens is None and (input_tokens is not None or output_tokens is not None):
        total_tokens = (input_tokens or 0) + (output_tokens or 0)
    return input_tokens, output_tokens, total_tokens


def _count(value: int | float | None) -> int | None:
    return None if value is None else round(value)


def _span_record(span: Span, trace_id: str, now: int) -> SpanRecord:
    input_tokens, output_tokens, total_tokens = _tokens(span.metrics)
    cost = None
    if span.kind in _MODEL_KINDS and (input_tokens is not None or output_tokens is not None):
        cost = pricing.estimate_cost(
            span.model_name, span.model_provider, input_tokens, output_tokens
        )
    duration = span.duration_ns
    if duration is None:  # still open when the trace ended
        duration = now - span._started
    return SpanRecord(
        span_id=span.span_id,
        parent_id=span.parent_id,
        trace_id=trace_id,
        name=span.name,
        kind=span.kind,
        start_ns=span.start_ns,
        duration_ns=duration,
        error=span.error,
        input=span.input,
        output=span.output,
        metadata=_span_metadata(span, with_metrics=True),
        tags=_span_tags(span),
        model_name=span.model_name,
        model_provider=span.model_provider,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total_tokens,
        estimated_cost=cost,
    )


def _span_metadata(span: Span, *, with_metrics: bool) -> dict[str, JSON] | None:
    """The span's metadata, with its prompt and (for a child span) its non-token metrics:
    a span record has no field of their own."""
    metadata = dict(span.metadata) if span.metadata else {}
    if span.prompt is not None:
        metadata["prompt"] = span.prompt
    if with_metrics and span.metrics:
        others = {k: v for k, v in span.metrics.items() if k not in _TOKEN_METRICS}
        if others:
            metadata["metrics"] = others
    return metadata or None


def _span_tags(span: Span) -> list[str] | None:
    tags = dict(span.tags) if span.tags else {}
    if span.ml_app is not None:
        tags.setdefault("ml_app", span.ml_app)
    if span.session_id is not None:
        tags.setdefault("session_id", span.session_id)
    return sorted(f"{key}:{value}" for key, value in tags.items()) if tags else None


def _rollup(records: list[SpanRecord], root: Span | None) -> TraceRollup:
    counts: list[tuple[int | None, int | None, int | None]] = [
        (record.input_tokens, record.output_tokens, record.total_tokens)
        for record in records
        if record.kind in _MODEL_KINDS
    ]
    if root is not None:
        counts.append(_tokens(root.metrics))
    costs = [record.estimated_cost for record in records if record.estimated_cost is not None]
    return TraceRollup(
        input_tokens=_sum(count[0] for count in counts),
        output_tokens=_sum(count[1] for count in counts),
        total_tokens=_sum(count[2] for count in counts),
        estimated_total_cost=sum(costs) if costs else None,
    )


def _sum(values: Iterable[int | None]) -> int | None:
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def _root_annotations(root: Span | None) -> dict[str, JSON]:
    if root is None:
        return {}
    annotations: dict[str, JSON] = {}
    metadata = _span_metadata(root, with_metrics=False)
    if metadata:
        annotations["metadata"] = metadata
    if root.metrics:
        annotations["metrics"] = dict(root.metrics)
    if root.tags:
        annotations["tags"] = dict(root.tags)
    if root.input is not None:
        annotations["input_data"] = root.input
    if root.output is not None:
        annotations["output_data"] = root.output
    return annotations
