"""Store, list, recall and forget memories; always scoped to one (app, user) owner."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import Row, TextClause, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.jobs import services as jobs
from api.jobs.worker import JobContext, PermanentJobError
from api.lib.db import rows_of, write
from api.lib.errors import InvalidInput, NotFound, PayloadTooLarge
from api.lib.settings import Settings
from api.memories import schemas
from api.memories.models import Memory

EMBED_JOB = "memory.embed"
METADATA_MAX_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose memories these are: one app and one of its end users (None: the app itself)."""

    app_id: uuid.UUID
    user_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class OwnerStatement:
    """One SQL text in two constant forms, for an end user's rows and for the app's own (`{owner}` in the
    text). Both can use the owner index (`IS NOT DISTINCT FROM` could not: it made every count, list and
    search scan the whole table)."""

    user: TextClause
    app: TextClause

    @classmethod
    def of(cls, sql: str) -> OwnerStatement:
        return cls(text(sql.format(owner="user_id = :user_id")), text(sql.format(owner="user_id IS NULL")))

    def params(self, owner: Owner, **params: Any) -> tuple[TextClause, dict[str, Any]]:
        """The statement for `owner`, with the owner's parameters added to `params`."""
        if owner.user_id is None:
            return self.app, {"app_id": owner.app_id, "user_id": None, **params}
        return self.user, {"app_id": owner.app_id, "user_id": owner.user_id, **params}


def _request_hash(data: schemas.MemoryCreate) -> str:
    return hashlib.sha256(msgspec.json.encode(data, order="deterministic")).hexdigest()


def _check_limits(data: schemas.MemoryCreate, settings: Settings) -> None:
    if len(data.content) > settings.memory_max_chars:
        raise PayloadTooLarge(
            f"content is {len(data.content)} characters; a memory holds at most {settings.memory_max_chars}"
        )
    if len(msgspec.json.encode(data.metadata)) > METADATA_MAX_BYTES:
        raise InvalidInput(f"metadata must serialise to at most {METADATA_MAX_BYTES} bytes of JSON")


# The limit check, the memory and its embedding job in one statement: one round trip, atomic on its own.
_CREATE = OwnerStatement.of(
    """
    WITH owned AS (
        SELECT count(*) AS n FROM memories WHERE app_id = :app_id AND {owner}
    ), memory AS (
        INSERT INTO memories (id, app_id, user_id, content, tags, metadata, status, idempotency_key,
                              request_hash, job_id, created_at, updated_at)
        SELECT CAST(:id AS uuid), CAST(:app_id AS uuid), CAST(:user_id AS uuid), CAST(:content AS text),
               CAST(:tags AS varchar[]), CAST(:metadata AS jsonb), 'pending', CAST(:key AS varchar),
               CAST(:request_hash AS varchar), CAST(:job_id AS uuid), now(), now()
        FROM owned WHERE owned.n < :max_per_user
        ON CONFLICT (app_id, user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id
    ), job AS (
        INSERT INTO jobs (id, kind, payload, status, attempts, max_attempts, run_after, app_id, user_id,
                          created_at, updated_at)
        SELECT CAST(:job_id AS uuid), CAST(:kind AS varchar), CAST(:payload AS jsonb), 'queued', 0,
               CAST(:max_attempts AS integer), now(),
               CAST(:app_id AS uuid), CAST(:user_id AS uuid), now(), now()
        FROM memory
    )
    SELECT EXISTS (SELECT 1 FROM memory) AS created
    """
)


async def create_memory(
    db: AsyncSession | AsyncEngine,
    owner: Owner,
    data: schemas.MemoryCreate,
    settings: Settings,
    idempotency_key: str | None = None,
) -> schemas.MemoryAccepted:
    """Insert the memory (pending) and its embedding job together (autocommit, given the engine; in the
    session's transaction, given a session); replay an idempotent retry."""
    _check_limits(data, settings)
    request_hash = _request_hash(data)
    if idempotency_key is not None:
        existing = await _by_idempotency_key(db, owner, idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash)
    memory_id, job_id = uuid.uuid4(), uuid.uuid4()
    statement, params = _CREATE.params(
        owner,
        id=memory_id,
        content=data.content,
        tags=sorted(set(data.tags)),
        metadata=msgspec.json.encode(data.metadata).decode(),
        key=idempotency_key,
        request_hash=request_hash,
        job_id=job_id,
        max_per_user=settings.memory_max_per_user,
        kind=EMBED_JOB,
        payload=msgspec.json.encode({"memory_id": str(memory_id)}).decode(),
        max_attempts=jobs.DEFAULT_MAX_ATTEMPTS,
    )
    (row,) = await write(db, statement, params)
    if row.created:
        return schemas.MemoryAccepted(id=memory_id, job_id=job_id, status="pending")
    if idempotency_key is not None:  # a concurrent request with the same Idempotency-Key won the race
        existing = await _by_idempotency_key(db, owner, idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash)
    raise InvalidInput(
        f"memory limit reached: at most {settings.memory_max_per_user} memories per user; delete some first"
    )


_BY_KEY = OwnerStatement.of(
    "SELECT id, job_id, status, request_hash FROM memories"
    " WHERE app_id = :app_id AND {owner} AND idempotency_key = :key"
)


async def _by_idempotency_key(db: AsyncSession | AsyncEngine, owner: Owner, key: str) -> Row[Any] | None:
    rows = await rows_of(db, *_BY_KEY.params(owner, key=key))
    return rows[0] if rows else None


def _replay(existing: Row[Any], request_hash: str) -> schemas.MemoryAccepted:
    if existing.request_hash != request_hash:
        raise InvalidInput("Idempotency-Key was already used with a different request body")
    return schemas.MemoryAccepted(id=existing.id, job_id=existing.job_id, status=existing.status)


_GET = OwnerStatement.of(
    "SELECT id, content, tags, metadata, status, created_at FROM memories"
    " WHERE id = :id AND app_id = :app_id AND {owner}"
)


async def get_memory(db: AsyncSession | AsyncEngine, owner: Owner, memory_id: uuid.UUID) -> schemas.Memory:
    rows = await rows_of(db, *_GET.params(owner, id=memory_id))
    if not rows:
        raise NotFound(f"No memory {memory_id} for this user")
    return _memory_of(rows[0])


def _memory_of(row: Row[Any]) -> schemas.Memory:
    return schemas.Memory(
        id=row.id,
        content=row.content,
        tags=list(row.tags),
        metadata=row.metadata,
        status=row.status,
        created_at=row.created_at,
    )


_DELETE = OwnerStatement.of(
    "DELETE FROM memories WHERE id = :id AND app_id = :app_id AND {owner} RETURNING id"
)


async def delete_memory(db: AsyncSession | AsyncEngine, owner: Owner, memory_id: uuid.UUID) -> None:
    if not await write(db, *_DELETE.params(owner, id=memory_id)):
        raise NotFound(f"No memory {memory_id} for this user")


def encode_cursor(created_at: datetime, memory_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{memory_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, memory_id = raw.split("|", 1)
        return datetime.fromisoformat(created), uuid.UUID(memory_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this API returned") from None


# Newest first along the owner index (app_id, user_id, created_at DESC, id DESC).
_LIST = OwnerStatement.of(
    """
    SELECT id, content, tags, metadata, status, created_at FROM memories
    WHERE app_id = :app_id AND {owner}
      AND (CAST(:tag AS varchar) IS NULL OR tags @> ARRAY[CAST(:tag AS varchar)])
      AND (CAST(:after_at AS timestamptz) IS NULL
           OR (created_at, id) < (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid)))
    ORDER BY created_at DESC, id DESC
    LIMIT :limit
    """
)


async def list_memories(
    db: AsyncSession | AsyncEngine, owner: Owner, *, tag: str | None, cursor: str | None, limit: int
) -> tuple[list[schemas.Memory], str | None]:
    """Newest first, keyset-paginated; one SELECT (autocommit, given the engine)."""
    after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
    statement, params = _LIST.params(
        owner, tag=tag or None, after_at=after_at, after_id=after_id, limit=limit + 1
    )
    rows = await rows_of(db, statement, params)
    items = [_memory_of(row) for row in rows[:limit]]
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return items, next_cursor


# An exact scan of one owner's rows (at most SETU_MEMORY_MAX_PER_USER), found through the owner index.
_SEARCH = OwnerStatement.of(
    """
    SELECT id, content, tags, metadata, created_at, similarity,
           (1 - :weight) * similarity
             + :weight * exp(-ln(2) * extract(epoch FROM now() - created_at) / (86400 * :half_life)) AS score
    FROM (
        SELECT id, content, tags, metadata, created_at,
               1 - (embedding <=> CAST(CAST(:query AS real[]) AS vector)) AS similarity
        FROM memories
        WHERE app_id = :app_id AND {owner} AND status = 'ready'
          AND (CAST(:tags AS varchar[]) IS NULL OR tags @> CAST(:tags AS varchar[]))
    ) AS owned
    ORDER BY score DESC
    LIMIT :limit
    """
)


async def search_memories(
    db: AsyncSession | AsyncEngine,
    owner: Owner,
    query_vector: list[float],
    *,
    limit: int,
    tags: list[str],
    settings: Settings,
) -> list[schemas.MemoryHit]:
    """Semantic similarity blended with a recency boost (half-life `SETU_MEMORY_RECENCY_HALF_LIFE_DAYS`)."""
    statement, params = _SEARCH.params(
        owner,
        query=query_vector,  # a binary float4[], not 384 numbers as text
        tags=sorted(set(tags)) or None,
        limit=limit,
        weight=settings.memory_recency_weight,
        half_life=settings.memory_recency_half_life_days,
    )
    rows = await rows_of(db, statement, params)
    return [
        schemas.MemoryHit(
            id=row.id,
            content=row.content,
            tags=list(row.tags),
            metadata=row.metadata,
            created_at=row.created_at,
            score=round(float(row.score), 4),
            similarity=round(float(row.similarity), 4),
        )
        for row in rows
    ]


async def embed_memory(context: JobContext, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Job handler: embed one memory and mark it ready (a deleted memory is a no-op)."""
    try:
        memory_id = uuid.UUID(payload["memory_id"])
    except (KeyError, ValueError):
        raise PermanentJobError(f"payload has no valid memory_id: {payload!r}") from None
    async with context.sessions() as session:
        content = await session.scalar(select(Memory.content).where(Memory.id == memory_id))
    if content is None:
        return {"memory_id": str(memory_id), "skipped": "memory was deleted"}
    vector = (await context.services["serving"].embed([content]))[0]
    async with context.sessions() as session, session.begin():
        await session.execute(_MARK_READY, {"id": memory_id, "vector": list(vector)})
    return {"memory_id": str(memory_id), "status": "ready"}


_MARK_READY = text(
    "UPDATE memories SET embedding = CAST(CAST(:vector AS real[]) AS vector), status = 'ready',"
    " updated_at = now() WHERE id = :id"
)
"""The vector as a binary float4[] parameter (pgvector's own bind formats 384 numbers as text)."""


_ORPHANED_PENDING = text(
    """
    SELECT m.id, m.app_id, m.user_id FROM memories m
    WHERE m.status = 'pending' AND m.updated_at < :before
      AND NOT EXISTS (
          SELECT 1 FROM jobs j WHERE j.id = m.job_id AND j.status IN ('queued', 'running')
      )
    ORDER BY m.updated_at
    LIMIT 500
    FOR UPDATE OF m SKIP LOCKED
    """
)


def pending_sweeper(grace_seconds: float) -> Any:
    """A sweeper that gives every memory left pending without a live job a new embedding job."""

    async def sweep(sessions: async_sessionmaker[AsyncSession]) -> int:
        before = datetime.now(UTC) - timedelta(seconds=grace_seconds)
        async with sessions() as session, session.begin():
            rows = (await session.execute(_ORPHANED_PENDING, {"before": before})).all()
            for row in rows:
                job = jobs.enqueue(
                    session, EMBED_JOB, {"memory_id": str(row.id)}, app_id=row.app_id, user_id=row.user_id
                )
                await session.flush()
                await session.execute(
                    update(Memory).where(Memory.id == row.id).values(job_id=job.id, updated_at=func.now())
                )
        return len(rows)

    return sweep
