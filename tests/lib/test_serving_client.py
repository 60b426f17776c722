"""The API's serving client against the real ML tier, a stopped one, and one that stops and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator

import pytest
from jsonschema import Draft202012Validator
from prometheus_client import REGISTRY

from api.lib.errors import InvalidInput, UpstreamBadOutput, UpstreamUnavailable
from api.lib.serving import BreakerState, CircuitBreaker, ServingClient, serving_checks
from api.system.readiness import run_checks
from tests.utils.servers import free_port
from tests.utils.serving import ANSWER_SCHEMA, arithmetic_question


class SwitchableProxy:
    """A real TCP relay in front of serving that can be switched off (connections refused) and on again."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for pipe in list(self._pipes):
            pipe.cancel()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        tasks = {
            asyncio.ensure_future(pipe(client_reader, upstream_writer)),
            asyncio.ensure_future(pipe(upstream_reader, client_writer)),
        }
        self._pipes |= tasks
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks)
        self._pipes -= tasks


def circuit_open() -> float | None:
    return REGISTRY.get_sample_value("setu_serving_circuit_open")


def calls(operation: str, outcome: str) -> float:
    return (
        REGISTRY.get_sample_value("setu_serving_requests_total", {"operation": operation, "outcome": outcome})
        or 0.0
    )


@pytest.fixture
async def serving(serving_url: str) -> AsyncIterator[ServingClient]:
    client = ServingClient(serving_url)
    yield client
    await client.aclose()


@pytest.mark.ray
async def test_embed_gives_normalised_384_dimensional_vectors_in_order(serving: ServingClient) -> None:
    texts = ["The water cycle", "Parts of a plant", "The water cycle"]
    vectors = await serving.embed(texts)
    assert [len(vector) for vector in vectors] == [384, 384, 384]
    assert all(math.isclose(math.fsum(x * x for x in vector), 1.0, abs_tol=1e-4) for vector in vectors)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-6)
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-3)
    assert await serving.embed([]) == []


@pytest.mark.ray
async def test_chat_translate_and_models_through_the_client(serving: ServingClient) -> None:
    result = await serving.chat(
        [{"role": "user", "content": arithmetic_question(1, 2)}], max_tokens=16, temperature=0
    )
    assert " plus " in result.text and result.model == "tiny-llama"
    assert result.prompt_tokens > 0 and 0 < result.completion_tokens <= 16
    structured = await serving.chat(
        [{"role": "user", "content": arithmetic_question(5, 2)}], temperature=0, json_schema=ANSWER_SCHEMA
    )
    assert not list(Draft202012Validator(ANSWER_SCHEMA).iter_errors(json.loads(structured.text)))
    with pytest.raises(UpstreamBadOutput, match="json_schema") as rejected:
        await serving.chat(
            [{"role": "user", "content": "hi"}],
            json_schema={"type": "array", "minItems": 3, "items": {"type": "integer"}},
        )
    assert rejected.value.status_code == 502
    assert serving.breaker.failures == 0  # a model's bad answer says nothing about serving's health
    assert len(await serving.translate(["water", "book"], source="en", target="hi")) == 2
    kinds = {card["kind"] for card in await serving.models()}
    assert kinds == {"embedding", "generation", "translation"}


@pytest.mark.ray
async def test_a_4xx_from_serving_is_invalid_input_with_its_reason(serving: ServingClient) -> None:
    before = calls("translate", "rejected")
    with pytest.raises(InvalidInput, match="not a supported language code"):
        await serving.translate(["water"], source="en", target="xx")
    assert calls("translate", "rejected") == before + 1
    assert serving.breaker.state is BreakerState.CLOSED and serving.breaker.failures == 0


async def test_a_stopped_serving_answers_503_with_retry_after_within_a_second() -> None:
    client = ServingClient(f"http://127.0.0.1:{free_port()}", retries=2)
    before = calls("embed", "unreachable")
    started = time.perf_counter()
    with pytest.raises(UpstreamUnavailable) as raised:
        await client.embed(["hello"])
    assert time.perf_counter() - started < 1.0
    assert raised.value.status_code == 503
    assert "unreachable" in raised.value.detail
    assert int(raised.value.headers["Retry-After"]) >= 1
    assert calls("embed", "unreachable") == before + 1
    await client.aclose()


async def test_without_serving_url_calls_fail_fast_and_readiness_says_why() -> None:
    client = ServingClient(None)
    with pytest.raises(UpstreamUnavailable, match="SERVING_URL is unset"):
        await client.chat([{"role": "user", "content": "hi"}])
    ready, report = await run_checks(serving_checks(client), timeout=1.0)
    assert ready  # serving is optional: the API stays ready without it
    assert report["serving"]["status"] == "failed" and "SERVING_URL" in report["serving"]["reason"]
    assert report["serving"]["required"] == "false"
    await client.aclose()


@pytest.mark.ray
async def test_breaker_opens_after_consecutive_failures_and_recovers_after_a_probe(serving_url: str) -> None:
    proxy = SwitchableProxy(int(serving_url.rsplit(":", 1)[1]))
    await proxy.start()
    client = ServingClient(
        proxy.url, retries=0, breaker=CircuitBreaker(failure_threshold=3, reset_seconds=0.5)
    )
    try:
        assert len(await client.embed(["up"])) == 1
        await proxy.stop()
        for _ in range(3):  # the first may hit a pooled connection the relay just closed
            with pytest.raises(UpstreamUnavailable, match=r"unreachable|connection failed"):
                await client.embed(["down"])
        assert client.breaker.state is BreakerState.OPEN
        assert circuit_open() == 1.0

        await proxy.start()  # serving is back, but the breaker holds calls until its pause is over
        seen = proxy.connections
        started = time.perf_counter()
        with pytest.raises(UpstreamUnavailable, match="circuit open") as raised:
            await client.embed(["paused"])
        assert time.perf_counter() - started < 0.05
        assert raised.value.headers["Retry-After"] == "1"
        assert proxy.connections == seen

        await asyncio.sleep(0.6)
        assert len(await client.embed(["probe"])) == 1  # the half-open probe succeeds
        assert client.breaker.state is BreakerState.CLOSED
        assert circuit_open() == 0.0
    finally:
        await client.aclose()
        await proxy.stop()


async def test_a_failed_half_open_probe_opens_the_breaker_again() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_seconds=0.05)
    client = ServingClient(f"http://127.0.0.1:{free_port()}", retries=0, breaker=breaker)
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable, match="unreachable"):
            await client.models()
    assert breaker.state is BreakerState.OPEN
    await asyncio.sleep(0.06)
    assert breaker.admit() and not breaker.admit()  # one probe at a time while half-open
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(UpstreamUnavailable, match="circuit open"):
        await client.models()
    await client.aclose()
