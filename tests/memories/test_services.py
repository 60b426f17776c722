"""The memory bank's services: one transaction per memory and job, idempotency, limits, recall by meaning."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.jobs.models import Job
from api.jobs.worker import Worker
from api.lib.errors import InvalidInput, NotFound, PayloadTooLarge
from api.lib.settings import Settings
from api.memories import services
from api.memories.models import Memory
from api.memories.schemas import MemoryAccepted, MemoryCreate
from tests.utils.embedder import LocalEmbedder


@pytest.fixture
def owner() -> services.Owner:
    return services.Owner(app_id=uuid.uuid4(), user_id=uuid.uuid4())


def worker(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> Worker:
    return Worker(
        sessions=sessions,
        handlers={services.EMBED_JOB: services.embed_memory},
        services={"serving": LocalEmbedder()},
        sweepers=(services.pending_sweeper(settings.memory_pending_grace_seconds),),
    )


async def remember(
    sessions: async_sessionmaker[AsyncSession],
    owner: services.Owner,
    settings: Settings,
    content: str,
    **kw: object,
) -> MemoryAccepted:
    async with sessions() as session, session.begin():
        return await services.create_memory(session, owner, MemoryCreate(content=content, **kw), settings)  # type: ignore[arg-type]


async def test_a_memory_and_its_job_are_created_together_and_the_worker_makes_it_ready(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, owner: services.Owner
) -> None:
    memory = await remember(sessions, owner, settings, "Asha finds fractions hard", tags=["maths"])
    async with sessions() as session:
        job = await session.get(Job, memory.job_id)
        assert job is not None and job.status == "queued" and job.payload == {"memory_id": str(memory.id)}
    assert await worker(sessions, settings).run_once() == 1
    async with sessions() as session:
        stored = await services.get_memory(session, owner, memory.id)
        assert stored.status == "ready"
        vector = await session.scalar(select(Memory.embedding).where(Memory.id == memory.id))
        assert vector is not None and len(vector) == 384
        assert abs(sum(x * x for x in vector) - 1) < 1e-3, "a unit vector, stored as it was computed"


async def test_search_finds_a_memory_by_meaning_and_prefers_recent_ones(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, owner: services.Owner
) -> None:
    old = await remember(sessions, owner, settings, "The student loves cricket and plays every evening")
    await remember(sessions, owner, settings, "Preferred language for explanations is Hindi")
    new = await remember(sessions, owner, settings, "The student loves cricket and plays every evening!")
    await worker(sessions, settings).run_once()
    async with sessions() as session, session.begin():
        await session.execute(
            update(Memory)
            .where(Memory.id == old.id)
            .values(created_at=datetime.now(UTC) - timedelta(days=365))
        )
    vector = (await LocalEmbedder().embed(["what sport does the child like?"]))[0]
    async with sessions() as session:
        hits = await services.search_memories(session, owner, vector, limit=3, tags=[], settings=settings)
    assert [h.id for h in hits[:2]] == [new.id, old.id]
    assert hits[0].score > hits[1].score
    assert hits[2].similarity < hits[1].similarity


async def test_an_idempotent_retry_returns_the_same_memory_and_no_second_job(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, owner: services.Owner
) -> None:
    body = MemoryCreate(content="Working on chapter 3", tags=["progress"])
    async with sessions() as session, session.begin():
        first = await services.create_memory(session, owner, body, settings, idempotency_key="k-1")
    async with sessions() as session, session.begin():
        again = await services.create_memory(session, owner, body, settings, idempotency_key="k-1")
    assert (again.id, again.job_id) == (first.id, first.job_id)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 1
    with pytest.raises(InvalidInput, match="different request body"):
        async with sessions() as session, session.begin():
            await services.create_memory(
                session, owner, MemoryCreate(content="Something else"), settings, idempotency_key="k-1"
            )


async def test_limits_are_clear_errors(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, owner: services.Owner
) -> None:
    with pytest.raises(PayloadTooLarge, match="at most 8000"):
        await remember(sessions, owner, settings, "x" * 8001)
    small = settings.model_copy(update={"memory_max_per_user": 2})
    await remember(sessions, owner, small, "one")
    await remember(sessions, owner, small, "two")
    with pytest.raises(InvalidInput, match="memory limit reached"):
        await remember(sessions, owner, small, "three")


async def test_another_user_or_app_cannot_read_or_delete_a_memory(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, owner: services.Owner
) -> None:
    memory = await remember(sessions, owner, settings, "private note")
    for stranger in (services.Owner(owner.app_id, uuid.uuid4()), services.Owner(uuid.uuid4(), owner.user_id)):
        async with sessions() as session:
            with pytest.raises(NotFound):
                await services.get_memory(session, stranger, memory.id)
            with pytest.raises(NotFound):
                await services.delete_memory(session, stranger, memory.id)
            rows, _ = await services.list_memories(session, stranger, tag=None, cursor=None, limit=10)
            assert rows == []


async def test_list_pages_newest_first_without_overlap(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, owner: services.Owner
) -> None:
    created = [
        await remember(sessions, owner, settings, f"note {i}", tags=["a"] if i % 2 else []) for i in range(5)
    ]
    async with sessions() as session:
        first, cursor = await services.list_memories(session, owner, tag=None, cursor=None, limit=3)
        second, end = await services.list_memories(session, owner, tag=None, cursor=cursor, limit=3)
        tagged, _ = await services.list_memories(session, owner, tag="a", cursor=None, limit=10)
    assert [m.id for m in first + second] == [m.id for m in reversed(created)]
    assert end is None
    assert {m.id for m in tagged} == {created[1].id, created[3].id}


async def test_a_memory_left_pending_without_a_job_is_requeued_by_the_sweeper(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, owner: services.Owner
) -> None:
    memory = await remember(sessions, owner, settings, "lost job")
    async with sessions() as session, session.begin():
        await session.execute(update(Job).where(Job.id == memory.job_id).values(status="failed"))
        await session.execute(
            update(Memory)
            .where(Memory.id == memory.id)
            .values(updated_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    sweeper = worker(sessions, settings)
    await sweeper.sweep()
    assert await sweeper.run_once() == 1
    async with sessions() as session:
        stored = await session.get(Memory, memory.id)
    assert stored is not None and stored.status == "ready"
    assert stored.job_id != memory.job_id


async def test_concurrent_requests_with_one_idempotency_key_make_one_memory_and_one_job(
    db_engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    owner: services.Owner,
) -> None:
    """The API's path (the engine, autocommit): the losers of the race replay the winner's memory."""
    body = MemoryCreate(content="Revising the water cycle", tags=["science"])
    answers = await asyncio.gather(
        *(services.create_memory(db_engine, owner, body, settings, idempotency_key="race") for _ in range(8))
    )
    assert len({(a.id, a.job_id) for a in answers}) == 1
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Memory)) == 1
        job = await session.get(Job, answers[0].job_id)
    assert job is not None and job.payload == {"memory_id": str(answers[0].id)} and job.status == "queued"


async def test_an_apps_own_memories_are_apart_from_its_users_and_limited_on_their_own(
    db_engine: AsyncEngine, settings: Settings, owner: services.Owner
) -> None:
    app_itself = services.Owner(owner.app_id, None)
    small = settings.model_copy(update={"memory_max_per_user": 1})
    mine = await services.create_memory(db_engine, app_itself, MemoryCreate(content="app note"), small)
    theirs = await services.create_memory(db_engine, owner, MemoryCreate(content="user note"), small)
    with pytest.raises(InvalidInput, match="memory limit reached"):
        await services.create_memory(db_engine, app_itself, MemoryCreate(content="second app note"), small)
    listed, _ = await services.list_memories(db_engine, app_itself, tag=None, cursor=None, limit=10)
    assert [m.id for m in listed] == [mine.id]
    assert (await services.get_memory(db_engine, owner, theirs.id)).content == "user note"
    with pytest.raises(NotFound):
        await services.get_memory(db_engine, app_itself, theirs.id)
    await services.delete_memory(db_engine, app_itself, mine.id)
    with pytest.raises(NotFound):
        await services.delete_memory(db_engine, app_itself, mine.id)
    assert (await services.get_memory(db_engine, owner, theirs.id)).id == theirs.id
