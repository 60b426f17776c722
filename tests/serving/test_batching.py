"""The Embedder's continuous batcher on its own (no Ray): batches form when the model is free."""

from __future__ import annotations

import asyncio

import pytest

from serving.batching import ContinuousBatcher


class SlowModel:
    def __init__(self, seconds: float = 0.02, fail_on: str | None = None) -> None:
        self.seconds = seconds
        self.fail_on = fail_on
        self.batches: list[list[str]] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, texts: list[str]) -> list[str]:
        self.batches.append(list(texts))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.running -= 1
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot encode {self.fail_on!r}")
        return [text.upper() for text in texts]


async def test_a_lone_request_runs_at_once_and_concurrent_ones_share_one_call_at_a_time() -> None:
    model = SlowModel()
    batcher = ContinuousBatcher(model, max_batch_size=64)
    assert await batcher.submit(["alone"]) == ["ALONE"]
    texts = [f"text {i}" for i in range(100)]
    results = await asyncio.gather(*(batcher.submit([text]) for text in texts))
    assert results == [[text.upper()] for text in texts]
    sizes = [len(batch) for batch in model.batches]
    assert sizes[0] == 1 and max(sizes) == 64 and sum(sizes) == 101
    assert len(sizes) <= 4  # 1, then the first arrival alone, then the rest in full batches
    assert model.most_running == 1


async def test_a_request_of_many_texts_keeps_its_order_across_batches() -> None:
    model = SlowModel(seconds=0.001)
    batcher = ContinuousBatcher(model, max_batch_size=8)
    texts = [f"t{i}" for i in range(20)]
    assert await batcher.submit(texts) == [text.upper() for text in texts]
    assert [len(batch) for batch in model.batches] == [8, 8, 4]


async def test_a_failed_batch_fails_its_callers_only_and_the_batcher_goes_on() -> None:
    model = SlowModel(fail_on="bad")
    batcher = ContinuousBatcher(model, max_batch_size=1)
    bad = asyncio.create_task(batcher.submit(["bad"]))
    good = asyncio.create_task(batcher.submit(["good"]))
    with pytest.raises(ValueError, match="bad"):
        await bad
    assert await good == ["GOOD"]


async def test_cancelled_callers_are_skipped_and_batch_metrics_are_reported() -> None:
    seen: list[tuple[int, int]] = []
    model = SlowModel(seconds=0.03)
    batcher = ContinuousBatcher(model, on_batch=lambda n, waits: seen.append((n, len(waits))))
    first = asyncio.create_task(batcher.submit(["first"]))
    await asyncio.sleep(0.005)
    leaving = asyncio.create_task(batcher.submit(["leaving"]))
    staying = asyncio.create_task(batcher.submit(["staying"]))
    await asyncio.sleep(0.005)
    leaving.cancel()
    assert await first == ["FIRST"] and await staying == ["STAYING"]
    assert model.batches == [["first"], ["staying"]]
    assert seen == [(1, 1), (1, 1)]
