"""The rate limiter's own RESP connection: replies matched to callers in order under concurrency, errors
raised, NOSCRIPT handled, and a dropped connection failing the calls in flight, then reconnecting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from api.lib.scriptcall import _INCOMPLETE, PipelinedScript, _Pipeline, pack, parse

ECHO = "return {tonumber(ARGV[1]), KEYS[1]}"


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def test_replies_are_parsed_whole_or_not_at_all() -> None:
    reply = b"*3\r\n:1\r\n$3\r\nabc\r\n*2\r\n+OK\r\n$-1\r\n"
    assert parse(reply, 0) == ([1, b"abc", ["OK", None]], len(reply))
    for cut in range(1, len(reply)):
        assert parse(reply[:cut], 0) == (_INCOMPLETE, 0)
    error, _ = parse(b"-NOSCRIPT No matching script\r\n", 0)
    assert isinstance(error, ResponseError) and str(error).startswith("NOSCRIPT")
    assert pack(b"GET", "k", 5) == b"*3\r\n$3\r\nGET\r\n$1\r\nk\r\n$1\r\n5\r\n"


async def test_concurrent_calls_each_get_their_own_reply(redis_client: Redis) -> None:
    script = PipelinedScript.for_client(redis_client, ECHO)
    assert script is not None
    try:
        await redis_client.script_flush()  # the first call meets NOSCRIPT and loads it
        replies = await asyncio.gather(*(script([f"k{n}"], [n]) for n in range(200)))
        assert replies == [[n, f"k{n}".encode()] for n in range(200)]
        bad = PipelinedScript.for_client(redis_client, "return redis.call('NOPE')")
        assert bad is not None
        with pytest.raises(ResponseError):
            await bad([], [])
        bad.close()
    finally:
        script.close()


def test_a_dropped_connection_fails_the_calls_in_flight() -> None:
    async def scenario() -> None:
        pipeline = _Pipeline()
        written: list[bytes] = []

        class Transport:
            def write(self, data: bytes) -> None:
                written.append(data)

        pipeline.connection_made(Transport())  # type: ignore[arg-type]
        first, second = pipeline.request(pack(b"PING")), pipeline.request(pack(b"PING"))
        await asyncio.sleep(0)
        assert written == [pack(b"PING") * 2], "both calls went out in one write"
        pipeline.data_received(b"+PONG\r\n")
        assert await first == "PONG"
        pipeline.connection_lost(ConnectionResetError("reset"))
        with pytest.raises(RedisConnectionError):
            await second
        with pytest.raises(RedisConnectionError):
            pipeline.request(pack(b"PING"))

    asyncio.run(scenario())


async def test_after_its_connection_is_killed_the_next_call_reconnects(redis_client: Redis) -> None:
    script = PipelinedScript.for_client(redis_client, "return 1")
    assert script is not None
    try:
        assert await script([], []) == 1
        killed = await redis_client.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        await asyncio.sleep(0.05)
        assert await script([], []) == 1
    finally:
        script.close()


def test_calls_not_answered_in_time_fail_with_timeout_and_late_replies_are_dropped() -> None:
    async def scenario() -> None:
        pipeline = _Pipeline()

        class Transport:
            def write(self, data: bytes) -> None:
                pass

        pipeline.connection_made(Transport())  # type: ignore[arg-type]
        slow = pipeline.request(pack(b"PING"), timeout=30)  # a set-up command with a long deadline
        late = pipeline.request(pack(b"PING"), timeout=0.05)
        later = pipeline.request(pack(b"PING"), timeout=0.05)
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await late
        assert asyncio.get_running_loop().time() - started < 1, "the shorter deadline re-armed the timer"
        with pytest.raises(TimeoutError):
            await later
        assert not slow.done()
        pipeline.data_received(b"+ONE\r\n+TWO\r\n+THREE\r\n")  # replies arrive late, in order
        assert await slow == "ONE"
        fresh = pipeline.request(pack(b"PING"), timeout=0.05)
        pipeline.data_received(b"+FOUR\r\n")
        assert await fresh == "FOUR", "the late replies were matched to their own (expired) calls"

    asyncio.run(scenario())


async def test_a_frozen_server_times_the_call_out(redis_client: Redis) -> None:
    script = PipelinedScript.for_client(redis_client, "return 1", timeout=0.2)
    assert script is not None
    try:
        assert await script([], []) == 1
        await redis_client.execute_command("CLIENT", "PAUSE", 600, "ALL")
        with pytest.raises(TimeoutError):
            await script([], [])
        await asyncio.sleep(0.5)
        assert await script([], []) == 1
    finally:
        script.close()
