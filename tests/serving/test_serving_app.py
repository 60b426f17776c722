"""The ML tier through its HTTP API on a real local Ray: MiniLM embeddings, the tiny Llama, translation."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import struct

import httpx
import numpy as np
import pytest
from jsonschema import Draft202012Validator
from ray import serve

from serving.config import EmbedderConfig
from serving.deployments.embedder import encode, load_sentence_transformer
from serving.languages import LANGUAGES
from tests.utils.serving import ANSWER_SCHEMA, arithmetic_question

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
async def api(serving_url: str) -> httpx.AsyncClient:
    async with httpx.AsyncClient(base_url=serving_url, timeout=60) as client:
        yield client


def chat(content: str, **extra: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 24, **extra}


async def test_models_lists_each_kind_with_dimensions_and_languages(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/models")
    assert response.status_code == 200
    cards = {card["kind"]: card for card in response.json()["data"]}
    assert cards["embedding"]["dimensions"] == 384
    assert cards["embedding"]["status"] == "available"
    assert cards["generation"] == {**cards["generation"], "id": "tiny-llama", "engine": "transformers"}
    assert cards["generation"]["status"] == "available"
    codes = {language["code"] for language in cards["translation"]["languages"]}
    assert codes == set(LANGUAGES) and len(codes) == 23
    assert {"en", "hi", "bn", "ta", "te", "mr", "gu", "kn", "ml", "or", "pa", "as", "ur"} <= codes
    health = (await api.get("/health")).json()
    assert health["status"] == "ok"


async def test_embeddings_through_serve_equal_a_direct_model_call(api: httpx.AsyncClient) -> None:
    texts = ["Photosynthesis makes food in green leaves.", "भारत एक विशाल देश है।", "Fractions and decimals"]
    response = await api.post("/v1/embeddings", json={"input": texts, "model": "all-MiniLM-L6-v2"})
    assert response.status_code == 200
    body = response.json()
    served = np.array([item["embedding"] for item in body["data"]], dtype=np.float32)
    direct = encode(load_sentence_transformer(EmbedderConfig(device="cpu")), texts)
    assert served.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-4)
    cosines = (served * direct).sum(axis=1) / np.linalg.norm(direct, axis=1)
    assert cosines.min() > 0.999
    assert body["usage"]["prompt_tokens"] > len(texts)

    as_base64 = await api.post("/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"})
    raw = base64.b64decode(as_base64.json()["data"][0]["embedding"])
    assert np.allclose(struct.unpack("<384f", raw), served[0], atol=1e-6)


async def test_concurrent_embedding_requests_share_batches(api: httpx.AsyncClient) -> None:
    embedder = serve.get_deployment_handle("Embedder", app_name="setu")
    before = await embedder.batch_size_counts.remote()
    responses = await asyncio.gather(
        *(api.post("/v1/embeddings", json={"input": f"sentence number {i}"}) for i in range(48))
    )
    assert all(response.status_code == 200 for response in responses)
    after = await embedder.batch_size_counts.remote()
    new_batches = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert sum(size * count for size, count in new_batches.items()) == 48
    assert max(size for size, count in new_batches.items() if count > 0) > 1


async def test_generator_answers_with_the_tiny_llama(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/chat/completions", json=chat(arithmetic_question(2, 3)))
    assert response.status_code == 200
    body = response.json()
    text = body["choices"][0]["message"]["content"]
    assert re.fullmatch(r"\d plus \d is \d+\.", text), text  # the shape it was trained on
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["model"] == "tiny-llama"


async def test_max_tokens_and_stop_sequences_end_the_answer(api: httpx.AsyncClient) -> None:
    question = arithmetic_question(4, 1)
    full = (await api.post("/v1/chat/completions", json=chat(question))).json()["choices"][0]["message"][
        "content"
    ]
    short = (await api.post("/v1/chat/completions", json=chat(question, max_tokens=2))).json()
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 2
    assert full.startswith(short["choices"][0]["message"]["content"])
    stopped = (await api.post("/v1/chat/completions", json=chat(question, stop=[" is"]))).json()
    assert stopped["choices"][0]["message"]["content"] == full.split(" is")[0]
    assert stopped["choices"][0]["finish_reason"] == "stop"


async def test_streamed_chat_sends_the_same_text_as_server_sent_events(api: httpx.AsyncClient) -> None:
    plain = (await api.post("/v1/chat/completions", json=chat(arithmetic_question(6, 2)))).json()
    request = chat(arithmetic_question(6, 2), stream=True, stream_options={"include_usage": True})
    async with api.stream("POST", "/v1/chat/completions", json=request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [
            line.removeprefix("data: ") async for line in response.aiter_lines() if line.startswith("data: ")
        ]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert len([chunk for chunk in chunks if chunk["choices"]]) > 3  # really streamed, piece by piece
    assert chunks[-1]["usage"] == plain["usage"]


async def test_json_schema_output_is_valid_against_the_schema(api: httpx.AsyncClient) -> None:
    request = chat(
        arithmetic_question(3, 4),
        max_tokens=32,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}},
    )
    response = await api.post("/v1/chat/completions", json=request)
    assert response.status_code == 200
    document = json.loads(response.json()["choices"][0]["message"]["content"])
    assert not list(Draft202012Validator(ANSWER_SCHEMA).iter_errors(document))


async def test_json_schema_the_model_cannot_satisfy_is_an_error_not_garbage(api: httpx.AsyncClient) -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 3}
    request = chat(
        arithmetic_question(1, 1),
        response_format={"type": "json_schema", "json_schema": {"name": "numbers", "schema": schema}},
    )
    response = await api.post("/v1/chat/completions", json=request)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "invalid_model_output"
    assert "attempts" in response.json()["error"]["message"]


async def test_translation_through_the_generator(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/translations", json={"texts": ["water", "school"], "source": "en", "target": "hi"}
    )
    assert response.status_code == 200
    translations = response.json()["translations"]
    assert len(translations) == 2
    devanagari = [any("\u0900" <= char <= "\u097f" for char in text) for text in translations]
    assert all(devanagari), translations
    same = await api.post("/v1/translations", json={"texts": ["water"], "source": "hi", "target": "hi"})
    assert same.json()["translations"] == ["water"]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/embeddings", {"input": "x", "model": "text-embedding-3-large"}, 404, "model_not_found"),
        ("/v1/embeddings", {"input": ["x"] * 65}, 413, "too_large"),
        ("/v1/embeddings", {"input": "x" * 2001}, 413, "too_large"),
        ("/v1/embeddings", {"input": [""]}, 400, "invalid_request"),
        ("/v1/embeddings", {"input": 42}, 422, "invalid_request"),
        ("/v1/embeddings", {"input": "x", "dimensions": 1536}, 400, "invalid_request"),
        ("/v1/chat/completions", {"messages": []}, 422, "invalid_request"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o"},
            404,
            "model_not_found",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100_000},
            413,
            "too_large",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "temperature": 3},
            422,
            "invalid_request",
        ),
        (
            "/v1/chat/completions",
            {
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"type": "no-such-type"}},
                },
            },
            422,
            "invalid_request",
        ),
        ("/v1/translations", {"texts": ["hello"], "source": "en", "target": "xx"}, 400, "unknown_language"),
        (
            "/v1/translations",
            {"texts": ["hello"], "source": "english", "target": "hi"},
            400,
            "unknown_language",
        ),
        ("/v1/translations", {"texts": ["hello"] * 65, "source": "en", "target": "hi"}, 413, "too_large"),
        ("/v1/translations", {"texts": [], "source": "en", "target": "hi"}, 422, "invalid_request"),
    ],
)
async def test_bad_input_gets_a_clear_4xx(
    api: httpx.AsyncClient, path: str, body: dict[str, object], status: int, code: str
) -> None:
    response = await api.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and error["type"] == "invalid_request_error"
