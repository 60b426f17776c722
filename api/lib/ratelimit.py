"""Rate limits held in Redis, atomic across workers and processes: one Lua script, one round trip.

Each limit is a GCRA bucket ("N per period", bursts up to N): Redis stores one timestamp per key, the
"theoretical arrival time". The script also checks a few "block" keys first (a revoked token, a suspended
app), so the authenticated hot path is a single round trip. All keys of one call should share a hash tag
(`{app-id}`) so the script also runs on a Redis Cluster.

When Redis is unreachable (or slower than `timeout`) the limiter fails open (the request goes through;
logged and counted in `setu_rate_limiter_errors_total`) or, with `SETU_RATE_LIMIT_FAIL_CLOSED=true`,
closed (503). After a failure it does not try Redis again for a second, so an outage adds no latency.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.lib.errors import UpstreamUnavailable
from api.lib.scriptcall import PipelinedScript

log = structlog.get_logger("api.ratelimit")

RATE_LIMIT_REJECTIONS = Counter(
    "setu_rate_limit_rejections_total", "Requests refused by a rate limit, by limit.", ["limit"]
)
RATE_LIMITER_ERRORS = Counter(
    "setu_rate_limiter_errors_total", "Rate-limit checks that could not reach Redis (failed open or closed)."
)

_MAX_REMEMBERED = 50_000
"""Prepared calls kept (`RateLimiter.remembered`); past this it starts afresh."""
_BACKOFF_SECONDS = 1.0
"""After a failure, Redis is not tried again for this long: a dead Redis costs requests nothing."""

# KEYS: the block keys, then one key per limit.
# ARGV: number of block keys, mode (1 consume, 0 peek), then limit and period (ms) per limit.
# Returns {code, index, remaining, reset_ms, retry_ms}: code 0 allowed, 1 blocked by block key `index`,
# 2 refused by limit `index`. `remaining`/`reset_ms` describe the tightest limit.
_SCRIPT = """
local nblocks = tonumber(ARGV[1])
for i = 1, nblocks do
  if redis.call('EXISTS', KEYS[i]) == 1 then return {1, i, 0, 0, 0} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local consume = ARGV[2] == '1'
local new_tats = {}
local tight, tight_remaining, tight_reset = 0, -1, 0
for j = 1, #KEYS - nblocks do
  local limit = tonumber(ARGV[1 + 2 * j])
  local period = tonumber(ARGV[2 + 2 * j])
  local interval = period / limit
  local tat = tonumber(redis.call('GET', KEYS[nblocks + j])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - period
  if allow_at > now then
    return {2, j, 0, math.ceil(tat - now), math.ceil(allow_at - now)}
  end
  new_tats[j] = new_tat
  local remaining = math.floor((period - (new_tat - now)) / interval)
  if tight_remaining < 0 or remaining < tight_remaining then
    tight, tight_remaining, tight_reset = j, remaining, math.ceil(new_tat - now)
  end
end
if consume then
  for j, new_tat in pairs(new_tats) do
    redis.call('SET', KEYS[nblocks + j], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
  end
end
return {0, tight, tight_remaining, tight_reset, 0}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    """`limit` requests per `period` seconds for `key`; `name` labels metrics and is `app`, `user`..."""

    name: str
    key: str
    limit: int
    period: float = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int = 0
    """The limit (requests per period) of the tightest bucket, for the `RateLimit-*` headers."""
    remaining: int = 0
    reset_after: float = 0.0
    """Seconds until the tightest bucket is full again."""
    retry_after: float = 0.0
    refused_by: str | None = None
    blocked_by: str | None = None
    """The block key that matched, when one did."""
    degraded: bool = False
    """Redis was unreachable and the limiter failed open."""

    def headers(self) -> dict[str, str]:
        """`RateLimit-*` headers (IETF httpapi draft), plus `Retry-After` on a refusal."""
        if self.limit <= 0:
            return {}
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(self.remaining, 0)),
            "RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed and self.refused_by is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as ASGI header pairs (lower-case names), for an allowed request's answer."""
        if self.limit <= 0:
            return []
        return [
            (b"ratelimit-limit", b"%d" % self.limit),
            (b"ratelimit-remaining", b"%d" % max(self.remaining, 0)),
            (b"ratelimit-reset", b"%d" % math.ceil(self.reset_after)),
        ]


@dataclass(frozen=True, slots=True)
class Check:
    """One limiter call, prepared once for callers that repeat it (the same token's requests)."""

    limits: tuple[Limit, ...]
    blocks: tuple[str, ...]
    keys: tuple[str, ...]
    args: tuple[int, ...]
    command: bytes | None
    """The packed script call, when the limiter talks RESP itself."""


class RateLimiter:
    """Checks and consumes limits in one atomic script call; see the module docstring."""

    def __init__(self, redis: Redis, *, fail_closed: bool = False, timeout: float = 0.25) -> None:
        self._script = redis.register_script(_SCRIPT)
        self._pipelined = PipelinedScript.for_client(redis, _SCRIPT, timeout=timeout)
        """The same script over one pipelined connection (a fifth of redis-py's CPU per call)."""
        self.fail_closed = fail_closed
        self.timeout = timeout
        self._last_error_logged = 0.0
        self._down_until = 0.0
        self._checks: dict[str, Check] = {}

    def check(self, limits: Sequence[Limit], *, blocks: Sequence[str] = (), consume: bool = True) -> Check:
        """Prepare a call: take one request from every limit (`consume`), unless a block key exists."""
        args = [len(blocks), 1 if consume else 0]
        for limit in limits:
            args += [limit.limit, int(limit.period * 1000)]
        keys = (*blocks, *(limit.key for limit in limits))
        command = self._pipelined.command(keys, args) if self._pipelined is not None else None
        return Check(tuple(limits), tuple(blocks), keys, tuple(args), command)

    def remembered(self, name: str, prepare: Callable[[], Check]) -> Check:
        """The prepared call named `name` (a token id: its keys and limits never change), made once."""
        check = self._checks.get(name)
        if check is None:
            if len(self._checks) >= _MAX_REMEMBERED:
                self._checks.clear()
            check = self._checks[name] = prepare()
        return check

    async def acquire(self, limits: Sequence[Limit], *, blocks: Sequence[str] = ()) -> Decision:
        """Take one request from every limit, or none if any refuses (or a block key exists)."""
        return await self.run(self.check(limits, blocks=blocks))

    async def peek(self, limits: Sequence[Limit]) -> Decision:
        """Would one more request be allowed? Consumes nothing."""
        return await self.run(self.check(limits, consume=False))

    async def run(self, check: Check) -> Decision:
        """Make a prepared call (see `check`)."""
        if time.monotonic() < self._down_until:
            return self._unavailable(None)
        limits, blocks = check.limits, check.blocks
        try:
            if self._pipelined is not None:  # it times out by itself, without a timer per call
                reply = await self._pipelined(check.keys, check.args, command=check.command)
            else:
                async with asyncio.timeout(self.timeout):
                    reply = await self._script(keys=check.keys, args=check.args)
            code, index, remaining, reset_ms, retry_ms = reply
        except (RedisError, OSError, TimeoutError) as error:
            self._down_until = time.monotonic() + _BACKOFF_SECONDS
            return self._unavailable(error)
        if code == 1:
            return Decision(allowed=False, blocked_by=blocks[index - 1])
        tightest = limits[index - 1] if limits else None
        decision = Decision(
            allowed=code == 0,
            limit=tightest.limit if tightest else 0,
            remaining=remaining,
            reset_after=reset_ms / 1000,
            retry_after=retry_ms / 1000,
            refused_by=tightest.name if code == 2 and tightest else None,
        )
        if decision.refused_by is not None:
            RATE_LIMIT_REJECTIONS.labels(decision.refused_by).inc()
        return decision

    def close(self) -> None:
        """Close the pipelined connection (the redis-py client is closed by its owner)."""
        if self._pipelined is not None:
            self._pipelined.close()

    def _unavailable(self, error: Exception | None) -> Decision:
        """Redis failed just now (`error`) or recently (None: not retried for a second)."""
        RATE_LIMITER_ERRORS.inc()
        now = time.monotonic()
        if error is not None and now - self._last_error_logged > 10:  # a line per 10 s, not per request
            self._last_error_logged = now
            log.warning(
                "rate limiter cannot reach redis",
                error=f"{type(error).__name__}: {error}",
                fail_closed=self.fail_closed,
            )
        if self.fail_closed:
            raise UpstreamUnavailable(
                "The rate limiter (Redis) is restarting or unreachable, and this server refuses requests "
                "it cannot count; retry in 2 seconds.",
                headers={"Retry-After": "2"},
                error="rate_limiter_unavailable",
            )
        return Decision(allowed=True, degraded=True)
