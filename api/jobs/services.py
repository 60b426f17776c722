"""Enqueue, claim, finish and retry jobs with plain SQL on PostgreSQL (`FOR UPDATE SKIP LOCKED`)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.jobs.models import Job
from api.lib.errors import NotFound

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 300.0
DEFAULT_MAX_ATTEMPTS = 5


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with full jitter: attempt 1 -> up to 2 s, 2 -> up to 4 s, ... capped at 5 min."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    *,
    app_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> Job:
    """Add a job to the caller's session, so it commits (or not) with the data it serves."""
    job = Job(
        id=uuid.uuid4(),
        kind=kind,
        payload=payload,
        status="queued",
        attempts=0,
        max_attempts=max_attempts,
        run_after=datetime.now(UTC),
        app_id=app_id,
        user_id=user_id,
    )
    session.add(job)
    return job


async def get_job(
    session: AsyncSession, job_id: uuid.UUID, *, app_id: uuid.UUID, user_id: uuid.UUID | None
) -> Job:
    """A job as its owner sees it; another app's or user's job is simply not found."""
    job = await session.scalar(
        select(Job).where(
            Job.id == job_id,
            Job.app_id == app_id,
            Job.user_id.is_not_distinct_from(user_id),
        )
    )
    if job is None:
        raise NotFound(f"No job {job_id} for this app and user")
    return job


_CLAIM = text(
    """
    UPDATE jobs SET status = 'running', attempts = attempts + 1,
                    locked_until = now() + make_interval(secs => :lease), updated_at = now()
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status = 'queued' AND run_after <= now()
          AND (CAST(:kinds AS text[]) IS NULL OR kind = ANY(:kinds))
        ORDER BY run_after
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, kind, payload, attempts, max_attempts
    """
)


async def claim(
    session: AsyncSession, *, limit: int, lease_seconds: float, kinds: list[str] | None = None
) -> list[tuple[uuid.UUID, str, dict[str, Any], int, int]]:
    """Lock up to `limit` due jobs for this worker for `lease_seconds`; commit before working on them."""
    rows = await session.execute(_CLAIM, {"lease": lease_seconds, "limit": limit, "kinds": kinds})
    return [(row.id, row.kind, row.payload, row.attempts, row.max_attempts) for row in rows]


async def succeed(session: AsyncSession, job_id: uuid.UUID, result: dict[str, Any] | None) -> None:
    await session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            status="succeeded",
            result=result,
            locked_until=None,
            finished_at=datetime.now(UTC),
            last_error=None,
        )
    )


async def fail(
    session: AsyncSession, job_id: uuid.UUID, *, attempts: int, max_attempts: int, error: str
) -> bool:
    """Record a failed attempt; re-queue with backoff, or fail for good. Returns True when it will retry."""
    retry = attempts < max_attempts
    now = datetime.now(UTC)
    values: dict[str, Any] = {"last_error": error[:2000], "locked_until": None}
    if retry:
        values |= {"status": "queued", "run_after": now + timedelta(seconds=backoff_seconds(attempts))}
    else:
        values |= {"status": "failed", "finished_at": now}
    await session.execute(update(Job).where(Job.id == job_id).values(**values))
    return retry


_REQUEUE_EXPIRED = text(
    """
    UPDATE jobs SET status = 'queued', locked_until = NULL, run_after = now(), updated_at = now(),
                    last_error = coalesce(last_error, 'worker lost while running (lease expired)')
    WHERE status = 'running' AND locked_until < now()
    RETURNING id
    """
)


async def requeue_expired(session: AsyncSession) -> int:
    """Put back jobs whose worker died mid-run (their lease ran out)."""
    return len((await session.execute(_REQUEUE_EXPIRED)).all())


async def backlog(session: AsyncSession) -> dict[tuple[str, str], int]:
    """Counts of jobs by (kind, status) for queued/running/failed, for metrics."""
    rows = await session.execute(
        text("SELECT kind, status, count(*) AS n FROM jobs WHERE status <> 'succeeded' GROUP BY kind, status")
    )
    return {(row.kind, row.status): int(row.n) for row in rows}
