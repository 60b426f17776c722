"""Query embeddings through the serving tier, cached in Redis by a hash of the text."""

from __future__ import annotations

import hashlib
import struct
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.lib.vectors import EMBEDDING_DIMENSION

log = structlog.get_logger("api.embeddings")

CACHE_TTL_SECONDS = 7 * 24 * 3600
_FORMAT = f"<{EMBEDDING_DIMENSION}f"


class Embedder(Protocol):
    async def embed(self, texts: list[str]) -> list[list[float]]: ...


def cache_key(text: str) -> str:
    return "setu:emb:" + hashlib.sha256(text.strip().encode()).hexdigest()


async def embed_query(text: str, embedder: Embedder, redis: Redis) -> list[float]:
    """The embedding of one query, from Redis when seen before; Redis trouble only costs the cache."""
    key = cache_key(text)
    try:
        cached = await redis.get(key)
    except RedisError as error:
        log.warning("embedding cache unavailable", error=str(error))
        cached = None
    if isinstance(cached, bytes) and len(cached) == struct.calcsize(_FORMAT):
        return list(struct.unpack(_FORMAT, cached))
    vector = (await embedder.embed([text.strip()]))[0]
    try:
        await redis.set(key, struct.pack(_FORMAT, *vector), ex=CACHE_TTL_SECONDS)
    except (RedisError, struct.error) as error:
        log.warning("embedding cache write failed", error=str(error))
    return vector
