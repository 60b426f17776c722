"""One Lua script called over one pipelined Redis connection: the rate limiter's hot path.

redis-py spends most of a call in its own machinery (connection pool, retry wrapper, command objects); the
limiter runs one script per request, so it talks RESP directly: every call writes its EVALSHA at once on a
shared connection and waits for its reply, which Redis sends in order. A lost connection fails the calls in
flight with `redis.exceptions.ConnectionError`, and the next call connects again (after Redis restarts,
too). A call not answered within `timeout` seconds fails with `TimeoutError`; one timer per connection
checks the oldest call (replies come in order), so a call costs no timer of its own. TLS (`rediss://`) is
left to redis-py (`for_client` returns None).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

Reply = int | bytes | str | list[Any] | None | ResponseError
_INCOMPLETE = object()


def pack(*parts: bytes | str | int) -> bytes:
    """A RESP command: an array of bulk strings."""
    chunks = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        chunks.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(chunks)


def parse(buffer: bytes | bytearray, start: int) -> tuple[Any, int]:
    """One RESP2 reply from `buffer[start:]`: (reply, next position), or (_INCOMPLETE, start)."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return _INCOMPLETE, start
    kind, line = buffer[start : start + 1], bytes(buffer[start + 1 : end])
    position = end + 2
    if kind == b":":
        return int(line), position
    if kind == b"+":
        return line.decode(), position
    if kind == b"-":
        return ResponseError(line.decode()), position
    if kind == b"$":
        length = int(line)
        if length < 0:
            return None, position
        if len(buffer) < position + length + 2:
            return _INCOMPLETE, start
        return bytes(buffer[position : position + length]), position + length + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, position
        items: list[Any] = []
        for _ in range(count):
            item, position = parse(buffer, position)
            if item is _INCOMPLETE:
                return _INCOMPLETE, start
            items.append(item)
        return items, position
    raise RedisConnectionError(f"unexpected reply from Redis: {bytes(buffer[start:end])!r}")


class _Pipeline(asyncio.Protocol):
    """Replies matched to requests in order; all waiting requests fail if the connection drops."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiting: deque[asyncio.Future[Reply]] = deque()
        self._deadlines: deque[float] = deque()
        """When each waiting call times out (loop time), in the same order as `_waiting`."""
        self._watchdog: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._unsent: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        position = 0
        while position < len(self._buffer):
            reply, after = parse(self._buffer, position)
            if reply is _INCOMPLETE:
                break
            position = after
            waiter = self._waiting.popleft()
            self._deadlines.popleft()
            if not waiter.done():  # its caller may have given up (timeout): the reply is dropped
                waiter.set_result(reply)
        del self._buffer[:position]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._deadlines.clear()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(RedisConnectionError(f"Connection to Redis lost: {exc or 'closed'}"))

    def request(self, command: bytes, timeout: float = 30.0) -> asyncio.Future[Reply]:
        """Send `command` (with the others of this event-loop turn); its reply, or TimeoutError."""
        if self.closed or self._transport is None:
            raise RedisConnectionError("Connection to Redis is closed")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Reply] = loop.create_future()
        self._waiting.append(waiter)
        deadline = loop.time() + timeout
        self._deadlines.append(deadline)
        if self._watchdog is None or deadline < self._watchdog.when():
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watchdog = loop.call_at(deadline, self._expire)
        if not self._unsent:  # the calls made in this turn of the event loop go out in one write
            loop.call_soon(self._send)
        self._unsent.append(command)
        return waiter

    def _expire(self) -> None:
        """Fail the calls past their deadline (their replies, if they come, are dropped); re-arm."""
        self._watchdog = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        next_deadline: float | None = None
        for waiter, deadline in zip(self._waiting, self._deadlines, strict=True):
            if waiter.done():
                continue
            if deadline <= now:
                waiter.set_exception(TimeoutError("Redis did not answer in time"))
            elif next_deadline is None or deadline < next_deadline:
                next_deadline = deadline
        if next_deadline is not None and not self.closed:
            self._watchdog = loop.call_at(next_deadline, self._expire)

    def _send(self) -> None:
        commands, self._unsent = self._unsent, []
        if self._transport is not None and not self.closed:
            self._transport.write(b"".join(commands))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class PipelinedScript:
    """Calls one Lua script (EVALSHA, loading it on NOSCRIPT) on a connection of its own."""

    def __init__(
        self,
        script: str,
        *,
        timeout: float = 30.0,
        host: str = "localhost",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._script = script.encode()
        self._sha = hashlib.sha1(self._script, usedforsecurity=False).hexdigest().encode()
        self.timeout = timeout
        self._address = (host, port, path)
        self._db = db
        self._credentials = (username, password)
        self._pipeline: _Pipeline | None = None
        self._connecting = asyncio.Lock()

    @classmethod
    def for_client(cls, redis: Redis, script: str, *, timeout: float = 30.0) -> PipelinedScript | None:
        """The same server, database and credentials as `redis`; None for TLS connections."""
        pool = redis.connection_pool
        options = pool.connection_kwargs
        unix = issubclass(pool.connection_class, UnixDomainSocketConnection)
        if "ssl" in pool.connection_class.__name__.lower():
            return None
        return cls(
            script,
            timeout=timeout,
            host=str(options.get("host", "localhost")),
            port=int(options.get("port", 6379)),
            path=str(options["path"]) if unix else None,
            db=int(options.get("db", 0) or 0),
            username=options.get("username"),
            password=options.get("password"),
        )

    def command(self, keys: Sequence[str], args: Sequence[int | str]) -> bytes:
        """The EVALSHA call for `keys` and `args`, packed once for callers that repeat it."""
        return pack(b"EVALSHA", self._sha, len(keys), *keys, *args)

    async def __call__(
        self, keys: Sequence[str], args: Sequence[int | str], *, command: bytes | None = None
    ) -> Any:
        """The script's reply (`command`: the same call packed by `command()`); raises the script's
        error, `TimeoutError` after `timeout` seconds, or ConnectionError."""
        pipeline = self._pipeline
        if pipeline is None or pipeline.closed:
            async with asyncio.timeout(self.timeout):
                pipeline = await self._connect()
        reply = await pipeline.request(command or self.command(keys, args), self.timeout)
        if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
            reply = await pipeline.request(pack(b"EVAL", self._script, len(keys), *keys, *args), self.timeout)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def _connect(self) -> _Pipeline:
        async with self._connecting:
            if self._pipeline is not None and not self._pipeline.closed:
                return self._pipeline
            loop = asyncio.get_running_loop()
            host, port, path = self._address
            if path is not None:
                _, pipeline = await loop.create_unix_connection(_Pipeline, path)
            else:
                _, pipeline = await loop.create_connection(_Pipeline, host, port)
            username, password = self._credentials
            if password:
                auth = (b"AUTH", username, password) if username else (b"AUTH", password)
                await self._expect_ok(pipeline, pack(*auth))
            if self._db:
                await self._expect_ok(pipeline, pack(b"SELECT", self._db))
            self._pipeline = pipeline
            return pipeline

    @staticmethod
    async def _expect_ok(pipeline: _Pipeline, command: bytes) -> None:
        reply = await pipeline.request(command)
        if isinstance(reply, ResponseError):
            pipeline.close()
            raise RedisConnectionError(f"Redis refused the connection set-up: {reply}")

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
            self._pipeline = None
