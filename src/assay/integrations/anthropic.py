"""Spans for the official ``anthropic`` client (sync and async).

Traced: ``messages.create`` (an ``llm`` span; through ``with_raw_response`` without
output or tokens). Not traced: ``stream=True`` calls, ``messages.stream()``, the beta
resources and batches.

Token counts follow ddtrace: ``input_tokens`` is everything the prompt cost, that is
Anthropic's ``input_tokens`` plus the cache reads and cache writes, which are also kept
as ``cache_read_input_tokens`` and ``cache_write_input_tokens``. (The estimated cost
prices them all as plain input tokens.) This module imports ``anthropic`` only when it
patches.
"""

from __future__ import annotations

from typing import Any

from assay import integrations
from assay.integrations import (
    Endpoint,
    Reply,
    Request,
    Target,
    count,
    item,
    listed,
    message,
    settings,
    text_of,
)
from assay.store.records import JSON

PROVIDER = "anthropic"


def provider_of(resource: object) -> str:
    """Always ``anthropic``: ddtrace names Bedrock and Vertex deployments the same."""
    return PROVIDER


def _usage_metrics(usage: object) -> dict[str, int | float]:
    if usage is None:
        return {}
    metrics: dict[str, int | float] = {}
    uncached = count(item(usage, "input_tokens"))
    cache_read = count(item(usage, "cache_read_input_tokens"))
    cache_write = count(item(usage, "cache_creation_input_tokens"))
    output_tokens = count(item(usage, "output_tokens"))
    if uncached is not None or cache_read or cache_write:
        metrics["input_tokens"] = (uncached or 0) + (cache_read or 0) + (cache_write or 0)
    if output_tokens is not None:
        metrics["output_tokens"] = output_tokens
    if cache_read:
        metrics["cache_read_input_tokens"] = cache_read
    if cache_write:
        metrics["cache_write_input_tokens"] = cache_write
    return metrics


def read_messages_request(kwargs: dict[str, Any]) -> Request:
    """The model, messages (the system prompt first) and settings of ``messages.create``."""
    messages: list[JSON] = []
    system = kwargs.get("system")
    if isinstance(system, str) and system:
        messages.append(message("system", system))
    elif system is not None and not isinstance(system, str):
        blocks = listed(kwargs, "system")
        if blocks:
            messages.append(message("system", blocks))
    messages.extend(
        message(item(sent, "role"), item(sent, "content")) for sent in listed(kwargs, "messages")
    )
    model = kwargs.get("model")
    return Request(model if isinstance(model, str) and model else None, messages, settings(kwargs))


def read_messages_reply(response: object) -> Reply:
    """The model, text (tool calls as ``name({...})`` lines), usage and stop reason."""
    text = text_of(item(response, "content"))
    metadata: dict[str, JSON] = {}
    stop_reason = item(response, "stop_reason")
    if isinstance(stop_reason, str):
        metadata["stop_reason"] = stop_reason
    model = item(response, "model")
    return Reply(
        model=model if isinstance(model, str) and model else None,
        output=text or None,
        metrics=_usage_metrics(item(response, "usage")),
        metadata=metadata,
    )


MESSAGES = Endpoint(
    "anthropic.request", "llm", provider_of, read_messages_request, read_messages_reply
)

_MESSAGES = ("anthropic.resources.messages.messages", "anthropic.resources.messages")

TARGETS = (
    Target(_MESSAGES, "Messages", "create", MESSAGES, is_async=False),
    Target(_MESSAGES, "AsyncMessages", "create", MESSAGES, is_async=True),
)


def patch() -> None:
    """Trace the anthropic client's calls from now on (imports ``anthropic``; idempotent)."""
    integrations.patch_targets("anthropic", TARGETS)


def unpatch() -> None:
    """Put the original methods back."""
    integrations.unpatch_targets(TARGETS)


def is_patched() -> bool:
    """Whether the anthropic client's imported resource classes are patched."""
    return integrations.targets_patched(TARGETS)


def patch_when_imported() -> bool:
    """Patch now what is imported, the rest on import; False if anthropic is not installed."""
    return integrations.patch_when_imported("anthropic", TARGETS)
