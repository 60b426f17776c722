"""Query embeddings through the serving tier: one ML round trip at most per query, cached by text.

Lookup order: this process's LRU, then Redis (by a hash of the text), then the ML tier. Identical queries
in flight at the same time share one lookup, and different queries arriving together share one request
(the serving client coalesces concurrent `embed` calls).
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import weakref
from collections import OrderedDict
from typing import Protocol

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.lib.vectors import EMBEDDING_DIMENSION

log = structlog.get_logger("api.embeddings")

CACHE_TTL_SECONDS = 7 * 24 * 3600
LOCAL_CACHE_SIZE = 4096  # ~6 MB of vectors per process
_FORMAT = f"<{EMBEDDING_DIMENSION}f"


class Embedder(Protocol):
    async def embed(self, texts: list[str]) -> list[list[float]]: ...


def cache_key(text: str) -> str:
    return "setu:emb:" + hashlib.sha256(text.strip().encode()).hexdigest()


class _QueryCache:
    """Per embedder (so a different model, or a test's fake, never sees another's vectors)."""

    def __init__(self) -> None:
        self.vectors: OrderedDict[str, list[float]] = OrderedDict()
        self.in_flight: dict[str, asyncio.Future[list[float]]] = {}

    def get(self, text: str) -> list[float] | None:
        vector = self.vectors.get(text)
        if vector is not None:
            self.vectors.move_to_end(text)
        return vector

    def put(self, text: str, vector: list[float]) -> None:
        self.vectors[text] = vector
        self.vectors.move_to_end(text)
        while len(self.vectors) > LOCAL_CACHE_SIZE:
            self.vectors.popitem(last=False)


_caches: weakref.WeakKeyDictionary[object, _QueryCache] = weakref.WeakKeyDictionary()


def _cache_for(embedder: Embedder) -> _QueryCache:
    try:
        cache = _caches.get(embedder)
        if cache is None:
            cache = _caches[embedder] = _QueryCache()
    except TypeError:  # not weakly referenceable: no process cache
        return _QueryCache()
    return cache


async def embed_query(text: str, embedder: Embedder, redis: Redis) -> list[float]:
    """The embedding of one query; Redis trouble only costs the cache."""
    text = text.strip()
    cache = _cache_for(embedder)
    vector = cache.get(text)
    if vector is not None:
        return vector
    shared = cache.in_flight.get(text)
    if shared is not None and shared.get_loop() is asyncio.get_running_loop():
        return list(await asyncio.shield(shared))
    future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
    cache.in_flight[text] = future
    try:
        vector = await _lookup(text, embedder, redis)
    except BaseException as error:
        if not future.done():
            future.set_exception(error if isinstance(error, Exception) else RuntimeError("cancelled"))
            future.exception()  # retrieved: no "never retrieved" warning when nobody shared it
        raise
    else:
        cache.put(text, vector)
        future.set_result(vector)
    finally:
        if cache.in_flight.get(text) is future:
            del cache.in_flight[text]
    return vector


async def _lookup(text: str, embedder: Embedder, redis: Redis) -> list[float]:
    key = cache_key(text)
    try:
        cached = await redis.get(key)
    except RedisError as error:
        log.warning("embedding cache unavailable", error=str(error))
        cached = None
    if isinstance(cached, bytes) and len(cached) == struct.calcsize(_FORMAT):
        return list(struct.unpack(_FORMAT, cached))
    vector = (await embedder.embed([text]))[0]
    try:
        await redis.set(key, struct.pack(_FORMAT, *vector), ex=CACHE_TTL_SECONDS)
    except (RedisError, struct.error) as error:
        log.warning("embedding cache write failed", error=str(error))
    return vector
