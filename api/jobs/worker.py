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
        async with self.sessions() as session, session.begin():
            claimed = await services.claim(
                session, limit=self.concurrency, lease_seconds=self.lease_seconds, kinds=list(self.handlers)
            )
        await asyncio.gather(*(self._run(*job) for job in claimed))
        return len(claimed)

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
        """Work until `stop` is set; a failing database only pauses the loop."""
        next_sweep = 0.0
        while not stop.is_set():
            ran = 0
            try:
                if time.monotonic() >= next_sweep:
                    await self.sweep()
                    next_sweep = time.monotonic() + self.sweep_seconds
                ran = await self.run_once()
            except Exception as error:
                log.error("worker loop error", error=f"{type(error).__name__}: {error}")
            if ran == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
