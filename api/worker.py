"""All background job kinds and sweepers, wired in one place; used by the API lifespan and `setu worker`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.content.controllers import CONTENT_JOB, run_content_job
from api.curriculum.loader import embedding_sweeper
from api.jobs.worker import Worker
from api.lib.settings import Settings
from api.memories.services import EMBED_JOB, embed_memory, pending_sweeper


def build_worker(settings: Settings, sessions: async_sessionmaker[AsyncSession], serving: Any) -> Worker:
    return Worker(
        sessions=sessions,
        handlers={EMBED_JOB: embed_memory, CONTENT_JOB: run_content_job},
        services={"serving": serving, "settings": settings},
        sweepers=(pending_sweeper(settings.memory_pending_grace_seconds), embedding_sweeper(serving)),
        concurrency=settings.worker_concurrency,
        lease_seconds=settings.job_lease_seconds,
    )


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
