"""LLMJudge: templates, structured outputs, assessments, both providers, its own trace.

The judge's SDK clients talk to the fake provider of ``test_integrations.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from assay import (
    BooleanStructuredOutput,
    CategoricalStructuredOutput,
    EvaluatorContext,
    EvaluatorResult,
    LLMJudge,
    LLMObs,
    ScoreStructuredOutput,
)
from assay.integrations import anthropic as anthropic_integration
from assay.integrations import openai as openai_integration
from assay.judge import render
from assay.pricing import estimate_cost
from test_integrations import (
    CHAT_MODEL,
    CHAT_USAGE,
    CLAUDE_INPUT_TOKENS,
    CLAUDE_MODEL,
    FakeProvider,
    fake,  # noqa: F401  (fixtures)
    serving,  # noqa: F401
    stored,
)

CONTEXT = EvaluatorContext(
    input_data={"question": "Capital of France?"},
    output_data="Paris",
    expected_output="Paris",
    metadata={"topic": "geography", "level": {"grade": 3}, "experiment_config": {}},
)
JUDGE_KEYS = {
    "judge_trace_id",
    "judge_span_id",
    "judge_model",
    "judge_input_tokens",
    "judge_output_tokens",
    "judge_estimated_cost",
}


@pytest.fixture
def gpt(fake: FakeProvider) -> Iterator[openai.OpenAI]:  # noqa: F811
    with openai.OpenAI(base_url=f"{fake.url}/v1", api_key="test", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:  # noqa: F811
    with anthropic.Anthropic(base_url=fake.url, api_key="test", max_retries=0) as client:
        yield client


def openai_judge(client: openai.OpenAI, output: Any, **options: Any) -> LLMJudge:
    return LLMJudge(
        user_prompt="Question: {{input_data}}\nAnswer: {{output_data}}",
        system_prompt="You grade answers.",
        structured_output=output,
        provider="openai",
        model="gpt-4o-mini",
        client=client,
        **options,
    )


def last_request(fake: FakeProvider) -> dict[str, Any]:  # noqa: F811
    return fake.requests[-1][1]


# Structured outputs over OpenAI -------------------------------------------------------


def test_a_boolean_verdict_with_reasoning_and_its_cost(
    fake: FakeProvider,  # noqa: F811
    gpt: openai.OpenAI,
) -> None:
    fake.chat_content = json.dumps({"reasoning": "It is the capital.", "boolean_eval": True})
    output = BooleanStructuredOutput(
        "Whether the answer is correct", reasoning=True, pass_when=True
    )
    result = openai_judge(gpt, output).evaluate(CONTEXT)

    assert isinstance(result, EvaluatorResult)
    assert (result.value, result.reasoning, result.assessment) == (
        True,
        "It is the capital.",
        "pass",
    )
    request = last_request(fake)
    assert request["model"] == "gpt-4o-mini"
    assert request["messages"] == [
        {"role": "system", "content": "You grade answers."},
        {
            "role": "user",
            "content": 'Question: {\n  "question": "Capital of France?"\n}\nAnswer: Paris',
        },
    ]
    response_format = request["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema == output.to_json_schema()
    assert list(schema["properties"]) == ["reasoning", "boolean_eval"]  # reasons first
    assert schema["required"] == ["reasoning", "boolean_eval"]
    assert schema["additionalProperties"] is False

    metadata = result.metadata or {}
    assert set(metadata) >= JUDGE_KEYS
    assert metadata["raw_response"] == {"reasoning": "It is the capital.", "boolean_eval": True}
    assert metadata["judge_model"] == CHAT_MODEL
    assert metadata["judge_input_tokens"] == CHAT_USAGE["prompt_tokens"]
    assert metadata["judge_output_tokens"] == CHAT_USAGE["completion_tokens"]
    cost = estimate_cost(CHAT_MODEL, "openai", 12, 3)
    assert cost is not None and cost > 0 and metadata["judge_estimated_cost"] == cost
    assert len(str(metadata["judge_trace_id"])) == 32 and str(metadata["judge_span_id"]).isdigit()


def test_the_judge_counts_its_call_once_whether_or_not_the_client_is_patched(
    fake: FakeProvider,  # noqa: F811
    gpt: openai.OpenAI,
) -> None:
    fake.chat_content = json.dumps({"boolean_eval": False})
    judge = openai_judge(gpt, BooleanStructuredOutput("ok?", pass_when=True))
    openai_integration.patch()
    patched = judge.evaluate(CONTEXT)
    openai_integration.unpatch()
    try:
        unpatched = judge.evaluate(CONTEXT)
    finally:
        openai_integration.patch()
    for result in (patched, unpatched):
        assert (result.value, result.assessment, result.reasoning) == (False, "fail", None)
        assert result.metadata is not None and result.metadata["judge_input_tokens"] == 12
    assert patched.metadata and unpatched.metadata
    assert patched.metadata["judge_trace_id"] != unpatched.metadata["judge_trace_id"]


@pytest.mark.parametrize(
    ("low", "high", "score", "assessment"),
    [
        (7, None, 7, "pass"),
        (7, None, 6.5, "fail"),
        (None, 3, 3, "pass"),
        (None, 3, 4, "fail"),
        (3, 7, 5, "pass"),
        (3, 7, 8, "fail"),
        (7, 3, 2, "pass"),  # max below min: the two ends of the range pass
        (7, 3, 9, "pass"),
        (7, 3, 5, "fail"),
        (None, None, 5, None),
    ],
)
def test_score_thresholds(
    fake: FakeProvider,  # noqa: F811
    gpt: openai.OpenAI,
    low: float | None,
    high: float | None,
    score: float,
    assessment: str | None,
) -> None:
    fake.chat_content = json.dumps({"score_eval": score})
    output = ScoreStructuredOutput(
        "Helpfulness", min_score=0, max_score=10, min_threshold=low, max_threshold=high
    )
    result = openai_judge(gpt, output).evaluate(CONTEXT)
    assert (result.value, result.assessment) == (score, assessment)


def test_score_schema_and_out_of_range_scores(
    fake: FakeProvider,  # noqa: F811
    gpt: openai.OpenAI,
) -> None:
    output = ScoreStructuredOutput("Helpfulness", min_score=1, max_score=10)
    label = output.to_json_schema()["properties"]["score_eval"]
    assert (label["type"], label["minimum"], label["maximum"]) == ("number", 1, 10)
    assert "from 1 to 10" in label["description"]
    fake.chat_content = json.dumps({"score_eval": 11})
    with pytest.raises(ValueError, match=r"score 11 is outside its range \[1, 10\]"):
        openai_judge(gpt, output).evaluate(CONTEXT)
    fake.chat_content = json.dumps({"score_eval": "high"})
    with pytest.raises(ValueError, match="'high' where a number was asked for"):
        openai_judge(gpt, output).evaluate(CONTEXT)
    with pytest.raises(ValueError, match="swap them"):
        ScoreStructuredOutput("x", min_score=10, max_score=1)


def test_categorical_verdicts(
    fake: FakeProvider,  # noqa: F811
    gpt: openai.OpenAI,
) -> None:
    output = CategoricalStructuredOutput(
        {"positive": "Upbeat", "neutral": "Flat", "negative": "Critical"},
        reasoning=True,
        reasoning_description="Why this category",
        pass_values=["positive", "neutral"],
    )
    schema = output.to_json_schema()
    assert schema["properties"]["categorical_eval"]["enum"] == ["positive", "neutral", "negative"]
    assert "- negative: Critical" in schema["properties"]["categorical_eval"]["description"]
    assert schema["properties"]["reasoning"]["description"] == "Why this category"
    judge = openai_judge(gpt, output)
    for category, assessment in (("neutral", "pass"), ("negative", "fail")):
        fake.chat_content = json.dumps({"reasoning": "tone", "categorical_eval": category})
        result = judge.evaluate(CONTEXT)
        assert (result.value, result.assessment, result.reasoning) == (category, assessment, "tone")
    fake.chat_content = json.dumps({"reasoning": "tone", "categorical_eval": "angry"})
    with pytest.raises(ValueError, match="'angry', which is not one of the categories"):
        judge.evaluate(CONTEXT)
    with pytest.raises(ValueError, match=r"pass_values \['happy'\] are not categories"):
        CategoricalStructuredOutput({"sad": "s"}, pass_values=["happy"])


def test_a_raw_json_schema_and_no_schema(
    fake: FakeProvider,  # noqa: F811
    gpt: openai.OpenAI,
) -> None:
    schema = {
        "type": "object",
        "properties": {"correct": {"type": "boolean"}, "reasoning": {"type": "string"}},
        "required": ["correct", "reasoning"],
        "additionalProperties": False,
    }
    fake.chat_content = '```json\n{"correct": true, "reasoning": "same city"}\n```'
    result = openai_judge(gpt, schema).evaluate(CONTEXT)
    assert result.value == {"correct": True, "reasoning": "same city"}
    assert result.reasoning == "same city" and result.assessment is None
    assert last_request(fake)["response_format"]["json_schema"]["schema"] == schema

    fake.chat_content = "Looks right to me."
    plain = openai_judge(gpt, None).evaluate(CONTEXT)
    assert plain.value == "Looks right to me." and "response_format" not in last_request(fake)
    assert plain.metadata is not None and set(plain.metadata) >= JUDGE_KEYS

    fake.chat_content = "not json"
    with pytest.raises(ValueError, match="answer is not JSON"):
        openai_judge(gpt, schema).evaluate(CONTEXT)
    fake.chat_content = json.dumps({"verdict": True})
    with pytest.raises(ValueError, match="has no 'boolean_eval' key"):
        openai_judge(gpt, BooleanStructuredOutput("ok?")).evaluate(CONTEXT)


# Templates ----------------------------------------------------------------------------


def test_templates_fill_in_the_row() -> None:
    template = (
        "{{input_data.question}} | {{ output_data }} | {{expected_output}} | "
        "{{metadata.topic}} | {{metadata.level}} | {{metadata.level.grade}}"
    )
    assert render(template, CONTEXT) == (
        'Capital of France? | Paris | Paris | geography | {\n  "grade": 3\n} | 3'
    )
    assert render("[{{expected_output}}]", EvaluatorContext(1, [True, None])) == "[]"
    assert render("{{input_data}} {{output_data}}", EvaluatorContext(1, [True, None])) == (
        "1 [\n  true,\n  null\n]"
    )


def test_a_missing_metadata_key_names_it(
    fake: FakeProvider,  # noqa: F811
    gpt: openai.OpenAI,
) -> None:
    with pytest.raises(ValueError, match=r"\{\{metadata\.region\}\}.*no key 'region'") as caught:
        render("Region: {{metadata.region}}", CONTEXT)
    assert "'topic'" in str(caught.value)  # the keys there are
    with pytest.raises(ValueError, match=r"metadata\.level has no key 'name'"):
        render("{{metadata.level.name}}", CONTEXT)
    with pytest.raises(ValueError, match="output_data is str, not an object with key 'x'"):
        render("{{output_data.x}}", CONTEXT)
    judge = LLMJudge("Region: {{metadata.region}}", provider="openai", model="m", client=gpt)
    with pytest.raises(ValueError, match="no key 'region'"):
        judge.evaluate(CONTEXT)
    assert fake.requests == []  # nothing was sent
    with pytest.raises(ValueError, match=r"Unknown placeholder \{\{input\}\}"):
        LLMJudge("{{input}}", provider="openai", model="m", client=gpt)


# Anthropic ----------------------------------------------------------------------------


def test_anthropic_answers_through_a_forced_tool(
    fake: FakeProvider,  # noqa: F811
    claude: anthropic.Anthropic,
) -> None:
    fake.anthropic_content = [
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "record_evaluation",
            "input": {"reasoning": "Right city.", "score_eval": 9},
        }
    ]
    output = ScoreStructuredOutput(
        "Correctness", min_score=0, max_score=10, reasoning=True, min_threshold=8
    )
    judge = LLMJudge(
        user_prompt="Grade {{output_data}} for {{metadata.topic}}.",
        system_prompt="You are strict.",
        structured_output=output,
        provider="anthropic",
        model="claude-haiku-4-5",
        model_params={"max_tokens": 256},
        client=claude,
        name="strict_grader",
    )
    result = judge.evaluate(CONTEXT)
    assert (result.value, result.reasoning, result.assessment) == (9, "Right city.", "pass")
    request = last_request(fake)
    assert request["system"] == "You are strict."
    assert request["messages"] == [{"role": "user", "content": "Grade Paris for geography."}]
    assert request["max_tokens"] == 256  # model_params override the default
    assert request["tools"][0]["input_schema"] == output.to_json_schema()
    assert request["tool_choice"] == {"type": "tool", "name": "record_evaluation"}
    metadata = result.metadata or {}
    assert metadata["judge_model"] == CLAUDE_MODEL
    assert metadata["judge_input_tokens"] == CLAUDE_INPUT_TOKENS
    assert metadata["judge_output_tokens"] == 4
    cost = estimate_cost(CLAUDE_MODEL, "anthropic", CLAUDE_INPUT_TOKENS, 4)
    assert cost is not None and metadata["judge_estimated_cost"] == cost


def test_clients_are_made_lazily_from_client_options(
    fake: FakeProvider,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="set OPENAI_API_KEY or pass client_options"):
        LLMJudge("{{output_data}}", provider="openai", model="gpt-4o-mini")
    with pytest.raises(ValueError, match="set ANTHROPIC_API_KEY"):
        LLMJudge("{{output_data}}", provider="anthropic", model="claude-haiku-4-5")

    fake.anthropic_content = [{"type": "text", "text": '{"boolean_eval": true}'}]
    monkeypatch.setenv("ANTHROPIC_API_KEY", "from-env")
    judges = [
        LLMJudge(
            "{{output_data}}",
            structured_output=BooleanStructuredOutput("ok?", pass_when=False),
            provider=provider,
            model=model,
            client_options={"base_url": base_url, "max_retries": 0, **key},
        )
        for provider, model, base_url, key in (
            ("openai", "gpt-4o-mini", f"{fake.url}/v1", {"api_key": "test"}),
            ("anthropic", "claude-haiku-4-5", fake.url, {}),
        )
    ]
    fake.chat_content = json.dumps({"boolean_eval": True})
    for judge in judges:
        assert judge._sdk_client is None  # made on first use
        result = judge.evaluate(CONTEXT)
        assert (result.value, result.assessment) == (True, "fail")
        judge._sdk_client.close()
    assert [path for path, _ in fake.requests] == ["/v1/chat/completions", "/v1/messages"]


def test_providers_and_clients_are_checked_at_construction(gpt: openai.OpenAI) -> None:
    with pytest.raises(
        ValueError, match=r"'bedrock' .* not supported: use 'openai' or 'anthropic'"
    ):
        LLMJudge("{{output_data}}", provider="bedrock", model="m")
    with pytest.raises(ValueError, match="'mistral' is not supported: use 'openai' or"):
        LLMJudge("{{output_data}}", provider="mistral", model="m")
    with pytest.raises(ValueError, match=r"needs provider= .* or client="):
        LLMJudge("{{output_data}}", model="m")
    with pytest.raises(ValueError, match="needs model="):
        LLMJudge("{{output_data}}", provider="openai", client=gpt)
    with pytest.raises(TypeError, match="structured_output must be"):
        LLMJudge("{{output_data}}", structured_output="yes/no", provider="openai", model="m")  # type: ignore[arg-type]
    async_client = openai.AsyncOpenAI(api_key="t")
    with pytest.raises(TypeError, match="not AsyncOpenAI"):
        LLMJudge("{{output_data}}", model="m", client=async_client)
    asyncio.run(async_client.close())
    judge = LLMJudge("{{output_data}}", model="m", client=gpt)  # provider from the client
    assert judge.provider == "openai" and judge.name == "LLMJudge"


def test_a_custom_client_as_in_ddtrace(
    fake: FakeProvider,  # noqa: F811
    gpt: openai.OpenAI,
) -> None:
    seen: list[Any] = []

    def offline(provider: Any, messages: Any, json_schema: Any, model: Any, params: Any) -> str:
        seen.append((provider, messages, json_schema, model, params))
        return json.dumps({"boolean_eval": True})

    output = BooleanStructuredOutput("ok?", pass_when=True)
    judge = LLMJudge("{{output_data}}", structured_output=output, model="m", client=offline)
    result = judge.evaluate(CONTEXT)
    assert (result.value, result.assessment) == (True, "pass")
    assert seen == [
        (None, [{"role": "user", "content": "Paris"}], output.to_json_schema(), "m", None)
    ]
    metadata = result.metadata or {}
    assert metadata["judge_model"] == "m" and metadata["judge_input_tokens"] is None
    assert metadata["judge_estimated_cost"] is None

    # A custom client calling a patched SDK: its span is the judge's, tokens and all.
    def through_openai(
        provider: Any, messages: Any, json_schema: Any, model: Any, params: Any
    ) -> str:
        reply = gpt.chat.completions.create(model=model, messages=messages)
        return reply.choices[0].message.content or ""

    fake.chat_content = json.dumps({"boolean_eval": False})
    openai_integration.patch()
    judge = LLMJudge(
        "{{output_data}}", structured_output=output, model="gpt-4o", client=through_openai
    )
    metadata = judge.evaluate(CONTEXT).metadata or {}
    assert metadata["judge_model"] == CHAT_MODEL and metadata["judge_input_tokens"] == 12


# In an experiment ---------------------------------------------------------------------


def test_the_judge_as_an_experiment_evaluator(
    llmobs: type[LLMObs],
    fake: FakeProvider,  # noqa: F811
    gpt: openai.OpenAI,
) -> None:
    openai_integration.patch()
    anthropic_integration.patch()
    fake.chat_content = json.dumps({"reasoning": "Matches.", "boolean_eval": True})
    dataset = llmobs.create_dataset(
        dataset_name="capitals",
        records=[
            {"input_data": "France", "expected_output": "Paris", "metadata": {"topic": "eu"}},
            {"input_data": "Peru", "expected_output": "Lima", "metadata": {"topic": "sa"}},
        ],
    )

    def task(input_data: Any, config: Any) -> Any:
        with LLMObs.llm(model_name="gpt-4o-mini", model_provider="openai"):
            LLMObs.annotate(metrics={"input_tokens": 100, "output_tokens": 10})
        return "Paris"

    judge = LLMJudge(
        user_prompt="{{metadata.topic}}: is {{output_data}} the capital of {{input_data}} "
        "(expected {{expected_output}})?",
        structured_output=BooleanStructuredOutput("correct", reasoning=True, pass_when=True),
        provider="openai",
        model="gpt-4o-mini",
        client=gpt,
        name="capital_judge",
    )
    experiment = llmobs.experiment("judged", task, dataset, [judge], runs=2)
    experiment.run(jobs=2)
    rows = stored(experiment.id)
    assert len(rows) == 4
    prompts = sorted(body["messages"][0]["content"] for _, body in fake.requests)
    assert prompts == 2 * ["eu: is Paris the capital of France (expected Paris)?"] + 2 * [
        "sa: is Paris the capital of Peru (expected Lima)?"
    ]
    trace_ids = set()
    for row in rows:
        (evaluation,) = row.evaluations
        assert evaluation.label == "capital_judge" and evaluation.error is None
        assert (evaluation.value, evaluation.assessment) == (True, "pass")
        assert evaluation.reasoning == "Matches." and evaluation.metric_type == "boolean"
        metadata = evaluation.metadata or {}
        assert set(metadata) >= JUDGE_KEYS
        assert metadata["judge_input_tokens"] == 12 and metadata["judge_output_tokens"] == 3
        assert metadata["judge_estimated_cost"] == estimate_cost(CHAT_MODEL, "openai", 12, 3)
        trace_ids.add(metadata["judge_trace_id"])
        # The judge's call is not the task's: the row's roll-up holds the task's alone.
        assert row.rollup is not None and row.rollup.input_tokens == 100
        assert metadata["judge_trace_id"] != row.trace_id
    assert len(trace_ids) == 4
