"""Spans for the official ``openai`` client (sync and async, OpenAI and Azure OpenAI).

Traced: ``chat.completions.create`` and ``responses.create`` (``llm`` spans),
``completions.create`` (legacy, ``llm``) and ``embeddings.create`` (``embedding``), also
when reached through ``with_raw_response`` (which records no output or tokens: the body
is the caller's to parse). Not traced: ``stream=True`` calls and the ``.stream()`` and
``.parse()`` helpers.

Token counts are OpenAI's: ``prompt_tokens`` (cached ones included) become
``input_tokens``, ``completion_tokens`` (reasoning included) ``output_tokens``; cached
and reasoning tokens are also kept as ``cache_read_input_tokens`` and
``reasoning_output_tokens``. This module imports ``openai`` only when it patches.
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
    tool_call_text,
)
from assay.store.records import JSON

PROVIDER = "openai"

_AZURE_CLIENTS = frozenset({"AzureOpenAI", "AsyncAzureOpenAI"})


def provider_of(resource: object) -> str:
    """``azure_openai`` for a resource of an Azure client, else ``openai`` (ddtrace's)."""
    client = getattr(resource, "_client", None)
    if any(kind.__name__ in _AZURE_CLIENTS for kind in type(client).__mro__):
        return "azure_openai"
    return PROVIDER


def _model(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _usage_metrics(usage: object) -> dict[str, int | float]:
    """Token metrics from a chat/completions usage (``prompt_tokens``...) or a responses
    usage (``input_tokens``...)."""
    if usage is None:
        return {}
    metrics: dict[str, int | float] = {}
    input_tokens = count(item(usage, "prompt_tokens"))
    if input_tokens is None:
        input_tokens = count(item(usage, "input_tokens"))
    output_tokens = count(item(usage, "completion_tokens"))
    if output_tokens is None:
        output_tokens = count(item(usage, "output_tokens"))
    total_tokens = count(item(usage, "total_tokens"))
    for name, value in (
        ("input_tokens", input_tokens),
        ("output_tokens", output_tokens),
        ("total_tokens", total_tokens),
    ):
        if value is not None:
            metrics[name] = value
    input_details = item(usage, "prompt_tokens_details") or item(usage, "input_tokens_details")
    cached = count(item(input_details, "cached_tokens"))
    if cached:
        metrics["cache_read_input_tokens"] = cached
    output_details = item(usage, "completion_tokens_details") or item(
        usage, "output_tokens_details"
    )
    reasoning = count(item(output_details, "reasoning_tokens"))
    if reasoning:
        metrics["reasoning_output_tokens"] = reasoning
    return metrics


def _one_or_many(texts: list[str]) -> JSON:
    if not texts:
        return None
    return texts[0] if len(texts) == 1 else list(texts)


# Chat completions ---------------------------------------------------------------------


def _chat_message(sent: object) -> dict[str, JSON]:
    recorded = message(item(sent, "role"), item(sent, "content"))
    calls = [_tool_call_text(call) for call in item(sent, "tool_calls") or ()]
    if calls:
        recorded["content"] = "\n".join(filter(None, [str(recorded["content"]), *calls]))
    return recorded


def _tool_call_text(call: object) -> str:
    function = item(call, "function") or item(call, "custom")
    arguments = item(function, "arguments")
    return tool_call_text(
        item(function, "name"), arguments if arguments is not None else item(function, "input")
    )


def read_chat_request(kwargs: dict[str, Any]) -> Request:
    """The model, messages and settings of a ``chat.completions.create`` call."""
    messages = [_chat_message(sent) for sent in listed(kwargs, "messages")]
    return Request(_model(kwargs.get("model")), messages, settings(kwargs))


def read_chat_reply(response: object) -> Reply:
    """The model, text (one per choice), usage and finish reason of a ``ChatCompletion``."""
    texts = []
    finish_reason = None
    for choice in item(response, "choices") or ():
        reply = item(choice, "message")
        parts = [text_of(item(reply, "content"))]
        refusal = item(reply, "refusal")
        if refusal:
            parts.append(f"[refusal] {refusal}")
        parts.extend(_tool_call_text(call) for call in item(reply, "tool_calls") or ())
        texts.append("\n".join(part for part in parts if part))
        finish_reason = finish_reason or item(choice, "finish_reason")
    metadata: dict[str, JSON] = {}
    if isinstance(finish_reason, str):
        metadata["finish_reason"] = finish_reason
    return Reply(
        model=_model(item(response, "model")),
        output=_one_or_many(texts),
        metrics=_usage_metrics(item(response, "usage")),
        metadata=metadata,
    )


# Responses ----------------------------------------------------------------------------


def _response_item(sent: object) -> dict[str, JSON]:
    if isinstance(sent, str):
        return message("user", sent)
    role = item(sent, "role")
    if role is not None:
        return message(role, item(sent, "content"))
    kind = item(sent, "type")
    if kind == "function_call":
        return message("assistant", tool_call_text(item(sent, "name"), item(sent, "arguments")))
    if kind in ("function_call_output", "custom_tool_call_output"):
        return message("tool", item(sent, "output"))
    return message(kind or "user", "")


def read_responses_request(kwargs: dict[str, Any]) -> Request:
    """The model, input items (with instructions as a system message) and settings."""
    sent = kwargs.get("input")
    items = [message("user", sent)] if isinstance(sent, str) else []
    if not isinstance(sent, str):
        items = [_response_item(one) for one in listed(kwargs, "input")]
    instructions = kwargs.get("instructions")
    if isinstance(instructions, str) and instructions:
        items.insert(0, message("system", instructions))
    return Request(_model(kwargs.get("model")), items, settings(kwargs))


def read_responses_reply(response: object) -> Reply:
    """The model, output text (and function calls) and usage of a ``Response``."""
    parts: list[str] = []
    for output in item(response, "output") or ():
        kind = item(output, "type")
        if kind == "message":
            parts.append(text_of(item(output, "content")))
        elif kind == "function_call":
            parts.append(tool_call_text(item(output, "name"), item(output, "arguments")))
    text = "\n".join(part for part in parts if part)
    return Reply(
        model=_model(item(response, "model")),
        output=text or None,
        metrics=_usage_metrics(item(response, "usage")),
    )


# Legacy completions -------------------------------------------------------------------


def read_completion_request(kwargs: dict[str, Any]) -> Request:
    """The model, prompt(s) and settings of a legacy ``completions.create`` call."""
    prompt = kwargs.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else listed(kwargs, "prompt")
    texts = [message("user", one) for one in prompts if isinstance(one, str)]
    return Request(_model(kwargs.get("model")), texts, settings(kwargs))


def read_completion_reply(response: object) -> Reply:
    texts = [text_of(item(choice, "text")) for choice in item(response, "choices") or ()]
    return Reply(
        model=_model(item(response, "model")),
        output=_one_or_many(texts),
        metrics=_usage_metrics(item(response, "usage")),
    )


# Embeddings ---------------------------------------------------------------------------


def read_embedding_request(kwargs: dict[str, Any]) -> Request:
    """The model and texts of an ``embeddings.create`` call (token-id inputs by count)."""
    sent = kwargs.get("input")
    if isinstance(sent, str):
        documents: JSON = [sent]
    else:
        inputs = listed(kwargs, "input")
        if all(isinstance(one, str) for one in inputs):
            documents = list(inputs)
        else:
            documents = [f"[{len(inputs)} inputs of token ids]"]
    return Request(_model(kwargs.get("model")), documents, settings(kwargs))


def read_embedding_reply(response: object) -> Reply:
    data = item(response, "data")
    output = None
    if isinstance(data, list):
        vector = item(data[0], "embedding") if data else None
        size = len(vector) if isinstance(vector, list | str) else 0
        output = f"[{len(data)} embedding(s) returned with size {size}]"
    return Reply(
        model=_model(item(response, "model")),
        output=output,
        metrics=_usage_metrics(item(response, "usage")),
    )


CHAT_COMPLETIONS = Endpoint(
    "OpenAI.createChatCompletion", "llm", provider_of, read_chat_request, read_chat_reply
)
RESPONSES = Endpoint(
    "OpenAI.createResponse", "llm", provider_of, read_responses_request, read_responses_reply
)
COMPLETIONS = Endpoint(
    "OpenAI.createCompletion", "llm", provider_of, read_completion_request, read_completion_reply
)
EMBEDDINGS = Endpoint(
    "OpenAI.createEmbedding",
    "embedding",
    provider_of,
    read_embedding_request,
    read_embedding_reply,
)

_CHAT = ("openai.resources.chat.completions.completions", "openai.resources.chat.completions")
_RESPONSES = ("openai.resources.responses.responses", "openai.resources.responses")
_COMPLETIONS = ("openai.resources.completions",)
_EMBEDDINGS = ("openai.resources.embeddings",)

TARGETS = (
    Target(_CHAT, "Completions", "create", CHAT_COMPLETIONS, is_async=False),
    Target(_CHAT, "AsyncCompletions", "create", CHAT_COMPLETIONS, is_async=True),
    Target(_RESPONSES, "Responses", "create", RESPONSES, is_async=False),
    Target(_RESPONSES, "AsyncResponses", "create", RESPONSES, is_async=True),
    Target(_COMPLETIONS, "Completions", "create", COMPLETIONS, is_async=False),
    Target(_COMPLETIONS, "AsyncCompletions", "create", COMPLETIONS, is_async=True),
    Target(_EMBEDDINGS, "Embeddings", "create", EMBEDDINGS, is_async=False),
    Target(_EMBEDDINGS, "AsyncEmbeddings", "create", EMBEDDINGS, is_async=True),
)


def patch() -> None:
    """Trace the openai client's calls from now on (imports ``openai``; idempotent)."""
    integrations.patch_targets("openai", TARGETS)


def unpatch() -> None:
    """Put the original methods back."""
    integrations.unpatch_targets(TARGETS)


def is_patched() -> bool:
    """Whether the openai client's imported resource classes are patched."""
    return integrations.targets_patched(TARGETS)


def patch_when_imported() -> bool:
    """Patch now what is imported, the rest on import; False if openai is not installed."""
    return integrations.patch_when_imported("openai", TARGETS)
