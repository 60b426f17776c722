"""The engine-independent pieces and the transformers engine's batching, as plain code (no Ray)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serving.config import GENERATOR_ENGINE_ENV, GENERATOR_MODEL_ENV, AppConfig
from serving.engines.transformers_engine import TransformersEngine
from serving.generation import (
    GenerationRequest,
    check_json_schema,
    cut_at_stop,
    extract_json,
    schema_violation,
    with_schema_instruction,
)
from serving.languages import LANGUAGES
from tests.utils.serving import ANSWER_SCHEMA, arithmetic_question, cached_tiny_llama


def test_cut_at_stop_uses_the_earliest_stop_sequence() -> None:
    assert cut_at_stop("2 plus 3 is 5. Next", [".", " is"]) == ("2 plus 3", True)
    assert cut_at_stop("no stop here", ["###"]) == ("no stop here", False)
    assert cut_at_stop("text", []) == ("text", False)


def test_extract_json_finds_the_document_inside_prose_and_fences() -> None:
    assert extract_json('Sure! ```json\n{"answer": "5"}\n``` done') == '{"answer": "5"}'
    assert extract_json('[1, 2] and {"a": 1}') == "[1, 2]"
    assert extract_json("{broken") == "{broken"


def test_schema_violation_names_the_problem() -> None:
    assert schema_violation('{"answer": "5"}', ANSWER_SCHEMA) is None
    assert "not JSON" in (schema_violation("five", ANSWER_SCHEMA) or "")
    assert "'answer' is a required property" in (schema_violation("{}", ANSWER_SCHEMA) or "")
    assert (schema_violation('{"answer": 5}', ANSWER_SCHEMA) or "").startswith("answer:")
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        check_json_schema({"type": "no-such-type"})


def test_schema_instruction_is_a_system_message_with_the_previous_problem() -> None:
    request = GenerationRequest(messages=[{"role": "user", "content": "hi"}], json_schema=ANSWER_SCHEMA)
    asked = with_schema_instruction(request, "answer: 5 is not of type 'string'")
    assert asked.messages[0]["role"] == "system"
    assert '"required":["answer"]' in asked.messages[0]["content"]
    assert "previous answer was rejected: answer: 5" in asked.messages[0]["content"]
    assert asked.messages[1:] == request.messages


def test_environment_overrides_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(GENERATOR_MODEL_ENV, "/models/qwen")
    monkeypatch.setenv(GENERATOR_ENGINE_ENV, "vllm")
    config = AppConfig.model_validate(
        {"generator": {"model": "Qwen/Qwen2.5-0.5B-Instruct"}}
    ).with_environment()
    assert (config.generator.model, config.generator.engine) == ("/models/qwen", "vllm")
    monkeypatch.setenv(GENERATOR_ENGINE_ENV, "tensorrt")
    with pytest.raises(ValueError, match="engine"):
        AppConfig().with_environment()


def test_languages_are_english_and_the_22_scheduled_ones() -> None:
    assert len(LANGUAGES) == 23 and "en" in LANGUAGES
    assert all(language.flores.count("_") == 1 for language in LANGUAGES.values())


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> TransformersEngine:
    model: Path = cached_tiny_llama(request.config.cache.mkdir("setu-serving"))
    batches: list[int] = []
    engine = TransformersEngine(
        str(model), max_batch_size=8, batch_wait_s=0.05, on_batch=lambda n, _: batches.append(n)
    )
    engine.batches = batches  # type: ignore[attr-defined]
    return engine


async def test_concurrent_requests_are_decoded_in_shared_batches_each_with_its_own_limits(
    engine: TransformersEngine,
) -> None:
    engine.batches.clear()  # type: ignore[attr-defined]
    requests = [
        GenerationRequest(
            messages=[{"role": "user", "content": arithmetic_question(i, 1)}], max_tokens=2 + i, temperature=0
        )
        for i in range(6)
    ]
    alone = [await engine.complete(request) for request in requests]
    together = await asyncio.gather(*(engine.complete(request) for request in requests))
    assert [c.text for c in together] == [c.text for c in alone]  # left padding changes nothing
    assert [c.completion_tokens for c in together] == [c.completion_tokens for c in alone]
    assert all(c.completion_tokens <= r.max_tokens for c, r in zip(together, requests, strict=True))
    assert max(engine.batches) > 1  # type: ignore[attr-defined]


async def test_requests_with_different_sampling_are_not_mixed(engine: TransformersEngine) -> None:
    engine.batches.clear()  # type: ignore[attr-defined]
    greedy = GenerationRequest(
        messages=[{"role": "user", "content": arithmetic_question(1, 1)}], temperature=0
    )
    sampled = GenerationRequest(
        messages=[{"role": "user", "content": arithmetic_question(1, 1)}], temperature=0.9
    )
    await asyncio.gather(engine.complete(greedy), engine.complete(sampled), engine.complete(greedy))
    assert sorted(engine.batches) == [1, 2]  # type: ignore[attr-defined]
