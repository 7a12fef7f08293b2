"""Automatic spans for the official ``openai`` and ``anthropic`` Python clients.

Once patched, every model call a task makes becomes an ``llm`` (or ``embedding``) child
span of the task's trace, with the model, provider, input messages, output text, token
usage, latency and any error, and so the trace's tokens and cost, without the task
writing anything::

    from assay import integrations

    integrations.patch_all()  # LLMObs.enable() does this unless integrations_enabled=False

    def task(input_data, config):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        return reply.choices[0].message.content  # one llm span, tokens and cost included

Outside a trace the patched methods only call through. Patching wraps a few methods of
the clients' resource classes (``functools.wraps`` on the class attribute), so it covers
every client instance, old or new; it is idempotent, and ``unpatch()`` puts the original
methods back. ``patch_all()`` imports nothing: a client library that is already imported
is patched at once, one that is installed but not yet imported is patched when its
resource modules are first imported, and one that is not installed is skipped.

Streaming calls (``stream=True``, ``.stream()`` helpers) pass through untraced: a stream
is consumed after the call returns, outside the span the call would have opened.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal, TypeVar

from assay import tracing
from assay.store.records import JSON
from assay.tracing import Span, SpanScope

logger = logging.getLogger("assay")

T = TypeVar("T")

INTEGRATIONS = ("openai", "anthropic")
"""The client libraries Assay instruments, by the name they are imported under."""

# Set while a traced call runs: an SDK method that calls another patched one (or a caller,
# like LLMJudge, that records the call itself) makes one span, not two.
_inside_call: ContextVar[bool] = ContextVar("assay_integration_call", default=False)

# Marks a wrapper we installed, so patching twice wraps once and unpatching finds it.
_MARK = "__assay_integration__"


# What a traced call records ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """What a call sent, as its span records it."""

    model: str | None
    input: JSON
    metadata: dict[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """What a call returned, as its span records it."""

    model: str | None = None
    output: JSON = None
    metrics: dict[str, int | float] = field(default_factory=dict)
    metadata: dict[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One traced API method: its span's name and kind, and how to read a call of it."""

    span_name: str
    kind: Literal["llm", "embedding"]
    provider: Callable[[object], str]
    """The provider name (as pricing knows it) for a call on this resource instance."""
    read_request: Callable[[dict[str, Any]], Request]
    """Reads the keyword arguments; may replace a one-shot iterable in them by a list."""
    read_reply: Callable[[object], Reply]
    """Reads what the method returned (a raw-response wrapper gives an empty reply)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A method to patch: ``class_name.method`` in the first of ``modules`` defining it.

    Several modules because the SDKs moved their resources between versions (a module
    became a package of modules).
    """

    modules: tuple[str, ...]
    class_name: str
    method: str
    endpoint: Endpoint
    is_async: bool


# Tracing one call ---------------------------------------------------------------------


def call_traced(
    endpoint: Endpoint,
    resource: object,
    function: Callable[..., T],
    args: Sequence[Any],
    kwargs: dict[str, Any],
) -> T:
    """``function(*args, **kwargs)`` recorded as one span of ``endpoint``.

    Outside a trace, for a streaming call, or inside another traced call, it just calls.
    LLMJudge uses it to record its own call whether or not the client is patched.
    """
    if _inside_call.get() or kwargs.get("stream"):
        return function(*args, **kwargs)
    with _scope(endpoint) as span:
        if span.trace_id is None:  # not in a trace: nothing to record
            return function(*args, **kwargs)
        _record_request(span, endpoint, resource, kwargs)
        inside = _inside_call.set(True)
        try:
            result = function(*args, **kwargs)
        finally:
            _inside_call.reset(inside)
        _record_reply(span, endpoint, result)
        return result


async def call_traced_async(
    endpoint: Endpoint,
    resource: object,
    function: Callable[..., Any],
    args: Sequence[Any],
    kwargs: dict[str, Any],
) -> Any:
    """The coroutine version of :func:`call_traced`, for the async clients."""
    if _inside_call.get() or kwargs.get("stream"):
        return await function(*args, **kwargs)
    with _scope(endpoint) as span:
        if span.trace_id is None:
            return await function(*args, **kwargs)
        _record_request(span, endpoint, resource, kwargs)
        inside = _inside_call.set(True)
        try:
            result = await function(*args, **kwargs)
        finally:
            _inside_call.reset(inside)
        _record_reply(span, endpoint, result)
        return result


def _scope(endpoint: Endpoint) -> SpanScope:
    if endpoint.kind == "embedding":
        return tracing.embedding(name=endpoint.span_name)
    return tracing.llm(name=endpoint.span_name)


def _record_request(
    span: Span, endpoint: Endpoint, resource: object, kwargs: dict[str, Any]
) -> None:
    # Instrumentation must never break the call it observes: a request or reply shaped
    # in a way this code did not foresee loses detail on the span, nothing more.
    try:
        request = endpoint.read_request(kwargs)
        span.model_provider = endpoint.provider(resource)
        if request.model:
            span.model_name = request.model
        tracing.annotate(span, input_data=request.input, metadata=request.metadata or None)
    except Exception:
        logger.debug("Could not record the request of %s", endpoint.span_name, exc_info=True)


def _record_reply(span: Span, endpoint: Endpoint, result: object) -> None:
    try:
        reply = endpoint.read_reply(result)
        if reply.model:
            span.model_name = reply.model
        tracing.annotate(
            span,
            output_data=reply.output,
            metrics=reply.metrics or None,
            metadata=reply.metadata or None,
        )
    except Exception:
        logger.debug("Could not record the reply of %s", endpoint.span_name, exc_info=True)


# Patching -----------------------------------------------------------------------------

_lock = threading.RLock()


def _wrapper(target: Target, original: Callable[..., Any]) -> Callable[..., Any]:
    endpoint = target.endpoint
    if target.is_async:
        # Not inspect.iscoroutinefunction(original): the SDKs' argument-checking
        # decorators hide that their methods are coroutine functions.

        @functools.wraps(original)
        async def traced_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await call_traced_async(endpoint, self, original, (self, *args), kwargs)

        wrapper: Callable[..., Any] = traced_async
    else:

        @functools.wraps(original)
        def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
            return call_traced(endpoint, self, original, (self, *args), kwargs)

        wrapper = traced
    setattr(wrapper, _MARK, True)
    return wrapper


def _patch_class(target: Target, owner: object) -> bool:
    """Wrap the target method on ``owner``; False when it is not there to wrap."""
    if not isinstance(owner, type):
        return False
    with _lock:
        current = owner.__dict__.get(target.method)
        if current is None or not callable(current):
            return False
        if not getattr(current, _MARK, False):
            setattr(owner, target.method, _wrapper(target, current))
        return True


def _unpatch_class(target: Target, owner: type) -> None:
    with _lock:
        current = owner.__dict__.get(target.method)
        if getattr(current, _MARK, False):
            # current is our wrapper here, and functools.wraps gave it __wrapped__.
            setattr(owner, target.method, current.__wrapped__)  # type: ignore[union-attr]


def _defining_class(target: Target, *, load: bool) -> type | None:
    """The class holding the target method, from the modules already imported (or, with
    ``load``, importing them)."""
    for module_name in target.modules:
        module = sys.modules.get(module_name)
        if module is None and load:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
        if module is None:
            continue
        # getattr, not vars(): packages of the newer SDKs export their classes lazily.
        owner = getattr(module, target.class_name, None) if load else None
        if owner is None:
            owner = vars(module).get(target.class_name)
        if isinstance(owner, type) and target.method in owner.__dict__:
            return owner
    return None


def patch_targets(package: str, targets: Iterable[Target]) -> None:
    """Patch every target of a client library, importing its modules now.

    Raises ``ImportError`` naming the extra to install when the library is missing; a
    target the installed version does not have (an endpoint added later) is skipped.
    """
    if importlib.util.find_spec(package) is None:
        raise ImportError(
            f"Instrumenting {package} needs the {package} package: pip install 'assay[{package}]'"
        )
    for target in targets:
        _watcher.forget(target)
        owner = _defining_class(target, load=True)
        if owner is not None:
            _patch_class(target, owner)


def unpatch_targets(targets: Iterable[Target]) -> None:
    """Put back the original methods (and stop waiting to patch modules not yet loaded)."""
    for target in targets:
        _watcher.forget(target)
        owner = _defining_class(target, load=False)
        if owner is not None:
            _unpatch_class(target, owner)


def targets_patched(targets: Iterable[Target]) -> bool:
    """Whether every target whose module is imported is patched (and at least one is)."""
    found = False
    for target in targets:
        owner = _defining_class(target, load=False)
        if owner is None:
            continue
        found = True
        if not getattr(owner.__dict__.get(target.method), _MARK, False):
            return False
    return found


def patch_when_imported(package: str, targets: Iterable[Target]) -> bool:
    """Patch a library's targets now if their modules are imported, else once they are.

    Imports nothing. False (and nothing done) when the library is not installed.
    """
    if package not in sys.modules and importlib.util.find_spec(package) is None:
        return False
    for target in targets:
        owner = _defining_class(target, load=False)
        if owner is not None:
            _patch_class(target, owner)
        else:
            _watcher.watch(target)
    return True


def _integration(name: str) -> ModuleType:
    return importlib.import_module(f"assay.integrations.{name}")


def patch_all() -> list[str]:
    """Instrument every supported client library that is installed; skip the others.

    Returns the names of the libraries instrumented (or to be, on their first import).
    Costs one lookup on the import path per library and imports none of them.
    """
    patched = []
    for name in INTEGRATIONS:
        if name not in sys.modules and importlib.util.find_spec(name) is None:
            continue
        if _integration(name).patch_when_imported():
            patched.append(name)
    return patched


def unpatch_all() -> None:
    """Undo :func:`patch_all` (and any ``patch()``) for every supported library."""
    for name in INTEGRATIONS:
        _integration(name).unpatch()


# Patching on import -------------------------------------------------------------------


class _ImportWatcher(importlib.abc.MetaPathFinder):
    """Patches a target once the module defining it has been executed.

    It finds nothing itself: for a watched module it asks the other finders for the spec
    and wraps its loader, so that the patch runs right after the module's code.
    """

    def __init__(self) -> None:
        self._pending: dict[str, list[Target]] = {}

    def watch(self, target: Target) -> None:
        with _lock:
            for module_name in target.modules:
                waiting = self._pending.setdefault(module_name, [])
                if target not in waiting:
                    waiting.append(target)
            if self not in sys.meta_path:
                sys.meta_path.insert(0, self)

    def forget(self, target: Target) -> None:
        with _lock:
            for module_name in target.modules:
                waiting = self._pending.get(module_name)
                if waiting is not None and target in waiting:
                    waiting.remove(target)
                    if not waiting:
                        del self._pending[module_name]
            self._retire_if_idle()

    def _retire_if_idle(self) -> None:
        if not self._pending and self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._pending:
            return None
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _PatchingLoader(spec.loader, self._loaded)
            return spec
        return None

    def _loaded(self, module: ModuleType) -> None:
        with _lock:
            waiting = self._pending.pop(module.__name__, [])
            self._retire_if_idle()
        for target in waiting:
            owner = vars(module).get(target.class_name)
            if not isinstance(owner, type):
                continue  # a package that only re-exports the class lazily
            try:
                if _patch_class(target, owner):
                    self.forget(target)
            except Exception:  # a failed patch must not fail the user's import
                logger.warning(
                    "Could not instrument %s.%s.%s",
                    module.__name__,
                    target.class_name,
                    target.method,
                    exc_info=True,
                )


class _PatchingLoader(importlib.abc.Loader):
    """Delegates to a module's real loader, then hands the loaded module on."""

    def __init__(self, loader: Any, loaded: Callable[[ModuleType], None]) -> None:
        self._loader = loader
        self._loaded = loaded

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        # The module keeps its real loader (resource readers and reloads go through it).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loaded(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


_watcher = _ImportWatcher()


# Reading requests and replies ---------------------------------------------------------

# Request arguments that are not model settings: what the span records elsewhere,
# transport options, and identifiers of end users.
_NOT_SETTINGS = frozenset(
    {
        "model",
        "messages",
        "input",
        "prompt",
        "system",
        "instructions",
        "stream",
        "extra_headers",
        "extra_query",
        "extra_body",
        "timeout",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "metadata",
    }
)


def settings(kwargs: Mapping[str, Any]) -> dict[str, JSON]:
    """The scalar model settings of a request (temperature, max_tokens...), for metadata."""
    return {
        key: value
        for key, value in kwargs.items()
        if key not in _NOT_SETTINGS and isinstance(value, str | int | float | bool)
    }


def item(value: object, name: str) -> Any:
    """``value[name]`` of a dict, else ``value.name``; None when absent."""
    if isinstance(value, Mapping):
        return value.get(name)
    return getattr(value, name, None)


def count(value: object) -> int | None:
    """A token count, or None when the SDK did not give one."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def listed(kwargs: dict[str, Any], name: str) -> list[Any]:
    """``kwargs[name]`` as a list; a one-shot iterable is replaced in ``kwargs`` by the
    list, so that the SDK still sees every element."""
    value = kwargs.get(name)
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Iterator):
        materialized = list(value)
        kwargs[name] = materialized
        return materialized
    return []


def text_of(content: object) -> str:
    """A message's content as text: a string as is, the text parts of a list joined, and
    other parts (images, files...) by their type alone, so that no payload is copied."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping) or not isinstance(content, Iterable):
        return _part_text(content)
    return "\n".join(text for text in (_part_text(part) for part in content) if text)


def _part_text(part: object) -> str:
    text = item(part, "text")
    if isinstance(text, str):
        return text
    kind = item(part, "type")
    if kind == "tool_use":
        return tool_call_text(item(part, "name"), item(part, "input"))
    if kind == "tool_result":
        return text_of(item(part, "content"))
    if kind == "refusal":
        return str(item(part, "refusal") or "")
    return f"[{kind}]" if isinstance(kind, str) else ""


def tool_call_text(name: object, arguments: object) -> str:
    """A tool call as one line of text: ``name({"argument": ...})``."""
    if not isinstance(arguments, str):
        try:
            arguments = json.dumps(arguments, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            arguments = repr(arguments)
    return f"{name}({arguments})"


def message(role: object, content: object) -> dict[str, JSON]:
    """A message as spans record it: ``{"role": ..., "content": <text>}``."""
    return {"role": str(role) if role is not None else "user", "content": text_of(content)}


__all__ = [
    "INTEGRATIONS",
    "Endpoint",
    "Reply",
    "Request",
    "Target",
    "call_traced",
    "call_traced_async",
    "patch_all",
    "unpatch_all",
]
