"""Redis (Valkey) client: one bounded, blocking connection pool per process.

The client reconnects by itself after Redis restarts (each command takes a live connection from the pool or
opens one). A request that needs Redis while it is unreachable answers 503 with `Retry-After`
(`redis_unavailable_handler`), never 500; the rate limiter decides for itself whether to fail open.
"""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request, Response
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from api.lib.errors import UpstreamUnavailable, domain_error_handler
from api.lib.settings import Settings

log = structlog.get_logger("api.redis")

RETRY_AFTER_SECONDS = 2


def create_redis(settings: Settings) -> Redis:
    """A client whose pool waits (up to 2 s) for a free connection instead of failing under load."""
    if settings.redis_url is None:
        raise RuntimeError("REDIS_URL is not set and no embedded Valkey was started")
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=2,
        socket_connect_timeout=1,
        socket_timeout=2,
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)


def redis_unavailable_handler(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Exception handler for an unreachable Redis: 503 + Retry-After with a plain detail."""
    log.warning("redis unavailable", error=f"{type(error).__name__}: {error}"[:300], path=request.url.path)
    return domain_error_handler(
        request,
        UpstreamUnavailable(
            f"A service this request needs (Redis) is restarting or unreachable; retry in "
            f"{RETRY_AFTER_SECONDS} seconds.",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            error="redis_unavailable",
        ),
    )


redis_exception_handlers: dict[type[Exception], Any] = {
    RedisConnectionError: redis_unavailable_handler,
    RedisTimeout: redis_unavailable_handler,
}
