"""``LLMJudge``: an evaluator that asks a language model for its verdict, as ddtrace's does.

The user prompt is a template over the row (``{{input_data}}``, ``{{output_data}}``,
``{{expected_output}}``, ``{{metadata.key}}``); a structured output says what the model
must answer — a boolean, a score in a range or one of a few categories, optionally with
its reasoning first — and how that answer maps to a pass/fail assessment::

    judge = LLMJudge(
        user_prompt="Question: {{input_data}}\\nAnswer: {{output_data}}\\nIs it correct?",
        structured_output=BooleanStructuredOutput("Whether the answer is correct", pass_when=True),
        provider="openai",
        model="gpt-4o-mini",
    )

The model is held to the answer's JSON schema: OpenAI through ``response_format``
(``json_schema``, strict), Anthropic through a forced tool whose ``input_schema`` is the
schema. Every judge call is traced in a trace of its own, and the evaluation's metadata
carries its ids, model, tokens and estimated cost (``judge_*`` keys).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from assay import integrations, tracing
from assay.evaluation import BaseEvaluator, EvaluatorContext, EvaluatorResult
from assay.ids import new_span_id, new_trace_id
from assay.integrations import anthropic as anthropic_integration
from assay.integrations import openai as openai_integration
from assay.store.records import JSON

SUPPORTED_PROVIDERS = ("openai", "anthropic")
"""Providers whose SDK the judge drives itself; any other needs ``client=``."""

# ddtrace's names for providers it supports and Assay does not (yet).
_OTHER_DDTRACE_PROVIDERS = ("azure_openai", "vertexai", "bedrock")

_API_KEYS = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"),
}
_ANTHROPIC_MAX_TOKENS = 4096
_TOOL_NAME = "record_evaluation"
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_CONTEXT_FIELDS = (
    "input_data",
    "output_data",
    "expected_output",
    "metadata",
    "span_id",
    "trace_id",
)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


class LLMClient(Protocol):
    """ddtrace's custom judge client: called with the messages, returns the model's text."""

    def __call__(
        self,
        provider: str | None,
        messages: list[dict[str, str]],
        json_schema: dict[str, Any] | None,
        model: str,
        model_params: dict[str, Any] | None,
    ) -> str: ...


# Structured outputs -------------------------------------------------------------------


def _with_reasoning(
    label: str, label_schema: dict[str, Any], reasoning: bool, reasoning_description: str | None
) -> dict[str, Any]:
    """The answer's schema. Reasoning, when asked for, comes first: a model writes the
    keys in order, so it explains before it decides."""
    properties: dict[str, Any] = {}
    if reasoning:
        properties["reasoning"] = {
            "type": "string",
            "description": reasoning_description or "Explanation for the evaluation result",
        }
    properties[label] = label_schema
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class BooleanStructuredOutput:
    """A true/false verdict; with ``pass_when``, the value that counts as a pass.

    ``BooleanStructuredOutput("Whether the answer is correct", reasoning=True, pass_when=True)``
    """

    description: str
    reasoning: bool = False
    reasoning_description: str | None = None
    pass_when: bool | None = None

    @property
    def label(self) -> str:
        """The key of the verdict in the model's JSON answer."""
        return "boolean_eval"

    def to_json_schema(self) -> dict[str, Any]:
        """The JSON schema the model's answer must match."""
        return _with_reasoning(
            self.label,
            {"type": "boolean", "description": self.description},
            self.reasoning,
            self.reasoning_description,
        )

    def value_of(self, answer: object) -> bool:
        """The verdict, or ``ValueError`` if the model did not give a boolean."""
        if not isinstance(answer, bool):
            raise ValueError(f"The judge answered {answer!r} where a boolean was asked for")
        return answer

    def verdict(self, answer: object) -> tuple[bool, str | None]:
        """The value the model answered and its assessment."""
        value = self.value_of(answer)
        return value, self.assess(value)

    def assess(self, value: bool) -> str | None:
        """``"pass"`` when the value is ``pass_when``; None without ``pass_when``."""
        if self.pass_when is None:
            return None
        return "pass" if value == self.pass_when else "fail"


@dataclass(frozen=True)
class ScoreStructuredOutput:
    """A number in ``[min_score, max_score]``, passing between the thresholds.

    With both thresholds and ``min_threshold <= max_threshold`` a score passes inside
    ``[min_threshold, max_threshold]``; with ``max_threshold < min_threshold`` it passes
    outside ``(max_threshold, min_threshold)``; with one of them it passes at or above
    ``min_threshold`` (at or below ``max_threshold``). As in ddtrace.
    """

    description: str
    min_score: float
    max_score: float
    reasoning: bool = False
    reasoning_description: str | None = None
    min_threshold: float | None = None
    max_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.min_score > self.max_score:
            raise ValueError(
                f"ScoreStructuredOutput min_score ({self.min_score}) is greater than "
                f"max_score ({self.max_score}): swap them"
            )

    @property
    def label(self) -> str:
        """The key of the score in the model's JSON answer."""
        return "score_eval"

    def to_json_schema(self) -> dict[str, Any]:
        """The JSON schema the model's answer must match (the range also in words, for
        models that ignore ``minimum`` and ``maximum``)."""
        bounds = f"{self.min_score:g} to {self.max_score:g}"
        return _with_reasoning(
            self.label,
            {
                "type": "number",
                "description": f"{self.description} (a number from {bounds})",
                "minimum": self.min_score,
                "maximum": self.max_score,
            },
            self.reasoning,
            self.reasoning_description,
        )

    def value_of(self, answer: object) -> float:
        """The score, or ``ValueError`` if it is not a number in the range."""
        if isinstance(answer, bool) or not isinstance(answer, int | float):
            raise ValueError(f"The judge answered {answer!r} where a number was asked for")
        if not self.min_score <= answer <= self.max_score:
            raise ValueError(
                f"The judge's score {answer!r} is outside its range "
                f"[{self.min_score:g}, {self.max_score:g}]"
            )
        return answer

    def verdict(self, answer: object) -> tuple[float, str | None]:
        """The score the model answered and its assessment."""
        value = self.value_of(answer)
        return value, self.assess(value)

    def assess(self, value: float) -> str | None:
        """``"pass"`` or ``"fail"`` by the thresholds; None without thresholds."""
        low, high = self.min_threshold, self.max_threshold
        if low is not None and high is not None:
            # max below min: the passing scores are the two ends of the range.
            passed = low <= value <= high if high >= low else value < high or value > low
        elif low is not None:
            passed = value >= low
        elif high is not None:
            passed = value <= high
        else:
            return None
        return "pass" if passed else "fail"


@dataclass(frozen=True)
class CategoricalStructuredOutput:
    """One of ``categories`` (value → what it means); passing when in ``pass_values``::

    CategoricalStructuredOutput(
        {"positive": "Upbeat", "negative": "Critical"}, pass_values=["positive"]
    )
    """

    categories: dict[str, str]
    reasoning: bool = False
    reasoning_description: str | None = None
    pass_values: list[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.categories, Mapping) or not self.categories:
            raise ValueError(
                "CategoricalStructuredOutput needs categories: a dict of at least one "
                f"category value to its description, got {self.categories!r}"
            )
        unknown = [value for value in self.pass_values or () if value not in self.categories]
        if unknown:
            raise ValueError(
                f"CategoricalStructuredOutput pass_values {unknown!r} are not categories "
                f"(categories: {', '.join(map(repr, self.categories))})"
            )

    @property
    def label(self) -> str:
        """The key of the category in the model's JSON answer."""
        return "categorical_eval"

    def to_json_schema(self) -> dict[str, Any]:
        """The JSON schema the model's answer must match: an enum, each value explained."""
        explained = "\n".join(f"- {value}: {meaning}" for value, meaning in self.categories.items())
        return _with_reasoning(
            self.label,
            {
                "type": "string",
                "enum": list(self.categories),
                "description": f"The category that applies, one of:\n{explained}",
            },
            self.reasoning,
            self.reasoning_description,
        )

    def value_of(self, answer: object) -> str:
        """The category, or ``ValueError`` if the model answered something else."""
        if not isinstance(answer, str) or answer not in self.categories:
            raise ValueError(
                f"The judge answered {answer!r}, which is not one of the categories "
                f"{', '.join(map(repr, self.categories))}"
            )
        return answer

    def verdict(self, answer: object) -> tuple[str, str | None]:
        """The category the model answered and its assessment."""
        value = self.value_of(answer)
        return value, self.assess(value)

    def assess(self, value: str) -> str | None:
        """``"pass"`` when the category is one of ``pass_values``; None without them."""
        if self.pass_values is None:
            return None
        return "pass" if value in self.pass_values else "fail"


StructuredOutput = (
    BooleanStructuredOutput | ScoreStructuredOutput | CategoricalStructuredOutput | dict[str, Any]
)
_OUTPUT_CLASSES = (BooleanStructuredOutput, ScoreStructuredOutput, CategoricalStructuredOutput)


# The judge ----------------------------------------------------------------------------


_Answer = tuple[str | None, dict[str, Any] | None]
"""What a judge call gave: the model's text, or the JSON it answered with when the SDK
hands it over parsed (a forced tool's input)."""


class LLMJudge(BaseEvaluator):
    """An evaluator whose verdict comes from a language model (ddtrace's ``LLMJudge``).

    ``provider`` is ``"openai"`` or ``"anthropic"``: the judge creates that SDK's client
    on first use, with the API key from ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY`` unless
    ``client_options`` (passed to the client's constructor: ``api_key``, ``base_url``,
    ``timeout``...) give one. ``client`` may instead be a ready ``openai.OpenAI`` or
    ``anthropic.Anthropic`` instance, or ddtrace's custom client: a callable
    ``(provider, messages, json_schema, model, model_params) -> str``.

    ``user_prompt`` is a template: ``{{input_data}}``, ``{{output_data}}``,
    ``{{expected_output}}`` and ``{{metadata.key}}`` (nested keys with more dots) are
    replaced by the row's values, strings as they are, ``None`` as nothing, anything
    else as JSON. A key the row's metadata lacks fails that row's evaluation with a
    message naming it. ``system_prompt`` is sent as is.

    The result is an :class:`EvaluatorResult` with the verdict, the reasoning (when
    asked for), the assessment and ``metadata`` holding ``raw_response`` (the model's
    JSON) and ``judge_trace_id``, ``judge_span_id``, ``judge_model``,
    ``judge_input_tokens``, ``judge_output_tokens`` and ``judge_estimated_cost``
    (nanodollars; None when the model has no known price or the client reports no
    usage). Without ``structured_output`` the value is the model's text.
    """

    def __init__(
        self,
        user_prompt: str,
        system_prompt: str | None = None,
        structured_output: StructuredOutput | None = None,
        provider: str | None = None,
        model: str | None = None,
        model_params: dict[str, Any] | None = None,
        client: Any = None,
        name: str | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        """Check the prompt, output and provider now, so that no row finds them wrong."""
        super().__init__(name=name)
        if not isinstance(user_prompt, str) or not user_prompt.strip():
            raise ValueError(f"LLMJudge needs a user_prompt template, got {user_prompt!r}")
        _check_template(user_prompt)
        if structured_output is not None and not isinstance(
            structured_output, (*_OUTPUT_CLASSES, dict)
        ):
            raise TypeError(
                "structured_output must be a BooleanStructuredOutput, ScoreStructuredOutput, "
                f"CategoricalStructuredOutput or a JSON-schema dict, got {structured_output!r}"
            )
        if not model:
            raise ValueError(
                "LLMJudge needs model=, the judge model's name (e.g. 'gpt-4o-mini' or "
                "'claude-haiku-4-5')"
            )
        self.user_prompt = user_prompt
        self.system_prompt = system_prompt
        self.structured_output = structured_output
        self.model = model
        self.model_params = dict(model_params or {})
        self._custom_client: LLMClient | None = None
        self._sdk_client: Any = None
        self._client_options = dict(client_options or {})
        self._lock = threading.Lock()
        self.provider: str | None
        if client is not None and callable(client):
            self.provider = provider
            self._custom_client = client
            return
        if client is not None:
            provider = provider or _sdk_provider(client)
            if type(client).__name__.startswith("Async"):
                raise TypeError(
                    f"LLMJudge calls its client synchronously: pass a {provider} client such "
                    f"as openai.OpenAI or anthropic.Anthropic, not {type(client).__name__}"
                )
        self.provider = _check_provider(provider)
        if client is not None:
            self._sdk_client = client
        else:
            _check_installed_and_keyed(self.provider, self._client_options)

    # Evaluating -------------------------------------------------------------------------

    def evaluate(self, context: EvaluatorContext) -> EvaluatorResult:
        """Render the prompt for this row, ask the model, and read its verdict."""
        messages: list[dict[str, str]] = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": render(self.user_prompt, context)})
        schema = self._json_schema()
        trace_id, span_id = new_trace_id(), new_span_id()
        # A trace of its own, even inside a task's: the judge's tokens are not the task's.
        opened = tracing.begin_trace(trace_id, span_id)
        try:
            text, answer = self._ask(messages, schema)
        finally:
            finished = tracing.end_trace(opened)
        metadata = self._judge_metadata(finished, trace_id, span_id)
        if schema is None:
            return EvaluatorResult(value=text or "", metadata=metadata)
        return self._result(answer if answer is not None else _json_answer(text), metadata)

    def _json_schema(self) -> dict[str, Any] | None:
        output = self.structured_output
        if output is None:
            return None
        if isinstance(output, dict):
            return output
        return output.to_json_schema()

    def _ask(self, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> _Answer:
        if self._custom_client is not None:
            params = self.model_params or None
            return self._custom_client(self.provider, messages, schema, self.model, params), None
        client = self._client()
        if self.provider == "anthropic":
            return self._ask_anthropic(client, messages, schema)
        return self._ask_openai(client, messages, schema)

    def _ask_openai(
        self, client: Any, messages: list[dict[str, str]], schema: dict[str, Any] | None
    ) -> _Answer:
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, **self.model_params}
        if schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "evaluation", "strict": True, "schema": schema},
            }
        resource = client.chat.completions
        response = integrations.call_traced(
            openai_integration.CHAT_COMPLETIONS, resource, resource.create, (), kwargs
        )
        reply = response.choices[0].message
        if getattr(reply, "refusal", None):
            raise ValueError(f"The judge model refused to answer: {reply.refusal}")
        return reply.content or "", None

    def _ask_anthropic(
        self, client: Any, messages: list[dict[str, str]], schema: dict[str, Any] | None
    ) -> _Answer:
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        kwargs: dict[str, Any] = {
            "model": self.model,
            "max_tokens": _ANTHROPIC_MAX_TOKENS,
            "messages": [m for m in messages if m["role"] != "system"],
            **self.model_params,
        }
        if system:
            kwargs["system"] = system
        if schema is not None:
            kwargs["tools"] = [
                {
                    "name": _TOOL_NAME,
                    "description": "Record your evaluation. Call it exactly once.",
                    "input_schema": schema,
                }
            ]
            kwargs["tool_choice"] = {"type": "tool", "name": _TOOL_NAME}
        resource = client.messages
        response = integrations.call_traced(
            anthropic_integration.MESSAGES, resource, resource.create, (), kwargs
        )
        texts = []
        for block in response.content or ():
            if block.type == "tool_use" and isinstance(block.input, Mapping):
                return None, dict(block.input)
            if block.type == "text":
                texts.append(block.text)
        return "".join(texts), None

    def _client(self) -> Any:
        """The SDK client, created on first use (evaluate may run on several threads)."""
        if self._sdk_client is None:
            with self._lock:
                if self._sdk_client is None:
                    sdk = importlib.import_module(self.provider or "")
                    factory = sdk.OpenAI if self.provider == "openai" else sdk.Anthropic
                    self._sdk_client = factory(**self._client_options)
        return self._sdk_client

    def _judge_metadata(
        self, finished: tracing.FinishedTrace, trace_id: str, span_id: str
    ) -> dict[str, JSON]:
        models = [span.model_name for span in finished.spans if span.kind == "llm"]
        rollup = finished.rollup
        return {
            "judge_trace_id": trace_id,
            "judge_span_id": span_id,
            "judge_model": next((model for model in models if model), self.model),
            "judge_input_tokens": rollup.input_tokens,
            "judge_output_tokens": rollup.output_tokens,
            "judge_estimated_cost": rollup.estimated_total_cost,
        }

    def _result(self, answer: dict[str, Any], metadata: dict[str, JSON]) -> EvaluatorResult:
        output = self.structured_output
        # Parsed JSON, or a tool input the SDK parsed from JSON: JSON all the way down.
        raw_response: dict[str, JSON] = answer
        raw: dict[str, JSON] = {"raw_response": raw_response, **metadata}
        if isinstance(output, dict):
            reasoning = answer.get("reasoning")
            return EvaluatorResult(
                value=raw_response,
                reasoning=reasoning if isinstance(reasoning, str) else None,
                metadata=raw,
            )
        assert output is not None
        if output.label not in answer:
            raise ValueError(
                f"The judge's answer has no {output.label!r} key: {json.dumps(answer)[:200]}"
            )
        value, assessment = output.verdict(answer[output.label])
        reasoning = answer.get("reasoning") if output.reasoning else None
        return EvaluatorResult(
            value=value,
            reasoning=reasoning if isinstance(reasoning, str) else None,
            assessment=assessment,
            metadata=raw,
        )


# Templates ----------------------------------------------------------------------------


def _check_template(template: str) -> None:
    for match in _PLACEHOLDER.finditer(template):
        root = match.group(1).split(".", 1)[0]
        if root not in _CONTEXT_FIELDS:
            raise ValueError(
                f"Unknown placeholder {match.group(0)} in the LLMJudge prompt: use "
                + ", ".join("{{" + name + "}}" for name in _CONTEXT_FIELDS[:3])
                + " or {{metadata.<key>}}"
            )


def render(template: str, context: EvaluatorContext) -> str:
    """``template`` with each ``{{path}}`` replaced by the row's value at that path.

    Strings go in as they are, ``None`` as an empty string, anything else as JSON
    (objects and lists indented). A path through a key that does not exist raises
    ``ValueError`` naming the placeholder, the missing key and the keys there are.
    """

    def replace(match: re.Match[str]) -> str:
        path = match.group(1)
        root, *keys = path.split(".")
        value: Any = getattr(context, root)
        where = root
        for key in keys:
            if isinstance(value, Mapping) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                if isinstance(value, Mapping):
                    there = ", ".join(map(repr, value)) or "none"
                    detail = f"has no key {key!r} (its keys: {there})"
                else:
                    detail = f"is {type(value).__name__}, not an object with key {key!r}"
                raise ValueError(
                    f"The LLMJudge prompt uses {{{{{path}}}}}, but the row's {where} {detail}"
                )
            where = f"{where}.{key}"
        return _as_text(value)

    return _PLACEHOLDER.sub(replace, template)


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    indent = 2 if isinstance(value, Mapping | list | tuple) else None
    return json.dumps(value, indent=indent, ensure_ascii=False, default=str)


# Checks and parsing -------------------------------------------------------------------


def _check_provider(provider: str | None) -> Literal["openai", "anthropic"]:
    if provider == "openai":
        return "openai"
    if provider == "anthropic":
        return "anthropic"
    supported = " or ".join(repr(name) for name in SUPPORTED_PROVIDERS)
    if provider is None:
        raise ValueError(f"LLMJudge needs provider= ({supported}) or client=")
    later = (
        " (ddtrace's, not supported by Assay yet)" if provider in _OTHER_DDTRACE_PROVIDERS else ""
    )
    raise ValueError(
        f"LLMJudge provider {provider!r}{later} is not supported: use {supported}, "
        "or pass client= a callable (provider, messages, json_schema, model, model_params) -> str"
    )


def _sdk_provider(client: object) -> str | None:
    if hasattr(client, "chat"):
        return "openai"
    if hasattr(client, "messages"):
        return "anthropic"
    raise TypeError(
        "LLMJudge client= must be an openai.OpenAI or anthropic.Anthropic client, or a "
        f"callable (provider, messages, json_schema, model, model_params) -> str; got {client!r}"
    )


def _check_installed_and_keyed(provider: str, options: Mapping[str, Any]) -> None:
    if importlib.util.find_spec(provider) is None:
        raise ImportError(
            f"LLMJudge(provider={provider!r}) needs the {provider} package: "
            f"pip install 'assay[{provider}]'"
        )
    variables = _API_KEYS[provider]
    if options.get("api_key") or options.get("auth_token"):
        return
    if any(os.environ.get(variable) for variable in variables):
        return
    raise ValueError(
        f"LLMJudge(provider={provider!r}) needs an API key: set {variables[0]} or pass "
        "client_options={'api_key': ...}"
    )


def _json_answer(text: str | None) -> dict[str, Any]:
    """The model's text as a JSON object (a markdown code fence around it is tolerated)."""
    stripped = (text or "").strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    try:
        answer = json.loads(stripped)
    except json.JSONDecodeError as error:
        raise ValueError(f"The judge's answer is not JSON ({error}): {stripped[:200]!r}") from None
    if not isinstance(answer, dict):
        raise ValueError(f"The judge's answer is not a JSON object: {stripped[:200]!r}")
    return answer
