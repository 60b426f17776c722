"""The Redis rate limiter: GCRA buckets in one atomic script, shared by all clients, failing open or shut."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from api.lib.errors import UpstreamUnavailable
from api.lib.ratelimit import Check, Decision, Limit, RateLimiter
from tests.utils.servers import free_port


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.flushdb()
    await client.aclose()


def _limit(limit: int = 3, period: float = 60.0, name: str = "app") -> Limit:
    return Limit(name, f"rl:{{{uuid.uuid4()}}}:{name}", limit, period)


def _counter(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_allows_up_to_the_limit_then_refuses_with_retry_after(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client)
    limit = _limit(3, 60)
    decisions = [await limiter.acquire([limit]) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[3]
    assert refused.refused_by == "app"
    assert 19 <= refused.retry_after <= 20.5, "one request frees up every period/limit = 20 s"
    assert 55 <= refused.reset_after <= 60.5


async def test_a_refusal_by_one_limit_consumes_nothing_from_the_others(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client)
    app, user = _limit(10, name="app"), _limit(1, name="user")
    assert (await limiter.acquire([app, user])).allowed
    refused = await limiter.acquire([app, user])
    assert not refused.allowed and refused.refused_by == "user"
    assert (await limiter.peek([app])).remaining == 8, "the refused call did not take from the app bucket"


async def test_the_tightest_limit_is_reported(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client)
    decision = await limiter.acquire([_limit(100, name="app"), _limit(5, name="user")])
    assert (decision.limit, decision.remaining) == (5, 4)


async def test_peek_consumes_nothing(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client)
    limit = _limit(2)
    for _ in range(5):
        assert (await limiter.peek([limit])).allowed
    await limiter.acquire([limit])
    await limiter.acquire([limit])
    assert not (await limiter.peek([limit])).allowed


async def test_a_block_key_refuses_before_any_limit_is_touched(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client)
    limit = _limit(1)
    await redis_client.set("oauth:{x}:blocked", "1")
    decision = await limiter.acquire([limit], blocks=["oauth:{x}:jti:1", "oauth:{x}:blocked"])
    assert not decision.allowed
    assert decision.blocked_by == "oauth:{x}:blocked"
    assert (await limiter.acquire([limit], blocks=["oauth:{x}:jti:1"])).allowed


async def test_two_limiters_on_one_redis_share_the_bucket(redis_url: str, redis_client: Redis) -> None:
    other_client = Redis.from_url(redis_url)
    try:
        one, two = RateLimiter(redis_client), RateLimiter(other_client)
        limit = _limit(4)
        allowed = [(await limiter.acquire([limit])).allowed for limiter in (one, two, one, two, one, two)]
    finally:
        await other_client.aclose()
    assert allowed == [True, True, True, True, False, False]


async def test_a_bucket_refills_over_time(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client)
    limit = _limit(2, period=0.2)
    assert (await limiter.acquire([limit])).allowed and (await limiter.acquire([limit])).allowed
    assert not (await limiter.acquire([limit])).allowed
    await asyncio.sleep(0.12)
    assert (await limiter.acquire([limit])).allowed


async def test_fails_open_when_redis_is_unreachable_and_counts_it() -> None:
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    before = _counter("setu_rate_limiter_errors_total")
    try:
        decision = await RateLimiter(dead).acquire([_limit(1)])
    finally:
        await dead.aclose()
    assert decision.allowed and decision.degraded
    assert decision.headers() == {}
    assert _counter("setu_rate_limiter_errors_total") == before + 1


async def test_fails_closed_when_configured() -> None:
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    try:
        with pytest.raises(UpstreamUnavailable) as raised:
            await RateLimiter(dead, fail_closed=True).acquire([_limit(1)])
    finally:
        await dead.aclose()
    assert raised.value.status_code == 503
    assert raised.value.headers["Retry-After"]


async def test_refusals_are_counted_by_limit(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client)
    limit = _limit(1, name="user")
    before = _counter("setu_rate_limit_rejections_total", {"limit": "user"})
    await limiter.acquire([limit])
    await limiter.acquire([limit])
    assert _counter("setu_rate_limit_rejections_total", {"limit": "user"}) == before + 1


def test_headers_follow_the_ratelimit_fields_and_add_retry_after_on_refusal() -> None:
    allowed = Decision(allowed=True, limit=60, remaining=59, reset_after=0.4)
    assert allowed.headers() == {"RateLimit-Limit": "60", "RateLimit-Remaining": "59", "RateLimit-Reset": "1"}
    refused = Decision(
        allowed=False, limit=60, remaining=0, reset_after=59.2, retry_after=0.3, refused_by="app"
    )
    assert refused.headers()["Retry-After"] == "1"
    assert refused.headers()["RateLimit-Remaining"] == "0"


async def test_after_a_failure_redis_is_left_alone_for_a_second() -> None:
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    limiter = RateLimiter(dead)
    try:
        await limiter.acquire([_limit(1)])
        started = time.perf_counter()
        decisions = [await limiter.acquire([_limit(1)]) for _ in range(100)]
        elapsed = time.perf_counter() - started
    finally:
        await dead.aclose()
    assert all(decision.allowed and decision.degraded for decision in decisions)
    assert elapsed < 0.05


async def test_a_prepared_check_run_again_takes_from_the_same_buckets(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client)
    limit = _limit(3, 60)
    made: list[int] = []

    def prepare() -> Check:
        made.append(1)
        return limiter.check([limit])

    decisions = [await limiter.run(limiter.remembered("token-1", prepare)) for _ in range(4)]
    assert made == [1], "prepared once, then remembered"
    assert [d.allowed for d in decisions] == [True, True, True, False]
    allowed = decisions[0]
    assert allowed.raw_headers() == [
        (name.lower().encode(), value.encode()) for name, value in allowed.headers().items()
    ]
    assert Decision(allowed=True, degraded=True).raw_headers() == []


async def test_a_frozen_redis_fails_open_within_the_timeout(redis_client: Redis) -> None:
    limiter = RateLimiter(redis_client, timeout=0.2)
    assert (await limiter.acquire([_limit()])).allowed
    await redis_client.execute_command("CLIENT", "PAUSE", 700, "ALL")
    started = time.monotonic()
    decision = await limiter.acquire([_limit()])
    assert decision.allowed and decision.degraded
    assert time.monotonic() - started < 0.5
    limiter.close()
