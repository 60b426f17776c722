"""The durable job queue: claim, succeed, retry with backoff, fail visibly, recover from lost workers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.jobs import services
from api.jobs.models import Job
from api.jobs.worker import JobContext, PermanentJobError, Worker


async def _enqueue(sessions: async_sessionmaker[AsyncSession], kind: str, **payload: Any) -> uuid.UUID:
    async with sessions() as session, session.begin():
        job = services.enqueue(session, kind, payload, max_attempts=3)
    return job.id


async def _job(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID) -> Job:
    async with sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def _make_due(sessions: async_sessionmaker[AsyncSession], job_id: uuid.UUID) -> None:
    async with sessions() as session, session.begin():
        await session.execute(update(Job).where(Job.id == job_id).values(run_after=datetime.now(UTC)))


def test_backoff_grows_and_is_capped() -> None:
    assert 1 <= services.backoff_seconds(1) <= 2
    assert 4 <= services.backoff_seconds(3) <= 8
    assert services.backoff_seconds(50) <= services.BACKOFF_MAX_SECONDS


async def test_a_job_runs_once_and_stores_its_result(sessions: async_sessionmaker[AsyncSession]) -> None:
    seen: list[dict[str, Any]] = []

    async def handler(context: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(payload)
        return {"doubled": payload["n"] * 2}

    job_id = await _enqueue(sessions, "double", n=21)
    worker = Worker(sessions=sessions, handlers={"double": handler}, services={})
    assert await worker.run_once() == 1
    assert await worker.run_once() == 0
    job = await _job(sessions, job_id)
    assert (job.status, job.result, job.attempts) == ("succeeded", {"doubled": 42}, 1)
    assert seen == [{"n": 21}]


async def test_a_failing_job_is_retried_later_then_fails_with_its_error(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async def handler(context: JobContext, payload: dict[str, Any]) -> None:
        raise ConnectionError(f"serving down (attempt {context.attempt})")

    job_id = await _enqueue(sessions, "flaky")
    worker = Worker(sessions=sessions, handlers={"flaky": handler}, services={})
    assert await worker.run_once() == 1
    job = await _job(sessions, job_id)
    assert job.status == "queued"
    assert job.run_after > datetime.now(UTC)  # backoff: not due yet
    assert job.last_error == "ConnectionError: serving down (attempt 1)"
    assert await worker.run_once() == 0
    for _ in range(2):
        await _make_due(sessions, job_id)
        assert await worker.run_once() == 1
    job = await _job(sessions, job_id)
    assert (job.status, job.attempts) == ("failed", 3)
    assert job.last_error == "ConnectionError: serving down (attempt 3)"
    assert job.finished_at is not None


async def test_a_permanent_error_fails_without_retrying(sessions: async_sessionmaker[AsyncSession]) -> None:
    async def handler(context: JobContext, payload: dict[str, Any]) -> None:
        raise PermanentJobError("payload names nothing")

    job_id = await _enqueue(sessions, "broken")
    worker = Worker(sessions=sessions, handlers={"broken": handler}, services={})
    await worker.run_once()
    job = await _job(sessions, job_id)
    assert (job.status, job.attempts) == ("failed", 1)


async def test_a_job_whose_worker_died_is_requeued_when_its_lease_expires(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    job_id = await _enqueue(sessions, "slow")
    async with sessions() as session, session.begin():
        claimed = await services.claim(session, limit=1, lease_seconds=60)
    assert [c[0] for c in claimed] == [job_id]
    worker = Worker(sessions=sessions, handlers={"slow": _noop}, services={})
    await worker.sweep()
    assert (await _job(sessions, job_id)).status == "running"  # lease still valid
    async with sessions() as session, session.begin():
        await session.execute(
            update(Job).where(Job.id == job_id).values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    await worker.sweep()
    job = await _job(sessions, job_id)
    assert job.status == "queued"
    assert "lease expired" in (job.last_error or "")
    assert await worker.run_once() == 1
    assert (await _job(sessions, job_id)).status == "succeeded"


async def test_two_workers_never_claim_the_same_job(sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = {await _enqueue(sessions, "count", i=i) for i in range(6)}
    async with sessions() as first, first.begin():
        mine = await services.claim(first, limit=3, lease_seconds=30)
        async with sessions() as second, second.begin():
            theirs = await services.claim(second, limit=10, lease_seconds=30)
    claimed = [c[0] for c in mine] + [c[0] for c in theirs]
    assert len(claimed) == len(set(claimed)) == 6
    assert set(claimed) == ids


async def test_a_job_is_only_visible_to_the_app_and_user_that_started_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    app_id, user_id = uuid.uuid4(), uuid.uuid4()
    async with sessions() as session, session.begin():
        job = services.enqueue(session, "memory.embed", {}, app_id=app_id, user_id=user_id)
    async with sessions() as session:
        assert (await services.get_job(session, job.id, app_id=app_id, user_id=user_id)).id == job.id
        for other_app, other_user in ((uuid.uuid4(), user_id), (app_id, uuid.uuid4()), (app_id, None)):
            try:
                await services.get_job(session, job.id, app_id=other_app, user_id=other_user)
            except Exception as error:
                assert type(error).__name__ == "NotFound"
            else:
                raise AssertionError("another owner could see the job")
        assert (await session.scalar(select(Job.kind).where(Job.id == job.id))) == "memory.embed"


async def _noop(context: JobContext, payload: dict[str, Any]) -> None:
    return None


async def _until(predicate: Any, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_slow_job_does_not_hold_up_the_next_ones(sessions: async_sessionmaker[AsyncSession]) -> None:
    """A free slot is filled as soon as a job finishes: with two slots, one stuck job leaves the other
    slot working through the queue (a batch-at-a-time worker would wait for the stuck job)."""
    release = asyncio.Event()

    async def slow(context: JobContext, payload: dict[str, Any]) -> None:
        await release.wait()

    async def quick(context: JobContext, payload: dict[str, Any]) -> None:
        return None

    stuck = await _enqueue(sessions, "slow")
    quick_ids = [await _enqueue(sessions, "quick", n=n) for n in range(5)]
    worker = Worker(sessions=sessions, handlers={"slow": slow, "quick": quick}, services={}, concurrency=2)
    worker.poll_seconds = 0.05
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:

        async def quick_done() -> bool:
            return all([(await _job(sessions, job_id)).status == "succeeded" for job_id in quick_ids])

        await _until(quick_done)
        assert (await _job(sessions, stuck)).status == "running"
        release.set()
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
    assert (await _job(sessions, stuck)).status == "succeeded", "stopping waits for the jobs in hand"


async def test_sweeps_run_beside_the_jobs(sessions: async_sessionmaker[AsyncSession]) -> None:
    """A long sweep (embedding a curriculum backlog) does not hold up the jobs a GPT just queued."""
    sweep_started, release = asyncio.Event(), asyncio.Event()

    async def long_sweep(_sessions: async_sessionmaker[AsyncSession]) -> int:
        sweep_started.set()
        await release.wait()
        return 0

    async def quick(context: JobContext, payload: dict[str, Any]) -> None:
        return None

    worker = Worker(sessions=sessions, handlers={"quick": quick}, services={}, sweepers=(long_sweep,))
    worker.poll_seconds = 0.05
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(sweep_started.wait(), 10)
        job_id = await _enqueue(sessions, "quick")

        async def done() -> bool:
            return (await _job(sessions, job_id)).status == "succeeded"

        await _until(done)
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(running, 10)
