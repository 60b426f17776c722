"""All background job kinds and sweepers, wired in one place; used by the API lifespan and `setu worker`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.content.controllers import CONTENT_JOB, run_content_job
from api.curriculum.loader import embed_missing
from api.jobs.outage import Outage
from api.jobs.worker import Sweeper, Worker
from api.lib.errors import UpstreamUnavailable
from api.lib.settings import Settings
from api.memories.services import EMBED_JOB, embed_memory, pending_sweeper

# What waits for the ML tier: standards and topics without an embedding, memories not yet embedded.
_WAITING = text(
    "SELECT (SELECT count(*) FROM curriculum_standards WHERE embedding IS NULL)"
    " + (SELECT count(*) FROM curriculum_topics WHERE embedding IS NULL)"
    " + (SELECT count(*) FROM memories WHERE status = 'pending')"
)


def build_worker(settings: Settings, sessions: async_sessionmaker[AsyncSession], serving: Any) -> Worker:
    outage = Outage("serving")
    return Worker(
        sessions=sessions,
        handlers={EMBED_JOB: embed_memory, CONTENT_JOB: run_content_job},
        services={"serving": serving, "settings": settings},
        sweepers=(
            pending_sweeper(settings.memory_pending_grace_seconds),
            embedding_sweeper(serving, outage),
        ),
        concurrency=settings.worker_concurrency,
        lease_seconds=settings.job_lease_seconds,
        outage=outage,
        outage_errors=(UpstreamUnavailable,),
    )


async def waiting_for_serving(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(_WAITING) or 0)


def embedding_sweeper(serving: Any, outage: Outage) -> Sweeper:
    """Embed standards and topics that still lack an embedding, whenever serving is up; while it is not,
    `outage` logs once and counts what waits (instead of a warning every sweep)."""

    def progress(done: int, total: int) -> None:
        if outage.active:  # the first batch went through: say so now, not after the whole backlog
            outage.up(done=done, waiting=total - done)

    async def sweep(sessions: async_sessionmaker[AsyncSession]) -> int:
        try:
            done = await embed_missing(sessions, serving, progress)
            if outage.active and done == 0:
                await serving.models()  # nothing to embed here: is serving back for the memories' jobs?
        except UpstreamUnavailable as error:
            outage.down(error.detail, waiting=await waiting_for_serving(sessions))
            return 0
        outage.up(done=done, waiting=await waiting_for_serving(sessions))
        return done

    return sweep


@asynccontextmanager
async def running_worker(worker: Worker) -> AsyncIterator[asyncio.Task[None]]:
    """Run `worker` in the background until the block exits, then stop it and wait for its current jobs."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop), name="setu-worker")
    try:
        yield task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=30)
        except TimeoutError:
            task.cancel()
