"""Store, list, recall and forget memories; always scoped to one (app, user) owner."""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.jobs import services as jobs
from api.jobs.worker import JobContext, PermanentJobError
from api.lib.db import rows_of
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


def _owned(owner: Owner) -> list[Any]:
    """The owner's rows, as predicates the owner index can use (`IS NOT DISTINCT FROM` cannot: it made
    every count, list and search scan the whole table)."""
    user = Memory.user_id.is_(None) if owner.user_id is None else Memory.user_id == owner.user_id
    return [Memory.app_id == owner.app_id, user]


def _request_hash(data: schemas.MemoryCreate) -> str:
    return hashlib.sha256(msgspec.json.encode(data, order="deterministic")).hexdigest()


def _check_limits(data: schemas.MemoryCreate, settings: Settings) -> None:
    if len(data.content) > settings.memory_max_chars:
        raise PayloadTooLarge(
            f"content is {len(data.content)} characters; a memory holds at most {settings.memory_max_chars}"
        )
    if len(msgspec.json.encode(data.metadata)) > METADATA_MAX_BYTES:
        raise InvalidInput(f"metadata must serialise to at most {METADATA_MAX_BYTES} bytes of JSON")


async def create_memory(
    session: AsyncSession,
    owner: Owner,
    data: schemas.MemoryCreate,
    settings: Settings,
    idempotency_key: str | None = None,
) -> Memory:
    """Insert the memory (pending) and its embedding job in one transaction; replay an idempotent retry."""
    _check_limits(data, settings)
    request_hash = _request_hash(data)
    if idempotency_key is not None:
        existing = await _by_idempotency_key(session, owner, idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash)
    count = await session.scalar(select(func.count()).select_from(Memory).where(*_owned(owner)))
    if (count or 0) >= settings.memory_max_per_user:
        raise InvalidInput(
            f"memory limit reached: at most {settings.memory_max_per_user} memories per user; "
            "delete some first"
        )
    memory = Memory(
        id=uuid.uuid4(),
        app_id=owner.app_id,
        user_id=owner.user_id,
        content=data.content,
        tags=sorted(set(data.tags)),
        metadata_=data.metadata,
        status="pending",
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    job = jobs.enqueue(
        session, EMBED_JOB, {"memory_id": str(memory.id)}, app_id=owner.app_id, user_id=owner.user_id
    )
    memory.job_id = job.id
    if idempotency_key is None:  # nothing unique can clash: no savepoint round trips
        session.add(memory)
        await session.flush()
        return memory
    try:
        async with session.begin_nested():
            session.add(memory)
            await session.flush()
    except IntegrityError:
        # A concurrent request with the same Idempotency-Key won the race.
        existing = await _by_idempotency_key(session, owner, idempotency_key)
        if existing is None:
            raise
        session.expunge(job)
        return _replay(existing, request_hash)
    return memory


async def _by_idempotency_key(session: AsyncSession, owner: Owner, key: str) -> Memory | None:
    memory: Memory | None = await session.scalar(
        select(Memory).where(*_owned(owner), Memory.idempotency_key == key)
    )
    return memory


def _replay(existing: Memory, request_hash: str) -> Memory:
    if existing.request_hash != request_hash:
        raise InvalidInput("Idempotency-Key was already used with a different request body")
    return existing


async def get_memory(session: AsyncSession, owner: Owner, memory_id: uuid.UUID) -> Memory:
    memory: Memory | None = await session.scalar(select(Memory).where(Memory.id == memory_id, *_owned(owner)))
    if memory is None:
        raise NotFound(f"No memory {memory_id} for this user")
    return memory


async def delete_memory(session: AsyncSession, owner: Owner, memory_id: uuid.UUID) -> None:
    deleted = await session.execute(
        delete(Memory).where(Memory.id == memory_id, *_owned(owner)).returning(Memory.id)
    )
    if deleted.first() is None:
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


def _list_statement(user_predicate: str) -> Any:
    return text(
        f"""
    SELECT id, content, tags, metadata, status, created_at FROM memories
    WHERE app_id = :app_id AND {user_predicate}
      AND (CAST(:tag AS varchar) IS NULL OR tags @> ARRAY[CAST(:tag AS varchar)])
      AND (CAST(:after_at AS timestamptz) IS NULL
           OR (created_at, id) < (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid)))
    ORDER BY created_at DESC, id DESC
    LIMIT :limit
    """  # noqa: S608 (one of two constant predicates)
    )


# Newest first along the owner index (app_id, user_id, created_at DESC, id DESC).
_LIST_USER = _list_statement("user_id = :user_id")
_LIST_APP = _list_statement("user_id IS NULL")


def _owner_params(owner: Owner) -> dict[str, Any]:
    params: dict[str, Any] = {"app_id": owner.app_id}
    if owner.user_id is not None:
        params["user_id"] = owner.user_id
    return params


async def list_memories(
    db: AsyncSession | AsyncEngine, owner: Owner, *, tag: str | None, cursor: str | None, limit: int
) -> tuple[list[schemas.Memory], str | None]:
    """Newest first, keyset-paginated; one SELECT (autocommit, given the engine)."""
    after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
    params = {**_owner_params(owner), "tag": tag or None, "after_at": after_at, "after_id": after_id}
    params["limit"] = limit + 1
    rows = await rows_of(db, _LIST_USER if owner.user_id is not None else _LIST_APP, params)
    items = [
        schemas.Memory(
            id=row.id,
            content=row.content,
            tags=list(row.tags),
            metadata=row.metadata,
            status=row.status,
            created_at=row.created_at,
        )
        for row in rows[:limit]
    ]
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return items, next_cursor


def _search_statement(user_predicate: str) -> Any:
    return text(
        f"""
    SELECT id, content, tags, metadata, created_at, similarity,
           (1 - :weight) * similarity
             + :weight * exp(-ln(2) * extract(epoch FROM now() - created_at) / (86400 * :half_life)) AS score
    FROM (
        SELECT id, content, tags, metadata, created_at,
               1 - (embedding <=> CAST(CAST(:query AS real[]) AS vector)) AS similarity
        FROM memories
        WHERE app_id = :app_id AND {user_predicate} AND status = 'ready'
          AND (CAST(:tags AS varchar[]) IS NULL OR tags @> CAST(:tags AS varchar[]))
    ) AS owned
    ORDER BY score DESC
    LIMIT :limit
    """  # noqa: S608 (one of two constant predicates)
    )


# An exact scan of one owner's rows (at most SETU_MEMORY_MAX_PER_USER), found through the owner index.
_SEARCH_USER = _search_statement("user_id = :user_id")
_SEARCH_APP = _search_statement("user_id IS NULL")


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
    params: dict[str, Any] = {
        **_owner_params(owner),
        "query": query_vector,  # a binary float4[], not 384 numbers as text
        "tags": sorted(set(tags)) or None,
        "limit": limit,
        "weight": settings.memory_recency_weight,
        "half_life": settings.memory_recency_half_life_days,
    }
    rows = await rows_of(db, _SEARCH_USER if owner.user_id is not None else _SEARCH_APP, params)
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
