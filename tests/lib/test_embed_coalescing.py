"""The serving client's embedding coalescer and the query-embedding cache, against a fake ML tier."""

from __future__ import annotations

import asyncio

import pytest

from api.lib.embeddings import embed_query
from api.lib.errors import InvalidInput
from api.lib.serving import EmbedCoalescer


class FakeTier:
    """Answers after `delay` seconds; records every request; rejects texts containing "bad"."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.requests: list[list[str]] = []

    async def send(self, texts: list[str]) -> list[list[float]]:
        self.requests.append(list(texts))
        await asyncio.sleep(self.delay)
        if any("bad" in text for text in texts):
            raise InvalidInput("input[0] is too long")
        return [[float(len(text)), float(sum(map(ord, text)))] for text in texts]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self.send(texts)


def expected(text: str) -> list[float]:
    return [float(len(text)), float(sum(map(ord, text)))]


async def test_a_lone_call_goes_out_at_once_and_concurrent_ones_share_requests() -> None:
    tier = FakeTier()
    coalescer = EmbedCoalescer(tier.send, max_texts=64, max_in_flight=1)
    assert await coalescer.embed(["alone"]) == [expected("alone")]
    texts = [f"query {i}" for i in range(40)]
    results = await asyncio.gather(*(coalescer.embed([text]) for text in texts))
    assert results == [[expected(text)] for text in texts]
    # The first caller leaves alone; the 39 that came while it was out share the next request.
    assert [len(request) for request in tier.requests] == [1, 1, 39]


async def test_requests_stay_under_max_texts_and_identical_texts_are_sent_once() -> None:
    tier = FakeTier()
    coalescer = EmbedCoalescer(tier.send, max_texts=8, max_in_flight=1)
    texts = ["same"] * 5 + [f"other {i}" for i in range(20)]
    results = await asyncio.gather(*(coalescer.embed([text]) for text in texts))
    assert results == [[expected(text)] for text in texts]
    assert all(len(request) <= 8 for request in tier.requests)
    assert sum(request.count("same") for request in tier.requests) <= 2


async def test_one_callers_bad_input_does_not_fail_the_others() -> None:
    tier = FakeTier()
    coalescer = EmbedCoalescer(tier.send, max_texts=64, max_in_flight=1)
    blocker = asyncio.create_task(coalescer.embed(["first"]))
    await asyncio.sleep(0)
    good = [asyncio.create_task(coalescer.embed([f"good {i}"])) for i in range(3)]
    bad = asyncio.create_task(coalescer.embed(["bad text"]))
    await blocker
    assert [await task for task in good] == [[expected(f"good {i}")] for i in range(3)]
    with pytest.raises(InvalidInput):
        await bad


async def test_a_cancelled_caller_leaves_the_rest_served() -> None:
    tier = FakeTier(delay=0.05)
    coalescer = EmbedCoalescer(tier.send, max_texts=64, max_in_flight=1)
    first = asyncio.create_task(coalescer.embed(["first"]))
    await asyncio.sleep(0)
    leaving = asyncio.create_task(coalescer.embed(["leaving"]))
    staying = asyncio.create_task(coalescer.embed(["staying"]))
    await asyncio.sleep(0.01)
    leaving.cancel()
    assert await first == [expected("first")]
    assert await staying == [expected("staying")]
    assert coalescer.in_flight == 0


class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ex: int | None = None) -> None:
        self.data[key] = value


class VectorTier(FakeTier):
    async def send(self, texts: list[str]) -> list[list[float]]:
        self.requests.append(list(texts))
        await asyncio.sleep(self.delay)
        return [[float(len(text))] + [0.0] * 383 for text in texts]


async def test_identical_queries_at_once_make_one_round_trip_and_later_ones_none() -> None:
    tier, redis = VectorTier(), FakeRedis()
    vectors = await asyncio.gather(*(embed_query("  photosynthesis ", tier, redis) for _ in range(10)))  # type: ignore[arg-type]
    assert tier.requests == [["photosynthesis"]]
    assert all(vector == vectors[0] for vector in vectors) and vectors[0][0] == 14.0
    assert await embed_query("photosynthesis", tier, redis) == vectors[0]  # type: ignore[arg-type]
    assert len(tier.requests) == 1
    other = VectorTier()  # another embedder: its own process cache, the shared Redis entry
    assert await embed_query("photosynthesis", other, redis) == vectors[0]  # type: ignore[arg-type]
    assert other.requests == []
