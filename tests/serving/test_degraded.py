"""A second application on the session's Ray: a generator whose model cannot load and an embedder with tiny
queues, to show that a broken model and overload both end in clear errors, never a crash or a hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from ray import serve

from serving.config import AppConfig
from serving.deployments.embedder import Embedder
from serving.deployments.generator import Generator
from serving.deployments.ingress import Ingress
from serving.deployments.translator import Translator

pytestmark = pytest.mark.ray

MISSING_MODEL = "/nonexistent/generation-model"
SMALL = {"num_cpus": 0.1}


@pytest.fixture(scope="module")
def degraded_url(serving_url: str) -> Iterator[str]:
    config = AppConfig.model_validate(
        {"generator": {"engine": "transformers", "model": MISSING_MODEL}, "embedder": {"device": "cpu"}}
    )
    embedder = Embedder.options(
        max_ongoing_requests=1,
        max_queued_requests=1,
        user_config={"max_batch_size": 1, "batch_wait_timeout_s": 0},
        ray_actor_options=SMALL,
    ).bind(config.embedder)
    generator = Generator.options(ray_actor_options=SMALL).bind(config.generator)
    translator = Translator.options(ray_actor_options=SMALL).bind(
        config.translator, generator, config.limits.max_completion_tokens
    )
    app = Ingress.options(ray_actor_options=SMALL, max_ongoing_requests=256).bind(
        config, embedder, generator, translator
    )
    serve.run(app, name="degraded", route_prefix="/degraded")
    try:
        yield f"{serving_url}/degraded"
    finally:
        serve.delete("degraded")


@pytest.fixture(scope="module")
async def degraded(degraded_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=degraded_url, timeout=60) as client:
        yield client


async def test_an_unloadable_generator_is_reported_and_answers_503_with_the_reason(
    degraded: httpx.AsyncClient,
) -> None:
    cards = {card["kind"]: card for card in (await degraded.get("/v1/models")).json()["data"]}
    generator = cards["generation"]
    assert generator["status"] == "unavailable"
    assert MISSING_MODEL in generator["reason"]
    health = (await degraded.get("/health")).json()
    assert health["status"] == "degraded"
    assert health["models"]["generation"]["reason"] == generator["reason"]

    chat = {"messages": [{"role": "user", "content": "hello"}]}
    for body in (chat, {**chat, "stream": True}):
        response = await degraded.post("/v1/chat/completions", json=body)
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        error = response.json()["error"]
        assert error["code"] == "model_unavailable" and MISSING_MODEL in error["message"]
    translated = await degraded.post(
        "/v1/translations", json={"texts": ["water"], "source": "en", "target": "hi"}
    )
    assert translated.status_code == 503
    assert translated.json()["error"]["code"] == "model_unavailable"

    # Everything that needs no generator keeps working.
    embedded = await degraded.post("/v1/embeddings", json={"input": "still works"})
    assert embedded.status_code == 200


async def test_overload_beyond_max_queued_requests_is_a_fast_503_not_a_hang(
    degraded: httpx.AsyncClient,
) -> None:
    texts = [f"a sentence about topic {i} that takes the model a little while" for i in range(32)]
    started = time.perf_counter()
    responses = await asyncio.gather(
        *(degraded.post("/v1/embeddings", json={"input": texts}) for _ in range(24))
    )
    elapsed = time.perf_counter() - started
    statuses = [response.status_code for response in responses]
    assert set(statuses) <= {200, 503}
    assert statuses.count(200) >= 1
    rejected = [response for response in responses if response.status_code == 503]
    assert rejected, "24 concurrent callers against 1 ongoing + 1 queued must overflow"
    assert all(response.json()["error"]["code"] == "overloaded" for response in rejected)
    assert all(response.headers["Retry-After"] for response in rejected)
    assert elapsed < 30
