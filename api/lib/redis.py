"""Redis (Valkey) client: one bounded, blocking connection pool per process."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from api.lib.settings import Settings


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
