"""The curriculum reads GPTs make most (getStandard, listBoards/Classes/Subjects/Chapters), answered from
memory with their JSON already encoded.

Curriculum data is reference data: it changes only when `setu curriculum load` (or a migration) writes it.
Every write to a `curriculum_*` table bumps `curriculum_version.version` (statement triggers, migration
0005), and each process reads that number every `SETU_CURRICULUM_CACHE_SECONDS` (one tiny autocommit
SELECT); when it moves, the cache is emptied. So a load reaches every worker on every host within that
interval, with no coordination between them. The cache stores whatever the service function returns
(encoded by msgspec), so schema changes to those answers need nothing here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

import msgspec
import structlog
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.lib import db
from api.lib.errors import NotFound

log = structlog.get_logger("api.curriculum.cache")

T = TypeVar("T")

CACHE_LOOKUPS = Counter(
    "setu_curriculum_cache_lookups_total",
    "Curriculum reads answered from memory (hit) or not (miss).",
    ["result"],
)
_HIT = CACHE_LOOKUPS.labels("hit")
_MISS = CACHE_LOOKUPS.labels("miss")

MAX_ENTRIES = 20_000
"""Keys include caller input (a standard code), so the cache is bounded; past this it starts afresh."""
_VERSION = text("SELECT version FROM curriculum_version")
_encoder = msgspec.json.Encoder()


class CurriculumCache:
    """Encoded answers by key, valid while the curriculum version stays the same (see the module doc)."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessions: Callable[[], AsyncSession],
        *,
        check_seconds: float = 1.0,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self.check_seconds = check_seconds
        self.enabled = check_seconds > 0
        self._answers: dict[Hashable, bytes | NotFound] = {}
        self._generation = 0
        """Bumped on every clear: an answer computed across a clear is not stored (it may be stale)."""
        self.version: int | None = None

    def __len__(self) -> int:
        return len(self._answers)

    async def answer(self, key: Hashable, produce: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """The encoded answer for `key`, computing it with `produce(session)` on a miss. NotFound answers
        are remembered too. The result is the JSON body (bytes), typed as what it encodes, so a route can
        return it under its schema's annotation (Litestar sends bytes as they are)."""
        found = self._answers.get(key)
        if found is None:
            _MISS.inc()
            found = await self._compute(key, produce)
        else:
            _HIT.inc()
        if isinstance(found, NotFound):
            raise NotFound(found.detail)
        return cast(T, found)

    async def _compute(
        self, key: Hashable, produce: Callable[[AsyncSession], Awaitable[Any]]
    ) -> bytes | NotFound:
        generation = self._generation
        result: bytes | NotFound
        async with self._sessions() as session:
            try:
                result = _encoder.encode(await produce(session))
            except NotFound as error:
                result = error
        if self.enabled and generation == self._generation:
            if len(self._answers) >= MAX_ENTRIES:
                self._answers.clear()
            self._answers[key] = result
        return result

    def clear(self) -> None:
        self._generation += 1
        self._answers.clear()

    async def check(self) -> bool:
        """Read the curriculum version; empty the cache if it moved. True when it was emptied."""
        rows = await db.read(self._engine, _VERSION)
        version = int(rows[0][0]) if rows else 0
        if version == self.version:
            return False
        changed = self.version is not None
        self.version = version
        self.clear()
        if changed:
            log.info("curriculum changed; cache emptied", version=version)
        return True

    async def watch(self) -> None:
        """Check the version every `check_seconds` until cancelled (a failed check keeps the cache)."""
        if not self.enabled:
            return
        while True:
            try:
                await self.check()
            except Exception as error:  # the database may be restarting: keep serving reference data
                log.debug("curriculum version check failed", error=f"{type(error).__name__}: {error}")
            await asyncio.sleep(self.check_seconds)
