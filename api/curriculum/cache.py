"""The curriculum reads GPTs make most (getStandard, listBoards/Classes/Subjects/Chapters, and searches
answered with semantic ranking), answered from memory with their JSON already encoded.

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
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import msgspec
import structlog
from litestar.connection import ASGIConnection
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

MAX_BYTES = 64 * 1024 * 1024
"""Keys include caller input (a code, a query), so the cache is bounded by the size of what it holds;
past this it starts afresh."""
_NOT_FOUND_BYTES = 256
MAX_TARGETS = 50_000
"""Request targets noted for the edge (`api.curriculum.edge`); past this it starts afresh."""
ANSWERED_KEY = "setu.curriculum_answer"
"""Where `answer` notes, in the request's scope state, the key of the remembered answer it sent."""
_VERSION = text("SELECT version FROM curriculum_version")
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class RememberedRoute:
    """What the edge needs to answer a request target again: the answer's key and the route it reached."""

    key: Hashable
    operation: str
    route: str
    """The route template, for metrics."""
    scopes: frozenset[str]
    """Any one of these scopes opens the route."""
    generation: int


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
        self._bytes = 0
        self._generation = 0
        """Bumped on every clear: an answer computed across a clear is not stored (it may be stale)."""
        self._targets: dict[tuple[str, bytes], RememberedRoute] = {}
        self._computing: dict[Hashable, asyncio.Task[bytes | NotFound]] = {}
        """One computation per key at a time: callers that miss together share it (no stampede of
        identical queries when the cache has just been emptied)."""
        self.version: int | None = None

    def __len__(self) -> int:
        return len(self._answers)

    async def answer(
        self,
        connection: ASGIConnection[Any, Any, Any, Any],
        key: Hashable,
        produce: Callable[[AsyncSession], Awaitable[T]],
        *,
        keep: Callable[[T], bool] | None = None,
    ) -> T:
        """The encoded answer for `key`, computing it with `produce(session)` on a miss. NotFound answers
        are remembered too; an answer for which `keep` says False is sent but not remembered (a search
        ranked by text alone while the ML tier is away). The result is the JSON body (bytes), typed as
        what it encodes, so a route can return it under its schema's annotation (Litestar sends bytes as
        they are). A remembered answer's key is noted in the connection's state for the edge."""
        generation = self._generation
        found = self._answers.get(key)
        if found is None:
            _MISS.inc()
            computing = self._computing.get(key)
            if computing is None:
                computing = asyncio.ensure_future(self._compute(key, produce, keep))
                self._computing[key] = computing
                computing.add_done_callback(lambda _: self._computing.pop(key, None))
            # Shielded: a caller that goes away does not cancel the answer the others wait for.
            found = await asyncio.shield(computing)
        else:
            _HIT.inc()
        if isinstance(found, NotFound):
            raise NotFound(found.detail)
        if self._answers.get(key) is found and generation == self._generation:
            connection.scope["state"][ANSWERED_KEY] = (key, generation)
        return cast(T, found)

    def remembered(self, target: tuple[str, bytes]) -> tuple[RememberedRoute, bytes] | None:
        """The route and encoded answer noted for a request target (path, raw query), while both hold."""
        route = self._targets.get(target)
        if route is None:
            return None
        body = self._answers.get(route.key)
        if route.generation != self._generation or not isinstance(body, bytes):
            return None
        _HIT.inc()
        return route, body

    def note_target(self, target: tuple[str, bytes], route: RememberedRoute) -> None:
        """Remember which answer a request target got (see `api.curriculum.edge`)."""
        if route.generation != self._generation:
            return
        if len(self._targets) >= MAX_TARGETS:
            self._targets.clear()
        self._targets[target] = route

    async def _compute(
        self,
        key: Hashable,
        produce: Callable[[AsyncSession], Awaitable[Any]],
        keep: Callable[[Any], bool] | None,
    ) -> bytes | NotFound:
        generation = self._generation
        result: bytes | NotFound
        remember = True
        async with self._sessions() as session:
            try:
                value = await produce(session)
            except NotFound as error:
                result = error
            else:
                result = _encoder.encode(value)
                remember = keep is None or keep(value)
        if remember and self.enabled and generation == self._generation:
            size = _NOT_FOUND_BYTES if isinstance(result, NotFound) else len(result)
            if self._bytes + size > MAX_BYTES:
                self._answers.clear()  # noted targets whose answer is gone simply miss
                self._bytes = 0
            if key not in self._answers:  # defensive: `_computing` runs one computation per key
                self._bytes += size
            self._answers[key] = result
        return result

    def clear(self) -> None:
        self._generation += 1
        self._answers.clear()
        self._targets.clear()
        self._bytes = 0

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
