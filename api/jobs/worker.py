"""The job worker: claims due jobs, runs their handler, retries with backoff, sweeps lost work.

Runs inside the API process by default (`SETU_WORKER_EMBEDDED=true`) and on its own as `setu worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.jobs import services
from api.jobs.outage import Outage

log = structlog.get_logger("api.jobs")

JOBS = Counter("setu_jobs_total", "Job attempts finished, by kind and outcome.", ["kind", "outcome"])
JOB_SECONDS = Histogram(
    "setu_job_duration_seconds",
    "Time a job attempt took, by kind.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
BACKLOG = Gauge(
    "setu_jobs_backlog",
    "Jobs not yet succeeded, by kind and status (queued, running, failed).",
    ["kind", "status"],
    multiprocess_mode="max",
)


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a handler may use: a session factory and the app's shared clients."""

    job_id: uuid.UUID
    attempt: int
    sessions: async_sessionmaker[AsyncSession]
    services: dict[str, Any]


Handler = Callable[[JobContext, dict[str, Any]], Awaitable[dict[str, Any] | None]]
Sweeper = Callable[[async_sessionmaker[AsyncSession]], Awaitable[int]]
ClaimedJob = tuple[uuid.UUID, str, dict[str, Any], int, int]
"""id, kind, payload, attempt, max attempts"""


class PermanentJobError(Exception):
    """A handler's way to say retrying cannot help (bad payload, deleted data)."""


@dataclass
class Worker:
    sessions: async_sessionmaker[AsyncSession]
    handlers: dict[str, Handler]
    services: dict[str, Any]
    sweepers: tuple[Sweeper, ...] = ()
    concurrency: int = 4
    lease_seconds: float = 120.0
    poll_seconds: float = 0.5
    sweep_seconds: float = 15.0
    outage: Outage | None = None
    """Degraded mode: a job failing with one of `outage_errors` is logged once for the whole outage."""
    outage_errors: tuple[type[Exception], ...] = ()

    async def run_once(self) -> int:
        """Claim and run one batch of due jobs; return how many ran."""
        claimed = await self._claim(self.concurrency)
        await asyncio.gather(*(self._run(*job) for job in claimed))
        return len(claimed)

    async def _claim(self, limit: int) -> list[ClaimedJob]:
        async with self.sessions() as session, session.begin():
            return await services.claim(
                session, limit=limit, lease_seconds=self.lease_seconds, kinds=list(self.handlers)
            )

    async def _run(
        self, job_id: uuid.UUID, kind: str, payload: dict[str, Any], attempt: int, max_attempts: int
    ) -> None:
        context = JobContext(job_id=job_id, attempt=attempt, sessions=self.sessions, services=self.services)
        started = time.perf_counter()
        try:
            result = await self.handlers[kind](context, payload)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            permanent = isinstance(error, PermanentJobError)
            async with self.sessions() as session, session.begin():
                retry = await services.fail(
                    session,
                    job_id,
                    attempts=max_attempts if permanent else attempt,
                    max_attempts=max_attempts,
                    error=reason,
                )
            JOBS.labels(kind, "retried" if retry else "failed").inc()
            quiet = self.outage is not None and isinstance(error, self.outage_errors)
            if quiet:
                assert self.outage is not None
                self.outage.down(reason, failed_attempt=True)
            (log.debug if quiet else log.warning)(
                "job attempt failed",
                job_id=str(job_id),
                kind=kind,
                attempt=attempt,
                retry=retry,
                error=reason,
            )
        else:
            async with self.sessions() as session, session.begin():
                await services.succeed(session, job_id, result)
            JOBS.labels(kind, "succeeded").inc()
        finally:
            JOB_SECONDS.labels(kind).observe(time.perf_counter() - started)

    async def sweep(self) -> None:
        """Re-queue work whose worker died, let domains re-queue lost work, refresh the backlog gauge."""
        async with self.sessions() as session, session.begin():
            expired = await services.requeue_expired(session)
        if expired:
            log.warning("re-queued jobs whose lease expired", count=expired)
        for sweeper in self.sweepers:
            await sweeper(self.sessions)
        async with self.sessions() as session:
            counts = await services.backlog(session)
        BACKLOG.clear()
        for (kind, status), count in counts.items():
            BACKLOG.labels(kind, status).set(count)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set, then finish the jobs in hand; a failing database only pauses the loop.

        Up to `concurrency` jobs run at once and a free slot is filled as soon as one finishes (not when a
        whole batch has), so calls to the ML tier overlap and coalesce. Sweeps run beside the jobs: embedding
        a large curriculum backlog does not hold up the memories a GPT just stored."""
        sweeping = asyncio.create_task(self._sweep_until(stop), name="setu-worker-sweeps")
        running: set[asyncio.Task[Any]] = set()
        stopping: asyncio.Task[Any] = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                free = self.concurrency - len(running)
                claimed: list[ClaimedJob] = []
                if free > 0:
                    try:
                        claimed = await self._claim(free)
                    except Exception as error:
                        log.error("worker loop error", error=f"{type(error).__name__}: {error}")
                for job in claimed:
                    task = asyncio.create_task(self._run(*job))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if free > 0 and len(claimed) == free:
                    continue  # the queue may hold more: claim again once a slot is free
                if len(running) >= self.concurrency:
                    await asyncio.wait({stopping, *running}, return_when=asyncio.FIRST_COMPLETED)
                else:  # the queue is empty (or the database is away): poll again shortly
                    await asyncio.wait({stopping}, timeout=self.poll_seconds)
        finally:
            stopping.cancel()
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping
            await asyncio.gather(*running, return_exceptions=True)

    async def _sweep_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception as error:
                log.error("worker sweep error", error=f"{type(error).__name__}: {error}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.sweep_seconds)
